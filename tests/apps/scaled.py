"""A user's app served by several workers, its plugins chosen by the environment.

``TEST_WEBHOOK_URL`` adds ``WebhookPlugin``; ``TEST_AUDIT`` (any value) adds
``DatabasePlugin`` on its default SQLite file; ``LIMIT_STORAGE`` adds
``RateLimitPlugin(600, 10)`` per client address; ``MONITORING_PORT`` adds
``MonitoringPlugin`` serving Prometheus on that port too. ``work`` answers with the id of
the process that ran it; ``slow`` sleeps ``seconds`` first.
"""

import os
import time

from nexus_otel import Nexus
from nexus_otel.plugins import DatabasePlugin, MonitoringPlugin, RateLimitPlugin, WebhookPlugin


def create_app():
    app = Nexus("scaled")
    if os.environ.get("TEST_WEBHOOK_URL"):
        app.add_plugin(WebhookPlugin(os.environ["TEST_WEBHOOK_URL"], statuses=("completed", "failed"),
                                     backoff_base=0.05, backoff_max=0.2, max_attempts=1000))
    if os.environ.get("TEST_AUDIT"):
        app.add_plugin(DatabasePlugin())
    if os.environ.get("LIMIT_STORAGE"):
        app.add_plugin(RateLimitPlugin(600, 10, key="client", storage=os.environ["LIMIT_STORAGE"]))
    if os.environ.get("MONITORING_PORT"):
        app.add_plugin(MonitoringPlugin(port=int(os.environ["MONITORING_PORT"])))

    @app.workflow("work")
    def work(inputs):
        return {"pid": os.getpid()}

    @app.workflow("slow")
    def slow(inputs):
        time.sleep(float(inputs.get("seconds", 1)))
        return {"pid": os.getpid()}

    return app


app = create_app
