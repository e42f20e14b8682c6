"""Records beside traces: every execution gives its audit row, webhook, request-log records and counts,
whatever the trace sampler decides or a caller's traceparent says, and under bursts."""

from __future__ import annotations

import io
import json
import secrets
import sqlite3
import threading

import httpx
import pytest

from nexus_otel import ExecutionRecord, Nexus, RecordProcessor
from nexus_otel.plugins import DatabasePlugin, MetricsPlugin, RequestLoggerPlugin, WebhookPlugin
from nexus_otel.serving import BackgroundServer
from nexus_otel.testing import CapturedTelemetry

from .webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


def _audit_rows(path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT workflow_id, status, trace_id FROM workflow_executions").fetchall()


def _plugins(tmp_path, url, **webhook):
    return (
        WebhookPlugin(url, outbox_path=tmp_path / "outbox.sqlite", statuses=("completed", "failed"), **webhook),
        DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}", spool_path=str(tmp_path / "spool.sqlite")),
        MetricsPlugin(),
    )


def _distinct_ids(receiver: WebhookReceiver) -> set[str]:
    return {r.headers["webhook-id"] for r in receiver.requests() if r.status == 200}


def test_unsampled_traceparent_over_http_still_gives_every_record(tmp_path, receiver):
    """10 HTTP requests, 5 with a caller traceparent whose flags are 00: 10 rows, 10 webhooks, 10 counted, 20 logs."""
    capture = CapturedTelemetry("records")
    app = capture.app("records")
    webhook, database, metrics = _plugins(tmp_path, receiver.url)
    log = io.StringIO()
    for plugin in (webhook, database, metrics, RequestLoggerPlugin("json", output=log, logger="records.http")):
        app.add_plugin(plugin)
    app.register("ship", lambda inputs: {"shipped": inputs["i"]})
    unsampled = set()
    with BackgroundServer(app) as url:
        for i in range(10):
            headers = {}
            if i % 2:
                trace_id = secrets.token_hex(16)
                unsampled.add(trace_id)
                headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-00"
            r = httpx.post(f"{url}/workflows/ship", json={"i": i}, headers=headers, timeout=10)
            assert r.status_code == 200, r.text
            # Durable before the response was sent: the payload and the row are already committed.
            assert webhook.exporter.counts["queued"] == i + 1
            assert database.exporter.counts["queued"] == i + 1
        receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == 10, timeout=20)
    # The sampler did drop the unsampled callers' traces: the records did not depend on them.
    kept = {f"{s.context.trace_id:032x}" for s in capture.spans_named("workflow ship")}
    assert len(kept) == 5 and not kept & unsampled
    rows = _audit_rows(tmp_path / "audit.sqlite")
    assert len(rows) == 10 and len({r[0] for r in rows}) == 10
    assert unsampled <= {r[2] for r in rows}  # rows name the caller's trace even when it was not kept
    assert len(_distinct_ids(receiver)) == 10
    assert metrics.get_metrics()["requests_total"] == 10
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert len(lines) == 20
    assert sorted(line["event"] for line in lines) == ["workflow.completed"] * 10 + ["workflow.started"] * 10


class _SampledFlags(RecordProcessor):
    """Keeps whether each execution's trace was sampled at its start (what the head sampler decided)."""

    def __init__(self) -> None:
        self.sampled: list[bool] = []

    def on_end(self, record: ExecutionRecord) -> None:
        self.sampled.append(record.trace_sampled)


