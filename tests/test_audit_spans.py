"""Audit batch spans: one CLIENT span per batch written, in a trace of its own, linked to its executions."""

import time

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from nexus_otel.exporters.audit import AuditExporter, open_store
from nexus_otel.outbox import Outbox
from nexus_otel.plugins import DatabasePlugin
from nexus_otel.records import RecordProcessor
from nexus_otel.telemetry.config import TelemetryConfig

from .ports import free_port

AUDIT_SCOPE = "nexus_otel.audit"


class _Kept(RecordProcessor):
    """Keeps every execution's end record, to hand them to an audit exporter all at once (one batch)."""

    def __init__(self):
        self.records = []

    def on_end(self, record):
        self.records.append(record)


def _records(capture, n, fail=False):
    app = capture.app("shop")
    kept = _Kept()
    app.records.add(kept)

    @app.workflow("order")
    def order(inputs):
        if fail:
            raise ValueError("out of stock")
        return inputs["n"]

    for i in range(n):
        try:
            app.execute_workflow("order", {"n": i})
        except ValueError:
            pass
    app.stop()
    return kept.records


def _wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    return predicate()


def _audit_spans(capture):
    return [s for s in capture.spans if s.instrumentation_scope.name == AUDIT_SCOPE]


def _write_one_batch(capture, tmp_path, dsn, records):
    """The span of ``records`` written as one batch (after a first row alone: the writer's probe of a
    database it has not reached yet), and that of the probe."""
    first, rest = records[0], records[1:]
    exporter = AuditExporter(open_store(dsn), Outbox(tmp_path / "spool.sqlite"),
                             tracer=capture.tracer_provider.get_tracer(AUDIT_SCOPE))
    exporter.on_end(first)
    exporter.start()
    assert _wait(lambda: exporter.counts["written"] == 1)
    for record in rest:  # queued within the writer's linger after a wake-up: one batch
        exporter.on_end(record)
    assert _wait(lambda: exporter.counts["written"] == len(records))
    exporter.shutdown(5)
    probe, *batches = _audit_spans(capture)
    assert len(probe.links) == 1
    return batches


def _check_batch(capture, span, records):
    workflow_spans = {s.context.span_id: s for s in capture.spans_named("workflow order")}
    assert span.kind is SpanKind.CLIENT and span.parent is None
    assert span.context.trace_id not in {s.context.trace_id for s in workflow_spans.values()}
    linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
    assert linked == [(int(r.trace_id, 16), int(r.span_id, 16)) for r in records]
    assert {sid for _, sid in linked} <= set(workflow_spans)
    for link in span.links:
        assert workflow_spans[link.context.span_id].context.trace_id == link.context.trace_id
    assert span.attributes["nexus.audit.executions"] == len(records)


def test_sqlite_batch_is_one_span_linked_to_each_execution(capture, tmp_path):
    """SQLite: a batch of 5 executions is one root CLIENT span "BATCH INSERT <table>" with 5 links to their spans."""
    records = _records(capture, 6)
    [span] = _write_one_batch(capture, tmp_path, f"sqlite:///{tmp_path / 'audit.sqlite'}", records)
    _check_batch(capture, span, records[1:])
    assert span.name == "BATCH INSERT workflow_executions"
    assert dict(span.attributes) == {
        "db.system.name": "sqlite", "db.collection.name": "workflow_executions",
        "db.operation.name": "BATCH INSERT", "db.operation.batch.size": 5, "nexus.audit.executions": 5,
    }
    assert span.status.status_code is StatusCode.UNSET


def test_postgres_batch_names_the_server(capture, tmp_path, postgres):
    """PostgreSQL: the batch span carries db.system.name postgresql, the database, server.address and port."""
    records = _records(capture, 4)
    [span] = _write_one_batch(capture, tmp_path, postgres.dsn, records)
    _check_batch(capture, span, records[1:])
    assert span.attributes["db.system.name"] == "postgresql"
    assert span.attributes["db.namespace"] == "nexus"
    assert (span.attributes["server.address"], span.attributes["server.port"]) == ("127.0.0.1", postgres.port)
    assert span.attributes["db.operation.batch.size"] == 3


