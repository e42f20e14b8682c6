"""W3C baggage carried onward: the listed keys on the workflow span, its metrics (if listed), records and
log records, and in webhook requests; unlisted baggage stops at the app; bounded and redacted."""

import asyncio
import io
import json
import sqlite3

import httpx
import psycopg
import pytest
from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_otel import Nexus
from nexus_otel.baggage import MAX_BYTES, MAX_MEMBERS, OTHER, BaggagePicker, MetricBaggage, header_value
from nexus_otel.errors import ConfigurationError
from nexus_otel.plugins import DatabasePlugin, RequestLoggerPlugin, WebhookPlugin
from nexus_otel.records.processor import RecordProcessor
from nexus_otel.redaction import MASK, Redactor
from nexus_otel.serving import BackgroundServer
from nexus_otel.telemetry.config import TelemetryConfig

from .ports import free_port
from .webhook_receiver import WebhookReceiver

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OLD_TABLE = """CREATE TABLE workflow_executions (
    workflow_id TEXT PRIMARY KEY, workflow_name TEXT NOT NULL, session_id TEXT, channel TEXT,
    started_at {ts} NOT NULL, completed_at {ts}, duration DOUBLE PRECISION, status TEXT NOT NULL,
    error TEXT, trace_id TEXT)"""


class Records(RecordProcessor):
    """Keeps every record it is given."""

    def __init__(self):
        self.started, self.ended = [], []

    def on_start(self, record):
        self.started.append(record)

    def on_end(self, record):
        self.ended.append(record)


def _served_app(tmp_path, **environ):
    """An app built from ``environ`` alone (its own providers: spans and logs to the local store),
    with in-memory copies of its spans and log records."""
    env = {"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), "OTEL_TRACES_EXPORTER": "local",
           "OTEL_LOGS_EXPORTER": "local", "OTEL_METRICS_EXPORTER": "none", **environ}
    app = Nexus("shop", environ=env)
    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    app.telemetry.add_span_processor(SimpleSpanProcessor(spans))
    app.telemetry.add_log_record_processor(SimpleLogRecordProcessor(logs))

    @app.workflow("order")
    def order(inputs):
        return {"ok": True}

    return app, spans, logs


def _post(url, headers):
    response = httpx.post(f"{url}/workflows/order", json={"n": 1}, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response


def test_request_baggage_reaches_span_audit_webhook_and_logs_and_unlisted_keys_stop(tmp_path):
    """baggage tenant=acme,secret=x with NEXUS_OTEL_BAGGAGE_KEYS=tenant: tenant everywhere, secret nowhere."""
    with WebhookReceiver() as receiver:
        app, spans, logs = _served_app(tmp_path, NEXUS_OTEL_BAGGAGE_KEYS="tenant")
        app.add_plugin(WebhookPlugin(receiver.url))
        app.add_plugin(DatabasePlugin())
        app.add_plugin(RequestLoggerPlugin("json", output=io.StringIO()))
        with BackgroundServer(app) as url:
            _post(url, {"traceparent": TRACEPARENT, "baggage": "tenant=acme,secret=x"})
            receiver.wait_for_count(1)
        app.stop()
        hooks = receiver.requests()

    workflow = [s for s in spans.get_finished_spans() if s.name == "workflow order"]
    assert len(workflow) == 1 and workflow[0].attributes["tenant"] == "acme"
    assert f"{workflow[0].context.trace_id:032x}" == TRACEPARENT[3:35]  # the caller's trace, continued
    assert hooks[0].json()["baggage"] == {"tenant": "acme"}
    assert hooks[0].headers["baggage"] == "tenant=acme"
    rows = sqlite3.connect(tmp_path / "data" / "audit.sqlite").execute(
        "SELECT baggage FROM workflow_executions").fetchall()
    assert [json.loads(r[0]) for r in rows] == [{"tenant": "acme"}]
    log_records = [d.log_record for d in logs.get_finished_logs()
                   if (d.log_record.event_name or "").startswith("nexus.workflow.")]
    assert len(log_records) == 2 and all(r.attributes["tenant"] == "acme" for r in log_records)

    everything = [json.dumps([dict(s.attributes), [dict(e.attributes) for e in s.events]], default=str)
                  for s in spans.get_finished_spans()]
    everything += [json.dumps(dict(r.attributes), default=str) + str(r.body) for r in
                   (d.log_record for d in logs.get_finished_logs())]
    everything += [h.body.decode() + json.dumps(dict(h.headers)) for h in hooks]
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".sqlite", ".jsonl"}, files  # the audit DB, outboxes, local stores
    everything += [p.read_bytes().decode("latin-1") for p in files]
    assert not [text for text in everything if "secret" in text]


