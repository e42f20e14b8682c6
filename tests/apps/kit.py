"""An app that exercises every metric the Grafana dashboards query, configured from the environment.

Workflows ``greet`` and ``slow`` succeed, ``lookup`` is cached (``CachingPlugin``), ``explode``
always fails; plugin ``flaky`` has a hook that raises on every third completed workflow.
``WebhookPlugin`` posts to ``KIT_WEBHOOK_URL`` with its outbox at ``KIT_OUTBOX`` (default: in the
data dir); ``DatabasePlugin`` writes to ``KIT_AUDIT_DSN`` (default: SQLite in the data dir).
"""

import itertools
import os
import time

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.plugins import CachingPlugin, DatabasePlugin, WebhookPlugin


class Flaky(NexusPlugin):
    """Hooks on every workflow event; the completed hook raises every third time."""

    name = "flaky"
    version = "1.0.0"

    def setup(self, nexus_app):
        calls = itertools.count(1)

        @nexus_app.on_workflow_started
        def started(event):
            pass

        @nexus_app.on_workflow_completed
        def completed(event):
            if next(calls) % 3 == 0:
                raise RuntimeError("flaky hook")

        @nexus_app.on_workflow_failed
        def failed(event):
            pass


def create_app():
    app = Nexus("kit")
    app.add_plugin(Flaky())
    app.add_plugin(CachingPlugin(ttl=600, workflows=["lookup"]))
    app.add_plugin(WebhookPlugin(
        os.environ["KIT_WEBHOOK_URL"], secret=os.environ.get("KIT_WEBHOOK_SECRET"),
        statuses=("completed", "failed"), outbox_path=os.environ.get("KIT_OUTBOX"),
        backoff_base=0.05, backoff_max=0.2,
    ))
    app.add_plugin(DatabasePlugin(os.environ.get("KIT_AUDIT_DSN")))

    @app.workflow("greet")
    def greet(inputs):
        return {"greeting": f"Hello, {inputs.get('name', 'world')}!"}

    @app.workflow("slow")
    def slow(inputs):
        time.sleep(float(inputs.get("seconds", 0.02)))
        return {"slept": True}

    @app.workflow("lookup")
    def lookup(inputs):
        return {"key": inputs.get("key"), "value": len(str(inputs.get("key")))}

    @app.workflow("explode")
    def explode(inputs):
        raise ValueError("always fails")

    return app


app = create_app
