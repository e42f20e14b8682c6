"""One failing execution has one error.type: the same value on every span, record, log record and metric."""

import sqlite3
import time

import httpx

from nexus_otel.plugins import DatabasePlugin, RequestLoggerPlugin, WebhookPlugin
from nexus_otel.records import RecordProcessor
from nexus_otel.serving import BackgroundServer
from nexus_otel.telemetry import contract

from .webhook_receiver import WebhookReceiver


class CardDeclined(Exception):
    """A workflow's own failure, defined outside builtins: its error.type is its qualified class name."""


class HookBroke(Exception):
    """A failing hook's own exception."""


class _Kept(RecordProcessor):
    def __init__(self):
        self.records = []

    def on_end(self, record):
        self.records.append(record)


def _wait(predicate, timeout=8.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def test_one_failing_execution_gives_one_error_type_everywhere(capture, tmp_path):
    """A workflow raising CardDeclined over HTTP: the same error.type on the workflow span, the HTTP server span and
    http.server.request.duration, the execution record, the request-log record, the webhook payload, the audit row;
    a hook that raises has its own exception's type in the same form, and the failed hook that ran fine has none."""
    expected = f"{__name__}.CardDeclined"
    app = capture.app("shop")
    kept = _Kept()
    app.records.add(kept)

    @app.workflow("pay")
    def pay(inputs):
        raise CardDeclined("card declined")

    @app.on_workflow_failed
    def broken_hook(event):
        raise HookBroke("hook broke")

    @app.on_workflow_failed
    def fine_hook(event):
        return None

    with WebhookReceiver() as receiver:
        app.add_plugin(WebhookPlugin(receiver.url, statuses=("failed",), outbox_path=str(tmp_path / "outbox.sqlite")))
        app.add_plugin(DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}",
                                      spool_path=str(tmp_path / "spool.sqlite")))
        app.add_plugin(RequestLoggerPlugin(output=None))
        with BackgroundServer(app) as url:
            answer = httpx.post(f"{url}/workflows/pay", json={}, timeout=10)
        assert receiver.wait_for(lambda requests: len(requests) == 1, timeout=8)
        payload = receiver.bodies_json()[0]
        app.stop()

    assert answer.status_code == 500 and answer.json()["error_type"] == expected
    workflow = capture.span("workflow pay")
    server = capture.span("POST /workflows/{name}")
    [record] = kept.records
    [log] = capture.logs_named(contract.LOG_WORKFLOW_FAILED)
    [point] = [p for p in capture.metric_points("http.server.request.duration") if p.attributes.get("error.type")]
    row = sqlite3.connect(tmp_path / "audit.sqlite").execute("SELECT error FROM workflow_executions").fetchone()
    assert {
        "workflow span": workflow.attributes["error.type"],
        "HTTP server span": server.attributes["error.type"],
        "http.server.request.duration": point.attributes["error.type"],
        "execution record": record.error_type,
        "request-log record": log.log_record.attributes["error.type"],
        "request-log exception.type": log.log_record.attributes["exception.type"],
        "webhook payload": payload["error_type"],
        "audit row": row[0].split(": ", 1)[0],
    } == dict.fromkeys([
        "workflow span", "HTTP server span", "http.server.request.duration", "execution record",
        "request-log record", "request-log exception.type", "webhook payload", "audit row"], expected)
    hook_types = [s.attributes.get("error.type") for s in capture.spans_named("hook workflow_failed app")]
    assert hook_types == [f"{__name__}.HookBroke", None]