def test_tracecontext_alone_reads_no_baggage(tmp_path):
    """OTEL_PROPAGATORS=tracecontext: the caller's trace is continued, its baggage is not read."""
    app, spans, _ = _served_app(tmp_path, NEXUS_OTEL_BAGGAGE_KEYS="tenant", OTEL_PROPAGATORS="tracecontext")
    records = Records()
    app.records.add(records)
    with BackgroundServer(app) as url:
        _post(url, {"traceparent": TRACEPARENT, "baggage": "tenant=acme"})
    app.stop()
    workflow = [s for s in spans.get_finished_spans() if s.name == "workflow order"][0]
    assert f"{workflow.context.trace_id:032x}" == TRACEPARENT[3:35]
    assert "tenant" not in workflow.attributes
    assert [r.baggage for r in records.ended] == [None]


def test_propagator_names_are_checked_and_none_reads_nothing():
    """An unknown OTEL_PROPAGATORS name fails at construction naming the installed ones; none reads nothing."""
    with pytest.raises(ConfigurationError) as caught:
        Nexus("x", environ={"OTEL_PROPAGATORS": "tracecontext,nosuch", "OTEL_TRACES_EXPORTER": "none"})
    message = str(caught.value)
    assert "OTEL_PROPAGATORS" in message and "nosuch" in message and "baggage, tracecontext" in message

    app = Nexus("x", environ={"OTEL_PROPAGATORS": "none", "OTEL_TRACES_EXPORTER": "none",
                              "OTEL_METRICS_EXPORTER": "none"})
    context = app.telemetry.propagator.extract({"traceparent": TRACEPARENT, "baggage": "tenant=acme"})
    assert baggage_api.get_all(context) == {} and not app.telemetry.propagator.fields
    carrier: dict[str, str] = {}
    app.telemetry.propagator.inject(carrier, baggage_api.set_baggage("tenant", "acme"))
    assert carrier == {}
    app.stop()


def _capture_app(capture, **environ):
    app = capture.app("shop") if not environ else Nexus(
        "shop", telemetry=capture.telemetry("shop", config=TelemetryConfig.from_env(environ)))

    @app.workflow("order")
    def order(inputs):
        return {"ok": True}

    return app


def _run_with(app, entries, workflow="order"):
    """Execute ``workflow`` as a Python caller whose context carries ``entries`` as baggage."""
    context = context_api.get_current()
    for key, value in entries.items():
        context = baggage_api.set_baggage(key, value, context)
    token = context_api.attach(context)
    try:
        return app.execute_workflow(workflow, {})
    finally:
        context_api.detach(token)


def _executions_lines(capture):
    return [line for line in capture.prometheus_text().splitlines()
            if line.startswith("nexus_workflow_executions_total{")]


def test_metric_keys_label_the_workflow_metrics_and_other_keys_do_not(capture):
    """Metric keys label executions and duration (absent ones left out); keys not listed for metrics never."""
    app = _capture_app(capture, NEXUS_OTEL_BAGGAGE_KEYS="tenant,user.id", NEXUS_OTEL_BAGGAGE_METRIC_KEYS="tenant")
    _run_with(app, {"tenant": "acme", "user.id": "42"})
    _run_with(app, {"user.id": "43"})
    text = capture.prometheus_text()
    lines = _executions_lines(capture)
    assert len(lines) == 2, lines
    assert sum('tenant="acme"' in line for line in lines) == 1
    assert 'tenant="acme"' in next(line for line in text.splitlines()
                                   if line.startswith("nexus_workflow_duration_seconds_count{"))
    assert "user_id" not in text and "43" not in "".join(lines)
    assert [s.attributes["user.id"] for s in capture.spans_named("workflow order")] == ["42", "43"]
    app.stop()