def test_head_sampling_at_ten_percent_still_audits_every_execution(tmp_path, receiver):
    """OTEL_TRACES_SAMPLER=traceidratio 0.1: of 1,000 executions (100 failing) the sampler keeps 3-25 % of the
    traces, and every execution still gives its audit row, webhook and count."""
    app = Nexus("sampled", environ={
        "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1",
        "OTEL_TRACES_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path),
    })
    webhook, database, metrics = _plugins(tmp_path, receiver.url)
    for plugin in (webhook, database, metrics):
        app.add_plugin(plugin)
    flags = _SampledFlags()
    app.records.add(flags)

    @app.workflow("pay")
    def pay(inputs):
        if inputs["n"] % 10 == 0:
            raise RuntimeError("declined")
        return {"paid": True}

    runs = 1000
    with app:
        for n in range(runs):
            try:
                app.execute_workflow("pay", {"n": n})
            except RuntimeError:
                pass
        receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) == runs, timeout=60)
    # Random trace ids, no seed: 1,000 draws at 10 % keep 100 +- 9.5; 30..250 is more than 7 standard deviations.
    assert len(flags.sampled) == runs
    assert 30 <= sum(flags.sampled) <= 250, f"{sum(flags.sampled)} of {runs} traces sampled at a ratio of 0.1"
    rows = _audit_rows(tmp_path / "audit.sqlite")
    assert len(rows) == runs and sum(1 for r in rows if r[1] == "failed") == runs // 10
    assert len({r[0] for r in rows}) == runs
    assert len(_distinct_ids(receiver)) == runs
    statuses = [p["status"] for p in receiver.bodies_json()]
    assert statuses.count("failed") >= runs // 10 and statuses.count("completed") >= runs - runs // 10
    assert metrics.get_metrics()["requests_total"] == runs and metrics.get_metrics()["requests_failed"] == runs // 10


def test_a_burst_from_eight_threads_loses_no_record(tmp_path, receiver):
    """10,000 executions from 8 threads as fast as they go: 10,000 audit rows, 10,000 distinct webhook ids."""
    capture = CapturedTelemetry("burst")
    app = capture.app("burst")
    webhook, database, metrics = _plugins(tmp_path, receiver.url)
    for plugin in (webhook, database, metrics):
        app.add_plugin(plugin)
    app.register("tick", lambda inputs: inputs["n"])
    errors: list[BaseException] = []

    def worker(start: int) -> None:
        try:
            for n in range(start, 10_000, 8):
                app.execute_workflow("tick", {"n": n})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with app:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert webhook.exporter.counts["queued"] == 10_000 and database.exporter.counts["queued"] == 10_000
        receiver.wait_for(lambda reqs: len(reqs) >= 10_000, timeout=240)
    assert len(_distinct_ids(receiver)) == 10_000
    rows = _audit_rows(tmp_path / "audit.sqlite")
    assert len(rows) == 10_000 and len({r[0] for r in rows}) == 10_000
    assert metrics.get_metrics()["requests_total"] == 10_000
    assert webhook.stats()["failed"] == 0 and database.stats()["failed"] == 0


def test_a_plugin_authors_record_processor_sees_every_execution():
    """A user's RecordProcessor gets a start and an end record per execution, even with telemetry disabled."""

    class Collect(RecordProcessor):
        def __init__(self) -> None:
            self.records: list[ExecutionRecord] = []

        def on_start(self, record: ExecutionRecord) -> None:
            self.records.append(record)

        def on_end(self, record: ExecutionRecord) -> None:
            self.records.append(record)

    app = Nexus("off", environ={"OTEL_SDK_DISABLED": "true"})
    collect = Collect()
    app.records.add(collect)
    app.register("greet", lambda inputs: {"hi": inputs["name"]})
    app.register("fail", lambda inputs: 1 / 0)
    app.execute_workflow("greet", {"name": "ada", "password": "hunter2"}, session_id="s1")
    with pytest.raises(ZeroDivisionError):
        app.execute_workflow("fail", {})
    app.stop()
    assert [r.status for r in collect.records] == ["running", "completed", "running", "failed"]
    start, end = collect.records[0], collect.records[1]
    assert start.workflow_id == end.workflow_id and end.session_id == "s1" and end.duration >= 0
    assert "hunter2" not in (end.inputs or "") and "ada" in (end.inputs or "")
    failed = collect.records[3]
    assert failed.error_type == "ZeroDivisionError" and "division by zero" in failed.error


