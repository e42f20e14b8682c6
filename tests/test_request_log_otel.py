"""The request log as OpenTelemetry log records: one per start and end of every execution, joined to its trace
(sampled or not), built on the request log's worker thread, with the contract's names and attributes."""

from __future__ import annotations

import io
import json
import logging
import secrets
import threading
import time
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from nexus_otel import ExecutionRecord, Nexus, RecordProcessor
from nexus_otel.errors import PluginSetupError, RateLimitExceeded
from nexus_otel.logs import JsonFormatter, LogCapture
from nexus_otel.plugins import RequestLoggerPlugin
from nexus_otel.processors.request_log import RequestLogProcessor
from nexus_otel.telemetry import contract
from nexus_otel.testing import CapturedTelemetry

from .otlp_receivers import HTTPReceiver

WORKER = "nexus-otel-request-log"


class _Threads(LogRecordProcessor):
    """Notes the thread that emitted each log record, and can hold the emitting thread (a slow exporter)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.gate = threading.Event()
        self.gate.set()

    def on_emit(self, log_record: Any) -> None:
        self.names.append(threading.current_thread().name)
        self.gate.wait(10)

    def shutdown(self) -> None:
        self.gate.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class _Kept(RecordProcessor):
    """Keeps the execution records the app hands its record processors."""

    def __init__(self) -> None:
        self.records: list[ExecutionRecord] = []

    def on_start(self, record: ExecutionRecord) -> None:
        self.records.append(record)

    def on_end(self, record: ExecutionRecord) -> None:
        self.records.append(record)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class _Logs:
    """A real SDK LoggerProvider exporting to memory, and the request log's own ``logging`` logger."""

    def __init__(self, level: int = logging.INFO) -> None:
        self.exporter = InMemoryLogRecordExporter()
        self.threads = _Threads()
        self.provider = LoggerProvider(resource=Resource.create({"service.name": "shop"}))
        self.provider.add_log_record_processor(self.threads)
        self.provider.add_log_record_processor(SimpleLogRecordProcessor(self.exporter))
        self.logger = logging.getLogger(f"test.requests.{secrets.token_hex(4)}")
        self.logger.propagate = False
        self.logger.setLevel(level)
        self.lines = _Lines()
        self.logger.addHandler(self.lines)

    def processor(self, **kwargs: Any) -> RequestLogProcessor:
        otel_logger = self.provider.get_logger(contract.REQUEST_LOG_SCOPE, "1.0")
        return RequestLogProcessor(self.logger, otel_logger=otel_logger, **kwargs)

    def exported(self) -> list[ReadableLogRecord]:
        return list(self.exporter.get_finished_logs())


def _shop(capture: CapturedTelemetry):
    app = capture.app("shop")
    app.register("ok", lambda inputs: {"paid": inputs.get("amount")})

    def bad(inputs: dict) -> dict:
        raise ValueError("card declined")

    def busy(inputs: dict) -> dict:
        raise RateLimitExceeded("busy", limit=1, remaining=0, reset=time.time() + 60, retry_after=60)

    app.register("bad", bad)
    app.register("busy", busy)
    return app


def _run_every_outcome(logs: _Logs, **processor: Any):
    """Four executions through a real app (completed, failed, rejected, and completed under an unsampled parent)."""
    capture = CapturedTelemetry("shop")
    app = _shop(capture)
    kept = _Kept()
    request_log = logs.processor(**processor)
    app.records.add(kept)
    app.records.add(request_log)
    unsampled_trace = int(secrets.token_hex(16), 16)
    try:
        app.execute_workflow("ok", {"amount": 5, "api_key": "sk-live-12345"}, session_id="s1", channel="api")
        with pytest.raises(ValueError):
            app.execute_workflow("bad", {"amount": 7})
        with pytest.raises(RateLimitExceeded):
            app.execute_workflow("busy", {})
        parent = trace_api.SpanContext(unsampled_trace, int(secrets.token_hex(8), 16), is_remote=True,
                                       trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.DEFAULT))
        with trace_api.use_span(trace_api.NonRecordingSpan(parent)):
            app.execute_workflow("ok", {"amount": 9}, channel="cli")
        assert request_log.force_flush(5)
    finally:
        app.stop()
    return kept.records, capture, unsampled_trace