def test_baggage_keys_alone_leave_the_metrics_as_they_are(capture):
    """Baggage keys without metric keys: the span carries them, the metrics' series do not."""
    app = _capture_app(capture, NEXUS_OTEL_BAGGAGE_KEYS="tenant")
    _run_with(app, {"tenant": "acme"})
    assert capture.span("workflow order").attributes["tenant"] == "acme"
    lines = _executions_lines(capture)
    assert len(lines) == 1 and "tenant" not in lines[0]
    app.stop()


def test_metric_value_combinations_are_capped():
    """Past MAX_METRIC_COMBINATIONS distinct values, a new value is recorded as _OTHER; known ones stay."""
    metric = MetricBaggage(["tenant"])
    for i in range(1000):
        assert metric.values({"tenant": f"t{i}"}) == (f"t{i}",)
    assert metric.values({"tenant": "new"}) == (OTHER,)
    assert metric.values({"tenant": "t7"}) == ("t7",)
    assert metric.values({"other": "x"}) is None and metric.attributes((None,)) == {}


def test_w3c_bounds_keep_64_members_and_8192_bytes_in_the_listed_order():
    """More than 64 listed members, or more than 8,192 bytes: the later members are left out."""
    keys = [f"k{i}" for i in range(70)]
    many = BaggagePicker(keys, Redactor())
    context = context_api.Context()
    for key in reversed(keys):
        context = baggage_api.set_baggage(key, "v", context)
    picked = many.pick(context)
    assert list(picked) == keys[:MAX_MEMBERS]

    big = BaggagePicker(["a", "b", "c", "d"], Redactor(max_value_length=10_000))
    context = context_api.Context()
    for key in "abcd":
        context = baggage_api.set_baggage(key, key * 3000, context)
    picked = big.pick(context)
    assert list(picked) == ["a", "b"]  # c would pass 8,192 bytes; d too
    header = header_value(picked)
    assert len(header.encode()) <= MAX_BYTES and header_value(picked) == header_value(
        {k: k * 3000 for k in "abcd"})


def test_sensitive_keys_and_secret_values_are_masked(capture):
    """A listed key that names a secret is masked; a secret inside a value is masked; both everywhere."""
    app = _capture_app(capture, NEXUS_OTEL_BAGGAGE_KEYS="tenant,api_key")
    records = Records()
    app.records.add(records)
    _run_with(app, {"tenant": "postgres://ada:hunter2pass@db.example/x", "api_key": "k-123456"})
    span = capture.span("workflow order")
    assert span.attributes["api_key"] == MASK
    assert "hunter2pass" not in span.attributes["tenant"] and "db.example" in span.attributes["tenant"]
    for record in (*records.started, *records.ended):
        assert record.baggage == {"tenant": span.attributes["tenant"], "api_key": MASK}
    app.stop()


def test_python_callers_baggage_reaches_sync_and_async_workflows(capture):
    """A Python caller's own baggage context: on the span and in the start and end records, sync and async."""
    app = _capture_app(capture, NEXUS_OTEL_BAGGAGE_KEYS="tenant")
    records = Records()
    app.records.add(records)

    @app.workflow("later")
    async def later(inputs):
        return {"ok": True}

    async def run_async():
        token = context_api.attach(baggage_api.set_baggage("tenant", "globex"))
        try:
            await app.aexecute_workflow("later", {})
            await app.aexecute_workflow("order", {})  # a sync workflow, on a worker thread
        finally:
            context_api.detach(token)

    _run_with(app, {"tenant": "acme"})
    asyncio.run(run_async())
    app.execute_workflow("order", {})  # no baggage: nothing
    assert [s.attributes.get("tenant") for s in capture.spans if s.name.startswith("workflow ")] == [
        "acme", "globex", "globex", None]
    assert [r.baggage for r in records.started] == [r.baggage for r in records.ended] == [
        {"tenant": "acme"}, {"tenant": "globex"}, {"tenant": "globex"}, None]
    app.stop()