def test_a_failing_record_processor_never_fails_a_workflow(caplog):
    """A record processor that raises is logged and counted; the workflow and the other processors go on."""

    class Broken(RecordProcessor):
        def on_end(self, record: ExecutionRecord) -> None:
            raise RuntimeError("sink is broken")

    capture = CapturedTelemetry("broken")
    app = capture.app("broken")
    metrics = MetricsPlugin()
    app.records.add(Broken())
    app.add_plugin(metrics)
    app.register("greet", lambda inputs: "hi")
    assert [app.execute_workflow("greet", {}) for _ in range(3)] == ["hi"] * 3
    assert metrics.get_metrics()["requests_total"] == 3
    assert app.records.errors == {"Broken": 3}
    assert sum("sink is broken" in r.getMessage() for r in caplog.records) == 1  # logged once, not per record
    app.stop()


def test_adding_something_else_as_a_record_processor_names_what_is_wrong():
    """``app.records.add`` of an object that is not a RecordProcessor fails at once with a clear error."""
    from nexus_otel.errors import ConfigurationError

    app = CapturedTelemetry("bad").app("bad")
    with pytest.raises(ConfigurationError, match="RecordProcessor"):
        app.records.add(object())  # type: ignore[arg-type]
    app.stop()


def test_built_in_sinks_share_one_outbox_file_and_commit_once(tmp_path, receiver):
    """Webhooks and audit rows go to DATA_DIR/outbox.sqlite by default, one outbox, one commit per execution."""
    from nexus_otel.outbox import Outbox

    app = Nexus("shared", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_TRACES_EXPORTER": "none"})
    webhook, database = WebhookPlugin(receiver.url), DatabasePlugin()
    app.add_plugin(webhook)
    app.add_plugin(database)
    app.register("ship", lambda inputs: 1)
    shared = webhook.exporter.outbox.outbox
    assert shared is database.exporter.spool.outbox and shared.path == tmp_path / "outbox.sqlite"
    commits = []
    enqueue = Outbox.enqueue

    def counting_enqueue(self, items, **options):
        commits.append(len(items))
        return enqueue(self, items, **options)

    Outbox.enqueue = counting_enqueue  # type: ignore[method-assign]
    try:
        for _ in range(5):
            app.execute_workflow("ship", {})
    finally:
        Outbox.enqueue = enqueue  # type: ignore[method-assign]
    # Each execution: one put per sink, held, then one commit of both rows.
    assert commits.count(2) == 5
    receiver.wait_for(lambda reqs: len(reqs) == 5, timeout=20)
    app.stop()
    assert len(_audit_rows(tmp_path / "audit.sqlite")) == 5


def test_a_data_dir_from_before_keeps_its_own_outbox_files(tmp_path, receiver):
    """Messages waiting in an earlier version's webhook-outbox.sqlite are still delivered."""
    from nexus_otel.outbox import Outbox

    Outbox(tmp_path / "webhook-outbox.sqlite").put([("msg_old", receiver.url, {"type": "workflow.completed",
                                                                              "workflow": "old"})])
    app = Nexus("upgraded", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_TRACES_EXPORTER": "none"})
    app.add_plugin(WebhookPlugin(receiver.url))
    app.start()  # delivery runs from the app's start
    received = receiver.wait_for(lambda reqs: reqs, timeout=20)
    app.stop()
    assert received[0].headers["webhook-id"] == "msg_old" and received[0].json()["workflow"] == "old"


def test_the_sinks_work_without_their_plugins(tmp_path, receiver):
    """WebhookExporter and AuditExporter on an app's outbox, added as record processors, deliver every record."""
    from nexus_otel.exporters.audit import AuditExporter, open_store
    from nexus_otel.exporters.webhook import WebhookExporter

    app = CapturedTelemetry("bare").app("bare")
    outbox = app.records.outbox(tmp_path / "outbox.sqlite")
    hooks = WebhookExporter([receiver.url], outbox).start()
    audit = AuditExporter(open_store(f"sqlite:///{tmp_path / 'audit.sqlite'}"), outbox).start()
    app.records.add(hooks)
    app.records.add(audit)
    app.register("ship", lambda inputs: 1)
    for _ in range(3):
        app.execute_workflow("ship", {})
    receiver.wait_for(lambda reqs: len(reqs) == 3, timeout=20)
    app.stop()
    assert len(_distinct_ids(receiver)) == 3 and len(_audit_rows(tmp_path / "audit.sqlite")) == 3