def _by_event(exported: list[ReadableLogRecord]) -> dict[str, list[ReadableLogRecord]]:
    out: dict[str, list[ReadableLogRecord]] = {}
    for item in exported:
        out.setdefault(item.log_record.event_name or "", []).append(item)
    return out


def test_every_execution_gives_a_started_and_an_ended_log_record_with_its_trace_and_times():
    """Each execution's start and end are log records carrying its trace and span ids, its times and status."""
    logs = _Logs()
    records, capture, unsampled_trace = _run_every_outcome(logs)
    exported = logs.exported()
    assert len(exported) == len(records) == 8
    assert {item.instrumentation_scope.name for item in exported} == {"nexus_otel.requests"}
    assert {item.resource.attributes["service.name"] for item in exported} == {"shop"}
    assert {k: len(v) for k, v in _by_event(exported).items()} == {
        "nexus.workflow.started": 4, "nexus.workflow.completed": 2, "nexus.workflow.failed": 1,
        "nexus.workflow.rejected": 1}
    # Record for record, in order: the execution's ids, sampled flag and times (the start's, or the end's).
    sampled_spans = {f"{s.context.span_id:016x}" for s in capture.spans if s.name.startswith("workflow ")}
    for record, item in zip(records, exported, strict=True):
        log = item.log_record
        assert log.trace_id == int(record.trace_id, 16) and log.span_id == int(record.span_id, 16)
        assert log.trace_flags.sampled is record.trace_sampled is (record.span_id in sampled_spans)
        when = record.started_at if record.status == "running" else record.ended_at
        assert log.timestamp == int(when * 1e9)
        assert log.observed_timestamp >= log.timestamp
        assert log.attributes[contract.WORKFLOW_ID] == record.workflow_id
    unsampled = [item.log_record for item in exported if item.log_record.trace_id == unsampled_trace]
    assert [log.event_name for log in unsampled] == ["nexus.workflow.started", "nexus.workflow.completed"]
    assert not any(log.trace_flags.sampled for log in unsampled)
    assert all(record.trace_id for record in records)


def test_log_records_carry_the_contracts_severity_body_and_attributes():
    """Severity INFO / WARN, body, workflow, channel, session, status, duration, cache, masked inputs, exceptions."""
    logs = _Logs()
    records, _, _ = _run_every_outcome(logs)
    by_event = _by_event(logs.exported())
    started = by_event["nexus.workflow.started"][0].log_record
    assert (started.severity_number, started.severity_text, started.body) == (
        SeverityNumber.INFO, "INFO", "workflow started")
    attributes = dict(started.attributes)
    inputs = json.loads(attributes.pop(contract.WORKFLOW_INPUTS))
    assert inputs == {"amount": 5, "api_key": "[REDACTED]"}
    assert attributes == {"nexus.workflow.name": "ok", "nexus.workflow.id": records[0].workflow_id,
                          "nexus.channel": "api", "session.id": "s1"}
    completed = by_event["nexus.workflow.completed"][0].log_record
    assert (completed.severity_number, completed.severity_text, completed.body) == (
        SeverityNumber.INFO, "INFO", "workflow completed")
    attributes = dict(completed.attributes)
    duration = attributes.pop(contract.WORKFLOW_DURATION_ATTR)
    assert isinstance(duration, float) and duration == records[1].duration
    assert attributes == {"nexus.workflow.name": "ok", "nexus.workflow.id": records[0].workflow_id,
                          "nexus.channel": "api", "session.id": "s1", "nexus.workflow.status": "completed"}
    failed = by_event["nexus.workflow.failed"][0].log_record
    assert (failed.severity_number, failed.severity_text, failed.body) == (
        SeverityNumber.WARN, "WARN", "workflow failed")
    assert failed.attributes["nexus.workflow.status"] == "failed"
    assert failed.attributes["error.type"] == failed.attributes["exception.type"] == "ValueError"
    assert failed.attributes["exception.message"] == "card declined"
    assert "session.id" not in failed.attributes and "nexus.workflow.inputs" not in failed.attributes
    rejected = by_event["nexus.workflow.rejected"][0].log_record
    assert (rejected.severity_number, rejected.severity_text, rejected.body) == (
        SeverityNumber.WARN, "WARN", "workflow rejected")
    assert rejected.attributes["exception.type"] == "nexus_otel.errors.RateLimitExceeded"
    assert rejected.attributes["exception.message"]
    assert "sk-live-12345" not in repr([item.to_json() for item in logs.exported()])


