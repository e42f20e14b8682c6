"""A user's app whose ``wait`` workflow blocks until a gate file exists, across worker processes.

``GATE_FILE`` names the file (the test creates it to let every execution end); ``wait``
answers with the id of the process that ran it.
"""

import os
import time
from pathlib import Path

from nexus_otel import Nexus


def create_app():
    app = Nexus("gated")
    gate = Path(os.environ["GATE_FILE"])

    @app.workflow("wait")
    def wait(inputs):
        deadline = time.monotonic() + 30
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        return {"pid": os.getpid()}

    return app


app = create_app
