"""A user's app behind ``RateLimitPlugin`` keyed by API key, configured from the environment.

``LIMIT_STORAGE`` is the storage URI (``memory://`` or ``redis://127.0.0.1:PORT``);
``LIMIT_PER_MINUTE`` and ``LIMIT_BURST`` default to 600 and 10.
"""

import os

from nexus_otel import Nexus
from nexus_otel.plugins import RateLimitPlugin


def create_app():
    app = Nexus("limited")
    app.add_plugin(RateLimitPlugin(
        int(os.environ.get("LIMIT_PER_MINUTE", "600")), int(os.environ.get("LIMIT_BURST", "10")),
        key="api_key", storage=os.environ["LIMIT_STORAGE"],
    ))

    @app.workflow("work")
    def work(inputs):
        """Answers with the id of the process that ran it."""
        return {"pid": os.getpid()}

    return app


app = create_app