def test_inputs_left_out_when_the_request_log_leaves_them_out():
    """include_inputs=False: no nexus.workflow.inputs attribute on any record."""
    logs = _Logs()
    _run_every_outcome(logs, include_inputs=False)
    assert not [item for item in logs.exported() if contract.WORKFLOW_INPUTS in item.log_record.attributes]
    assert len(logs.exported()) == 8


def test_log_records_are_built_on_the_worker_thread_not_the_workflows():
    """The workflow's thread only queues: every emit call comes from the request log's worker thread."""
    logs = _Logs()
    _run_every_outcome(logs)
    assert len(logs.threads.names) == 8
    assert set(logs.threads.names) == {WORKER}


def test_logging_records_are_marked_and_still_written():
    """Each logging record says nexus_request_log (capture skips it); the JSON line does not show the mark."""
    logs = _Logs()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logs.logger.addHandler(handler)
    _run_every_outcome(logs)
    assert [r.getMessage() for r in logs.lines.records] == [
        "workflow started", "workflow completed", "workflow started", "workflow failed",
        "workflow started", "workflow rejected", "workflow started", "workflow completed"]
    assert all(getattr(r, "nexus_request_log", False) is True for r in logs.lines.records)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 8 and not [line for line in lines if "nexus_request_log" in line]
    assert [line["level"] for line in lines][2:4] == ["INFO", "WARNING"]


def test_no_logging_records_are_made_when_only_the_capture_handler_would_get_them(tmp_path):
    """With output=None and nothing but the logs signal's capture handler on the way (which leaves request-log
    lines out), the worker makes no ``logging`` records: the log records alone; a handler added later gets lines."""
    name = f"test.requests.{secrets.token_hex(4)}"  # no handler left on it by another test
    made: list[str] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name == name:
            made.append(record.getMessage())
        return record

    capture = CapturedTelemetry("shop", capture_logs=True)
    app = capture.app("shop")
    app.register("ok", lambda inputs: {"paid": inputs.get("amount")})
    plugin = RequestLoggerPlugin(output=None, logger=name)
    app.add_plugin(plugin)
    requests = logging.getLogger(name)
    level = requests.level
    requests.setLevel(logging.INFO)  # the lines are wanted at INFO: only the handler decides here
    root = logging.getLogger()
    others = list(root.handlers)  # pytest's own capturing handlers: an application without any
    logging.setLogRecordFactory(counting)
    late = _Lines()
    try:
        for handler in others:
            root.removeHandler(handler)
        app.start()
        assert root.handlers == [LogCapture.handler()]
        app.execute_workflow("ok", {"amount": 1})
        plugin.flush()
        assert made == [] and len(capture.logs_named(contract.LOG_WORKFLOW_COMPLETED)) == 1
        requests.addHandler(late)  # someone listens now: the lines are made again
        app.execute_workflow("ok", {"amount": 2})
        plugin.flush()
    finally:
        requests.removeHandler(late)
        requests.setLevel(level)
        logging.setLogRecordFactory(factory)
        app.stop()
        capture.shutdown()
        for handler in others:
            root.addHandler(handler)
    assert made == ["workflow started", "workflow completed"] == [r.getMessage() for r in late.records]
    assert len(capture.logs_named(contract.LOG_WORKFLOW_COMPLETED)) == 2


def test_one_level_rule_for_both_outputs():
    """Logger at WARNING: only the failed and rejected records, in both outputs; logger off: none at all."""
    logs = _Logs(logging.WARNING)
    _run_every_outcome(logs)
    assert sorted(item.log_record.event_name for item in logs.exported()) == [
        "nexus.workflow.failed", "nexus.workflow.rejected"]
    assert sorted(r.getMessage() for r in logs.lines.records) == ["workflow failed", "workflow rejected"]
    off = _Logs(logging.CRITICAL + 1)
    _run_every_outcome(off)
    assert off.exported() == [] and off.lines.records == []


