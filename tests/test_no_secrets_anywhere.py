"""No exported span, log record, webhook payload or database row holds a secret or a huge input."""

import io
import json
import logging
import sqlite3

from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from nexus_otel.exporters.local import LocalSpanExporter
from nexus_otel.plugins import DatabasePlugin, RequestLoggerPlugin, WebhookPlugin

from .webhook_receiver import WebhookReceiver

SECRETS = ("hunter2-pass", "ak_live_0123456789", "Bearer eyJhbGciOiJIUzI1NiJ9.secret")
BIG = "Q" * 1_000_000


def test_secrets_and_huge_values_reach_no_sink(capture, tmp_path):
    """password, api_key, Authorization and a 1 MB string: absent from spans, logs, webhooks and rows."""
    log_out = io.StringIO()
    store = tmp_path / "spans"
    db = tmp_path / "audit.sqlite"
    with WebhookReceiver() as receiver:
        app = capture.app("vault")
        app.telemetry.add_span_processor(SimpleSpanProcessor(LocalSpanExporter(store)))
        app.add_plugin(RequestLoggerPlugin("json", output=log_out))
        app.add_plugin(WebhookPlugin(receiver.url, outbox_path=tmp_path / "outbox.sqlite",
                                     statuses=("completed", "failed")))
        app.add_plugin(DatabasePlugin(f"sqlite:///{db}", spool_path=str(tmp_path / "spool.sqlite")))

        @app.workflow("login")
        def login(inputs):
            logging.getLogger("app.login").warning("user %s logging in", inputs["user"])
            return {"ok": True}

        @app.workflow("fail")
        def fail(inputs):
            raise PermissionError("denied")

        inputs = {"user": "ada", "password": SECRETS[0], "api_key": SECRETS[1],
                  "Authorization": SECRETS[2], "notes": BIG}
        app.execute_workflow("login", inputs)
        try:
            app.execute_workflow("fail", inputs)
        except PermissionError:
            pass
        receiver.wait_for_count(2, timeout=10)
        app.stop()
        webhook_text = "".join(r.body.decode() + json.dumps(dict(r.headers)) for r in receiver.requests())

    span_text = json.dumps([
        {"name": s.name, "attributes": dict(s.attributes), "events": [dict(e.attributes) for e in s.events],
         "status": s.status.description} for s in capture.spans
    ], default=str)
    store_text = "".join(p.read_text() for p in store.glob("*.jsonl"))
    rows_text = json.dumps(sqlite3.connect(db).execute("SELECT * FROM workflow_executions").fetchall())
    logs = log_out.getvalue()

    sinks = {"spans": span_text, "local store": store_text, "logs": logs, "webhooks": webhook_text,
             "rows": rows_text}
    assert all(sinks.values()), {k: len(v) for k, v in sinks.items()}
    assert "workflow login" in span_text and "login" in rows_text and "login" in webhook_text
    assert '"inputs"' in logs and "[REDACTED]" in logs
    for name, text in sinks.items():
        for secret in SECRETS:
            assert secret not in text, (name, secret)
        assert "Q" * 5000 not in text, name
