"""A user's app behind ``RateLimitPlugin``, configured from the environment.

``LIMIT_STORAGE`` is the storage URI (``memory://`` or ``redis://127.0.0.1:PORT``);
``LIMIT_PER_MINUTE`` and ``LIMIT_BURST`` default to 600 and 10. With
``LIMIT_API_KEYS`` (comma-separated keys) ``AuthPlugin`` verifies API keys first
and each verified key has a budget; without it the budget is the client address.
"""

import os

from nexus_otel import Nexus
from nexus_otel.plugins import AuthPlugin, RateLimitPlugin


def create_app():
    app = Nexus("limited")
    keys = [k for k in os.environ.get("LIMIT_API_KEYS", "").split(",") if k]
    if keys:
        app.add_plugin(AuthPlugin("api_key", api_keys=keys))
    app.add_plugin(RateLimitPlugin(
        int(os.environ.get("LIMIT_PER_MINUTE", "600")), int(os.environ.get("LIMIT_BURST", "10")),
        key="api_key" if keys else "principal", storage=os.environ["LIMIT_STORAGE"],
    ))

    @app.workflow("work")
    def work(inputs):
        """Answers with the id of the process that ran it."""
        return {"pid": os.getpid()}

    return app


app = create_app