def test_an_inherited_level_governs_the_lines_alone():
    """A request logger without a level of its own under a root at WARNING: every log record (the plugin's INFO),
    but only the failure and the rejection as logging lines."""
    logs = _Logs(logging.NOTSET)
    logs.logger.propagate = True
    parent = logs.logger.parent
    assert parent is not None
    before = parent.level
    parent.setLevel(logging.WARNING)
    try:
        _run_every_outcome(logs)
    finally:
        parent.setLevel(before)
    assert len(logs.exported()) == 8
    assert sorted(r.getMessage() for r in logs.lines.records) == ["workflow failed", "workflow rejected"]


def test_severity_follows_the_plugins_level():
    """Request log at DEBUG: start and completion DEBUG, failures WARN; at ERROR: every record ERROR."""
    logs = _Logs(logging.DEBUG)
    _run_every_outcome(logs, level=logging.DEBUG)
    texts = {item.log_record.event_name: item.log_record.severity_text for item in logs.exported()}
    assert texts == {"nexus.workflow.started": "DEBUG", "nexus.workflow.completed": "DEBUG",
                     "nexus.workflow.failed": "WARN", "nexus.workflow.rejected": "WARN"}
    loud = _Logs(logging.ERROR)
    _run_every_outcome(loud, level=logging.ERROR)
    assert {item.log_record.severity_number for item in loud.exported()} == {SeverityNumber.ERROR}
    assert len(loud.exported()) == 8


def test_a_slow_log_pipeline_holds_workflows_back_instead_of_dropping_records():
    """With the exporter stuck and room for 3, the 4th record waits; once it moves, all 10 arrive, none lost."""
    logs = _Logs()
    request_log = logs.processor(max_queued=3, linger=0).start()
    logs.threads.gate.clear()  # the log pipeline is stuck
    queued: list[int] = []
    now = time.time()

    def workflows() -> None:
        for i in range(10):
            request_log.on_end(ExecutionRecord(f"w{i}", f"{i:032x}", "completed", "api", None, now, now, 0.0,
                                               "ab" * 16, "cd" * 8, False))
            queued.append(i)

    caller = threading.Thread(target=workflows)
    caller.start()
    try:
        deadline = time.monotonic() + 5
        while len(queued) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(queued) == 3 and caller.is_alive()  # back-pressure, not a drop
    finally:
        logs.threads.gate.set()
        caller.join(10)
    assert request_log.force_flush(5)
    request_log.shutdown()
    assert sorted(item.log_record.attributes["nexus.workflow.name"] for item in logs.exported()) == [
        f"w{i}" for i in range(10)]


# -- through RequestLoggerPlugin and the app's logs signal -------------------------------------
@pytest.fixture
def slow_batches(monkeypatch):
    """Batch processors wait a minute between exports, however they read the setting: only a flush exports."""
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "60000")


