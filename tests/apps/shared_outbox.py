"""A user's replica app on the shared outbox: webhooks and audit rows in one PostgreSQL database.

``NEXUS_OTEL_OUTBOX_URL`` names the database the outbox lives in (the product reads it);
``DatabasePlugin`` writes its ``workflow_executions`` rows to ``SHARED_AUDIT_DSN``, which
defaults to that same URL (so each row commits in its outbox entry's transaction).
``WebhookPlugin`` posts to ``SHARED_WEBHOOK_URL`` with a one-second timeout and small
backoffs, so a failed first attempt is retried within a fraction of a second.
"""

import os

from nexus_otel import Nexus
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin


def create_app():
    app = Nexus("replica")
    app.add_plugin(WebhookPlugin(os.environ["SHARED_WEBHOOK_URL"], timeout=1, backoff_base=0.05,
                                 backoff_max=0.2, max_attempts=1000))
    app.add_plugin(DatabasePlugin(os.environ.get("SHARED_AUDIT_DSN") or os.environ["NEXUS_OTEL_OUTBOX_URL"]))

    @app.workflow("ship")
    def ship(inputs):
        return {"shipped": inputs.get("order")}

    return app


app = create_app