def test_a_single_row_is_a_single_operation(capture, tmp_path):
    """One execution in a batch: "INSERT <table>", no db.operation.batch.size (the conventions' rule), one link."""
    records = _records(capture, 1)
    assert _write_one_batch(capture, tmp_path, f"sqlite:///{tmp_path / 'audit.sqlite'}", records) == []
    [span] = _audit_spans(capture)
    assert span.name == "INSERT workflow_executions"
    assert "db.operation.batch.size" not in span.attributes and len(span.links) == 1


def test_database_down_gives_an_error_span(capture, tmp_path):
    """A write to a PostgreSQL that is down: an ERROR span with error.type, still linked; the row waits."""
    records = _records(capture, 1)
    dsn = f"postgresql://nexus@127.0.0.1:{free_port()}/nexus"
    exporter = AuditExporter(open_store(dsn), Outbox(tmp_path / "spool.sqlite"),
                             tracer=capture.tracer_provider.get_tracer(AUDIT_SCOPE))
    for record in records:
        exporter.on_end(record)
    exporter.start()
    assert _wait(lambda: _audit_spans(capture))
    exporter.shutdown(0.5)
    span = _audit_spans(capture)[0]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "psycopg.OperationalError"
    assert span.status.description.startswith("psycopg.OperationalError: ")
    assert span.links[0].context.span_id == int(records[0].span_id, 16) and exporter.counts["written"] == 0


def test_links_stop_at_the_span_link_limit(capture, tmp_path, monkeypatch):
    """OTEL_SPAN_LINK_COUNT_LIMIT=3 and 5 executions: the first 3 linked, nexus.audit.executions says 5."""
    records = _records(capture, 6)
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "3")
    [span] = _write_one_batch(capture, tmp_path, f"sqlite:///{tmp_path / 'audit.sqlite'}", records)
    assert [link.context.span_id for link in span.links] == [int(r.span_id, 16) for r in records[1:4]]
    assert span.attributes["nexus.audit.executions"] == 5 and span.attributes["db.operation.batch.size"] == 5


def _plugin_app(capture, tmp_path, config):
    app = capture.app("shop") if config is None else _app_with(capture, config)
    app.register("order", lambda inputs: 1)
    plugin = DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}", spool_path=str(tmp_path / "spool.sqlite"))
    app.add_plugin(plugin)
    for _ in range(3):
        app.execute_workflow("order", {})
    assert _wait(lambda: plugin.stats().get("written") == 3)
    app.stop()
    return app


def _app_with(capture, config):
    from nexus_otel import Nexus

    return Nexus("shop", telemetry=capture.telemetry("shop", config=config))


def test_database_plugin_makes_them(capture, tmp_path):
    """DatabasePlugin (delivery spans on by default): its batches are spans linking the 3 executions."""
    _plugin_app(capture, tmp_path, None)
    spans = _audit_spans(capture)
    assert spans and sum(s.attributes["nexus.audit.executions"] for s in spans) == 3
    assert {link.context.span_id for s in spans for link in s.links} == {
        s.context.span_id for s in capture.spans_named("workflow order")}


@pytest.mark.parametrize("config", [TelemetryConfig.from_env({"NEXUS_OTEL_DELIVERY_SPANS": "false"}),
                                    TelemetryConfig().with_settings({"delivery_spans": False})],
                         ids=["environment", "app setting"])
def test_delivery_spans_off_gives_none(capture, tmp_path, config):
    """NEXUS_OTEL_DELIVERY_SPANS=false (or the app's delivery_spans=False): rows written, no audit span."""
    _plugin_app(capture, tmp_path, config)
    assert capture.spans_named("workflow order") and not _audit_spans(capture)


class _BrokenTracer:
    """A tracer whose spans cannot be made (a broken SDK or processor): the audit writes must not notice."""

    def start_span(self, *args, **kwargs):
        raise RuntimeError("tracer broken")


def test_a_broken_tracer_changes_no_write(capture, tmp_path, caplog):
    """Span code that raises is logged; every row is written once, none retried."""
    records = _records(capture, 3)
    exporter = AuditExporter(open_store(f"sqlite:///{tmp_path / 'audit.sqlite'}"), Outbox(tmp_path / "spool.sqlite"),
                             tracer=_BrokenTracer())
    for record in records:
        exporter.on_end(record)
    exporter.start()
    assert _wait(lambda: exporter.counts["written"] == 3)
    exporter.shutdown(5.0)
    assert exporter.counts.get("retried", 0) == 0
    assert any("audit batch spans failed" in r.getMessage() for r in caplog.records)