def test_baggage_is_in_the_records_with_telemetry_disabled():
    """OTEL_SDK_DISABLED=true: no spans, but the records still carry the listed baggage."""
    app = Nexus("off", environ={"OTEL_SDK_DISABLED": "true", "NEXUS_OTEL_BAGGAGE_KEYS": "tenant"})
    records = Records()
    app.records.add(records)

    @app.workflow("order")
    def order(inputs):
        return {"ok": True}

    _run_with(app, {"tenant": "acme", "secret": "x"})
    assert [r.baggage for r in (*records.started, *records.ended)] == [{"tenant": "acme"}] * 2
    app.stop()


def _old_table_gets_the_column(capture, tmp_path, dsn, connect, ts):
    with connect() as conn:
        conn.execute(OLD_TABLE.format(ts=ts))
    app = _capture_app(capture, NEXUS_OTEL_BAGGAGE_KEYS="tenant")
    app.add_plugin(DatabasePlugin(dsn, spool_path=str(tmp_path / "spool.sqlite")))
    _run_with(app, {"tenant": "acme"})
    app.stop()
    with connect() as conn:
        rows = conn.execute("SELECT workflow_name, baggage FROM workflow_executions").fetchall()
    assert [(name, json.loads(text)) for name, text in rows] == [("order", {"tenant": "acme"})]


def test_an_existing_sqlite_audit_table_gets_the_baggage_column(capture, tmp_path):
    """A SQLite audit table made before the baggage column: the column is added, rows carry baggage."""
    db = tmp_path / "audit.sqlite"
    _old_table_gets_the_column(capture, tmp_path, f"sqlite:///{db}", lambda: sqlite3.connect(db), "TEXT")


def test_an_existing_postgres_audit_table_gets_the_baggage_column(capture, tmp_path, postgres):
    """A PostgreSQL audit table made before the baggage column: the column is added, rows carry baggage."""
    dsn = postgres.dsn

    def connect():
        return psycopg.connect(dsn, autocommit=True)

    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS workflow_executions")
    _old_table_gets_the_column(capture, tmp_path, dsn, connect, "TIMESTAMPTZ")


def test_a_kailash_nexus_request_carries_its_baggage_the_same_way(tmp_path):
    """Kailash Nexus's HTTP API: the request's listed baggage reaches its execution's records; unlisted stops."""
    from .test_kailash import KailashNexus, NexusOtel, two_node  # imported there as Kailash Nexus wants

    plugin = NexusOtel(environ={"NEXUS_OTEL_BAGGAGE_KEYS": "tenant", "OTEL_TRACES_EXPORTER": "none",
                                "OTEL_METRICS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    records = Records()
    plugin.app.records.add(records)
    app = KailashNexus(api_port=free_port(), enable_durability=False)
    app.add_plugin(plugin)
    app.register("double_then_add", two_node())
    with BackgroundServer(app.fastapi_app) as url:
        response = httpx.post(f"{url}/workflows/double_then_add/execute", json={"inputs": {"x": 1}},
                              headers={"baggage": "tenant=acme,secret=x"}, timeout=30)
        assert response.status_code == 200, response.text
    plugin.app.stop()
    assert [r.baggage for r in (*records.started, *records.ended)] == [{"tenant": "acme"}] * 2


def test_settings_combine_across_the_app_and_its_variables_and_contract_names_are_refused() -> None:
    """Metric keys from the variable with baggage keys from the app start; a key naming a span attribute the
    contract or the conventions use (error.type, session.id, nexus.*) is a clear error; True is no ratio."""
    from nexus_otel import Nexus

    app = Nexus("x", baggage_keys=["tenant"], environ={"NEXUS_OTEL_BAGGAGE_METRIC_KEYS": "tenant"})
    assert app.telemetry.config.baggage_metric_keys == ("tenant",)
    for key in ("error.type", "session.id", "nexus.workflow.name", "enduser.id"):
        with pytest.raises(ConfigurationError, match="outside the names spans already use"):
            Nexus("x", baggage_keys=[key], environ={})
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_BAGGAGE_KEYS"):
        Nexus("x", environ={"NEXUS_OTEL_BAGGAGE_KEYS": "tenant,error.type"})
    with pytest.raises(ConfigurationError, match="workflow_sampling"):
        Nexus("x", workflow_sampling={"checkout": True}, environ={})
