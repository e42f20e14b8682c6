"""A user's app that sends webhooks and keeps an audit trail, configured from the environment."""

import os

from nexus_otel import Nexus
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin


def create_app():
    app = Nexus("notify")
    app.add_plugin(WebhookPlugin(
        os.environ["TEST_WEBHOOK_URL"], secret=os.environ.get("TEST_WEBHOOK_SECRET"),
        statuses=("completed", "failed"), backoff_base=0.05, backoff_max=0.2, max_attempts=1000,
    ))
    if os.environ.get("TEST_AUDIT_DSN"):
        app.add_plugin(DatabasePlugin(os.environ["TEST_AUDIT_DSN"]))

    @app.workflow("ship")
    def ship(inputs):
        return {"shipped": inputs.get("order")}

    return app


app = create_app
