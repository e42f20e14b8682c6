"""A one-workflow app whose workflow writes the time it ends to $TEST_MARKER."""

import os
import time

from nexus_otel import Nexus


def create_app():
    app = Nexus("marking")

    @app.workflow("mark")
    def mark(inputs):
        with open(os.environ["TEST_MARKER"], "w") as f:
            f.write(repr(time.time()))
        return {"marked": True}

    return app


app = create_app