def _otlp_app(tmp_path, endpoint: str, **environ: str) -> Nexus:
    """An app exporting logs over OTLP/HTTP to ``endpoint``, its batch processor waiting a minute unless flushed;
    traces unsampled (not one is kept), metrics not pushed."""
    return Nexus("shop", environ={
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "always_off", "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BLRP_SCHEDULE_DELAY": "60000", "NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), **environ})


def _request_log_records(receiver: HTTPReceiver) -> list[Any]:
    return [r for r in receiver.logs() if r.scope == "nexus_otel.requests"]


def test_plugin_sends_the_request_log_to_the_apps_otlp_logs_endpoint(tmp_path, slow_batches):
    """Over real OTLP/HTTP: 4 records with the executions' (unsampled) trace ids, once each, on flush."""
    with HTTPReceiver() as receiver:
        app = _otlp_app(tmp_path, receiver.endpoint)
        out = io.StringIO()
        app.register("ok", lambda inputs: {"paid": inputs["amount"]})
        app.register("bad", lambda inputs: 1 / 0)
        plugin = RequestLoggerPlugin("json", output=None)  # logging records propagate to the root logger
        lines = logging.StreamHandler(out)
        lines.setFormatter(JsonFormatter())
        requests = logging.getLogger("nexus_otel.requests")
        requests.addHandler(lines)
        requests.setLevel(logging.INFO)  # with output=None the level is the logging set-up's
        try:
            app.add_plugin(plugin)
            app.start()
            app.execute_workflow("ok", {"amount": 5, "password": "hunter2hunter2"}, session_id="s9")
            with pytest.raises(ZeroDivisionError):
                app.execute_workflow("bad", {})
            plugin.flush()  # the batch processor would wait a minute: the plugin's flush exports them
            assert receiver.wait_for(lambda: len(_request_log_records(receiver)) >= 4, timeout=0.5)
            logged = [json.loads(line) for line in out.getvalue().splitlines()]
        finally:
            requests.removeHandler(lines)
            requests.setLevel(logging.NOTSET)
            app.stop()
    assert app.telemetry.tracer_provider is not None and receiver.spans() == []  # no trace was sampled
    received = _request_log_records(receiver)
    # Once each: the root handler that captures logging records skipped the request log's own.
    assert [r.body for r in receiver.logs()].count("workflow started") == 2
    assert [r.event_name for r in received] == ["nexus.workflow.started", "nexus.workflow.completed",
                                                "nexus.workflow.started", "nexus.workflow.failed"]
    assert [r.trace_id for r in received] == [line["trace_id"] for line in logged]
    assert [r.span_id for r in received] == [line["span_id"] for line in logged]
    assert all(len(r.trace_id) == 32 and r.flags & 0x01 == 0 for r in received)  # joined, though unsampled
    started, _, _, failed = received
    assert started.resource["service.name"] == "shop" and started.attributes["session.id"] == "s9"
    assert json.loads(started.attributes["nexus.workflow.inputs"]) == {"amount": 5, "password": "[REDACTED]"}
    assert (failed.severity_text, failed.severity_number) == ("WARN", 13)
    assert failed.attributes["exception.type"] == failed.attributes["error.type"] == "ZeroDivisionError"
    assert failed.attributes["exception.message"] == "division by zero"
    assert "hunter2hunter2" not in repr(receiver.log_requests)


def test_export_logs_false_keeps_the_request_log_to_python_logging(tmp_path):
    """export_logs=False (keyword or config dict): the logging lines are written, no log record is exported."""
    for plugin in (RequestLoggerPlugin(output=io.StringIO(), export_logs=False),
                   RequestLoggerPlugin(output=io.StringIO(), config={"export_logs": False})):
        with HTTPReceiver() as receiver:
            app = _otlp_app(tmp_path, receiver.endpoint, OTEL_BLRP_SCHEDULE_DELAY="50")
            app.register("ok", lambda inputs: {})
            app.add_plugin(plugin)
            app.execute_workflow("ok", {})
            plugin.flush()
            app.telemetry.force_flush()
            app.stop()
            assert plugin.output.getvalue().count("workflow ") == 2
            assert _request_log_records(receiver) == []


def test_unregistering_the_plugin_exports_what_it_queued(tmp_path, slow_batches):
    """Teardown flushes the app's logger provider (the records arrive at once) without shutting it down."""
    with HTTPReceiver() as receiver:
        app = _otlp_app(tmp_path, receiver.endpoint)
        app.register("ok", lambda inputs: {})
        app.add_plugin(RequestLoggerPlugin(output=io.StringIO()))
        app.execute_workflow("ok", {})
        app.plugins.unregister("request_logger")
        try:
            assert receiver.wait_for(lambda: len(_request_log_records(receiver)) == 2, timeout=0.5)
            # The provider is the app's: it still exports (the next plugin's records arrive too).
            again = RequestLoggerPlugin(output=io.StringIO())
            app.add_plugin(again)
            app.execute_workflow("ok", {})
            again.flush()
            assert receiver.wait_for(lambda: len(_request_log_records(receiver)) == 4, timeout=0.5)
        finally:
            app.stop()


def test_bad_export_logs_fails_at_setup_naming_it():
    """export_logs must be True or False: the error names the setting and the value."""
    capture = CapturedTelemetry()
    with pytest.raises(PluginSetupError, match=r"RequestLoggerPlugin.export_logs='yes'.*True or False"):
        capture.app().add_plugin(RequestLoggerPlugin(output=io.StringIO(), export_logs="yes"))
