"""The local log store: log records from the real SDK kept on disk, bounded, shared by processes, read by the CLI."""

from __future__ import annotations

import logging
import multiprocessing
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from opentelemetry._logs import SeverityNumber
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from nexus_otel.cli import main as cli
from nexus_otel.exporters.local import LocalSpanExporter
from nexus_otel.exporters.local_logs import LocalLogExporter, LogFollower, log_files, read_logs
from nexus_otel.traceview import LogFilter

from .served import cli_env

MS = 1_000_000
EVIL = "A\x1b[2J\x1b]0;owned\x07B\x9b31m"


class Store:
    """A data directory written by a real TracerProvider and LoggerProvider, as an app's local sinks write it."""

    def __init__(self, directory: Path, sampler=None, **limits) -> None:
        resource = Resource.create({"service.name": "shop"})
        self.directory = directory
        self.exporter = LocalLogExporter(directory, **limits)
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.exporter))
        self.tracer_provider = TracerProvider(resource=resource, **({"sampler": sampler} if sampler else {}))
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(LocalSpanExporter(directory)))
        self.tracer = self.tracer_provider.get_tracer("t")
        self.requests = self.logger_provider.get_logger("nexus_otel.requests")
        self.python_logger = logging.getLogger(f"app.{uuid.uuid4().hex[:8]}")
        self.python_logger.addHandler(LoggingHandler(logger_provider=self.logger_provider))
        self.python_logger.setLevel(logging.DEBUG)
        self.python_logger.propagate = False

    def request(self, body: str, workflow: str, severity=SeverityNumber.INFO, **attributes) -> None:
        """A request log record, as the request log writes one."""
        self.requests.emit(body=body, severity_number=severity, severity_text=severity.name,
                           event_name="nexus.workflow." + body.split()[-1],
                           attributes={"nexus.workflow.name": workflow, **attributes})

    def close(self) -> None:
        self.python_logger.handlers.clear()
        self.logger_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "data")
    yield s
    s.close()


def logs_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["logs", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def traces_cli(*args: str) -> list[str]:
    result = CliRunner().invoke(cli, ["traces", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_every_field_round_trips(store):
    """Time, severity, body (a mapping as JSON text), ids, event name, scope, service and attributes come back."""
    with store.tracer.start_as_current_span("workflow greet") as span:
        store.requests.emit(timestamp=1_700_000_000_123_456_789, body={"step": 1, "ok": True},
                            severity_number=SeverityNumber.WARN, severity_text="WARN",
                            event_name="nexus.workflow.started",
                            attributes={"nexus.workflow.name": "greet", "n": 3, "ratio": 0.5, "tags": ("a", "b")})
        store.python_logger.error("from logging %s", "here", extra={"order": 7})
    store.python_logger.info("outside")
    first, second, third = read_logs(store.directory)
    ctx = span.get_span_context()
    assert first.time_ns == 1_700_000_000_123_456_789
    assert (first.severity_number, first.severity_text) == (13, "WARN")
    assert first.body == '{"step":1,"ok":true}'
    assert (first.trace_id, first.span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert first.event_name == "nexus.workflow.started" and first.scope == "nexus_otel.requests"
    assert first.service == "shop"
    assert first.attributes == {"nexus.workflow.name": "greet", "n": 3, "ratio": 0.5, "tags": ["a", "b"]}
    assert second.body == "from logging here" and second.severity_number == 17 and second.level == "ERROR"
    assert second.scope == store.python_logger.name and second.attributes["order"] == 7
    assert second.event_name is None
    assert third.trace_id is None and third.span_id is None  # trace id 0: no trace
    assert store.exporter.exported == 3 and store.exporter.failed == 0


def test_a_batch_from_two_resources_keeps_each_service(tmp_path):
    """One batch holding records of two providers (one processor shared) reads back with each record's service."""
    from opentelemetry._logs import LogRecord
    from opentelemetry.sdk._logs import ReadWriteLogRecord

    exporter = LocalLogExporter(tmp_path)
    batch = [ReadWriteLogRecord(LogRecord(body=name), resource=Resource.create({"service.name": name}))
             for name in ("shop", "billing", "shop")]
    exporter.export(batch)
    assert [(line.body, line.service) for line in read_logs(tmp_path)] == [
        ("shop", "shop"), ("billing", "billing"), ("shop", "shop")]
    assert len((tmp_path / "logs.jsonl").read_text().splitlines()) == 1


def test_store_is_bounded_by_rotation(tmp_path):
    """Past max_bytes the file rotates; at most max_files files remain, the newest records kept."""
    s = Store(tmp_path, max_bytes=4000, max_files=3)
    for i in range(200):
        s.python_logger.info("record-%d %s", i, "x" * 200)
    s.close()
    files = log_files(tmp_path)
    assert len(files) == 3 and files[-1].name == "logs.jsonl"
    assert sum(f.stat().st_size for f in files) <= 3 * 4000
    bodies = [line.body.split()[0] for line in read_logs(tmp_path)]
    assert bodies[-1] == "record-199" and "record-0" not in bodies
    assert s.exporter.exported == 200


def test_damaged_line_is_skipped(store):
    """A truncated line (a crash mid-write) is skipped; the records around it still read."""
    store.python_logger.info("before")
    with open(store.directory / "logs.jsonl", "a") as f:
        f.write('{"v": 1, "resource": {}, "logs": [{"ts": 1, "b"\n')
    store.python_logger.info("after")
    assert [line.body for line in read_logs(store.directory)] == ["before", "after"]


def test_unwritable_store_is_counted_not_raised(tmp_path):
    """A store that cannot be written fails the export and counts the records; the app's logging call returns."""
    (tmp_path / "file").write_text("not a directory")
    s = Store(tmp_path / "file" / "sub")
    s.python_logger.warning("lost")
    assert s.exporter.failed == 1 and s.exporter.exported == 0
    s.close()


def _write_many(directory: str, tag: str, count: int) -> None:
    s = Store(Path(directory), max_bytes=2_000, max_files=10_000)
    for i in range(count):
        s.python_logger.info("%s-%d", tag, i)
    s.close()


def test_two_processes_appending_lose_nothing(tmp_path):
    """Two processes writing one store at once, through rotations: every record is there exactly once."""
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_write_many, args=(str(tmp_path), tag, 400)) for tag in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
        assert w.exitcode == 0
    bodies = [line.body for line in read_logs(tmp_path)]
    assert len(log_files(tmp_path)) > 2  # rotated while both wrote
    assert sorted(bodies) == sorted(f"{tag}-{i}" for tag in ("a", "b") for i in range(400))


@pytest.fixture
def two_workflows(store):
    """greet: a request record and the workflow's own logging line in its trace; pay: a failure; one line outside."""
    with store.tracer.start_as_current_span("workflow greet") as greet:
        store.request("workflow started", "greet")
        store.python_logger.debug("greeting %s", "ada")
    with store.tracer.start_as_current_span("workflow pay") as pay:
        store.request("workflow failed", "pay", SeverityNumber.ERROR, **{"exception.type": "ValueError"})
    store.python_logger.warning("disk almost full")
    return f"{greet.get_span_context().trace_id:032x}", f"{pay.get_span_context().trace_id:032x}"


def test_logs_lists_newest_last_with_limit(store, two_workflows):
    """`logs` prints a line per record (time, level, scope, body, trace prefix), newest last; --limit: the last N."""
    greet, pay = two_workflows
    code, out = logs_cli("--data-dir", str(store.directory))
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert "INFO" in lines[0] and "nexus_otel.requests" in lines[0]
    assert lines[0].endswith(f"workflow started  trace={greet[:8]}")
    assert "DEBUG" in lines[1] and "greeting ada" in lines[1]
    assert lines[3].endswith("disk almost full") and "trace=" not in lines[3]
    code, out = logs_cli("--data-dir", str(store.directory), "--limit", "2")
    assert out.splitlines() == lines[2:]


def test_logs_workflow_includes_the_lines_in_its_traces(store, two_workflows):
    """--workflow keeps the workflow's records and every record sharing their trace, nothing else."""
    greet, _ = two_workflows
    _, out = logs_cli("--data-dir", str(store.directory), "--workflow", "greet")
    lines = out.splitlines()
    assert len(lines) == 2 and "workflow started" in lines[0] and "greeting ada" in lines[1]
    assert all(f"trace={greet[:8]}" in line for line in lines)


def test_logs_level_and_trace_filters(store, two_workflows):
    """--level is a minimum (WARNING and WARN alike), --trace takes an id prefix; an unknown level names the option."""
    greet, pay = two_workflows
    _, out = logs_cli("--data-dir", str(store.directory), "--level", "warning")
    assert [line.split("  ")[-1] for line in out.splitlines()] == [f"trace={pay[:8]}", "disk almost full"]
    _, out = logs_cli("--data-dir", str(store.directory), "--level", "ERROR", "-a")
    assert "workflow failed" in out and "    exception.type = ValueError" in out and "disk" not in out
    _, out = logs_cli("--data-dir", str(store.directory), "--trace", greet[:6])
    assert len(out.splitlines()) == 2 and "pay" not in out
    code, out = logs_cli("--data-dir", str(store.directory), "--level", "LOUD")
    assert code == 2 and "--level" in out and "LOUD" in out


def test_logs_on_an_empty_store_says_how_to_get_some(tmp_path):
    """No store yet: one line saying how to produce logs, exit 0."""
    code, out = logs_cli("--data-dir", str(tmp_path / "none"))
    assert code == 0 and "no log records" in out and "OTEL_LOGS_EXPORTER" in out


def test_follow_waits_for_the_workflow_record_of_a_line_in_its_trace():
    """While following --workflow, a line written before its workflow's record is shown once that record comes."""
    from nexus_otel.exporters.logfile import LogLine

    def line(body, trace, **attributes):
        return LogLine(time_ns=len(body), severity_number=9, severity_text="INFO", body=body, trace_id=trace,
                       span_id=None, event_name=None, scope="s", service="x", attributes=attributes)

    selection = LogFilter(workflow="greet")
    user = line("user", "a" * 32)
    assert selection.follow([user, line("other", "b" * 32)], now=0.0) == []
    started = line("workflow started", "a" * 32, **{"nexus.workflow.name": "greet"})
    assert selection.follow([started], now=1.0) == [user, started]
    assert selection.follow([line("late", "b" * 32)], now=20.0) == []


def test_following_reads_across_rotations_once(tmp_path):
    """A follower sees every record written after it started once, in order, through several rotations."""
    s = Store(tmp_path, max_bytes=3000, max_files=50)
    s.python_logger.info("old")
    follower = LogFollower(tmp_path)
    seen = []
    for round_ in range(3):
        for i in range(15):
            s.python_logger.info("r%d-%d %s", round_, i, "x" * 200)
        if round_ == 0:  # the store rotated after the follower began: those records are new, not history
            assert [line.body for line in follower.history()] == ["old"]
        seen += [line.body.split()[0] for line in follower.new()]
    follower.close()
    s.close()
    assert len(log_files(tmp_path)) > 4
    assert seen == [f"r{r}-{i}" for r in range(3) for i in range(15)]


def _read_until(proc: subprocess.Popen, text: str, stream, timeout: float = 10) -> str:
    """What ``stream`` printed up to a line holding ``text`` (fails after ``timeout``)."""
    seen = ""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while text not in seen:
            assert time.monotonic() < deadline, f"no {text!r} in {seen!r}"
            if sel.select(0.2):
                chunk = os.read(stream.fileno(), 65536).decode()
                assert chunk, f"stream ended without {text!r}: {seen!r}"
                seen += chunk
    return seen


def test_follow_prints_new_records_and_ends_on_ctrl_c(store, tmp_path):
    """`logs --follow` shows a record written after it started; SIGINT ends it with exit status 0."""
    store.python_logger.info("already there")
    proc = subprocess.Popen([sys.executable, "-m", "nexus_otel.cli", "logs", "--follow", "--data-dir",
                             str(store.directory)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env(tmp_path), cwd=tmp_path)
    try:
        _read_until(proc, "following", proc.stderr)
        store.python_logger.error("written later %s", EVIL)
        out = _read_until(proc, "written later", proc.stdout)
        assert out.index("already there") < out.index("written later")
        assert "\x1b" not in out and "\\x1b[2J" in out
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_trace_tree_shows_log_lines_under_their_span(store):
    """`traces ID` puts each log line under the span it was written in, in time order; -a adds its attributes."""
    with store.tracer.start_as_current_span("workflow greet") as root:
        store.request("workflow started", "greet")
        with store.tracer.start_as_current_span("hook workflow_started audit"):
            store.python_logger.info("inside the hook", extra={"order": 7})
        store.python_logger.warning("after the hook %s", EVIL)
    trace_id = f"{root.get_span_context().trace_id:032x}"
    lines = traces_cli(trace_id[:10], "--data-dir", str(store.directory))
    assert lines[0].startswith(f"trace {trace_id}  (2 spans, 3 log records, service shop)")
    body = lines[2:]
    assert body[0].startswith("workflow greet")
    assert body[1].startswith("├─ log INFO workflow started")
    assert body[2].startswith("├─ hook workflow_started audit")
    assert body[3].startswith("│  └─ log INFO inside the hook")
    assert body[4].startswith("└─ log WARN after the hook A\\x1b[2J\\x1b]0;owned\\x07B\\x9b31m")
    offset_column = {line.index("+") for line in body}
    assert len(offset_column) == 1  # spans and logs share the offset column
    assert not any("\x1b" in line for line in lines)
    detailed = traces_cli(trace_id, "-a", "--data-dir", str(store.directory))
    hook_log = detailed.index(next(line for line in detailed if "inside the hook" in line))
    assert "│        order = 7" in detailed[hook_log + 1:hook_log + 6]


def test_unsampled_trace_is_shown_from_its_logs(tmp_path):
    """A trace whose spans were not sampled is still shown, from its log lines, saying no spans were kept."""
    s = Store(tmp_path, sampler=ALWAYS_OFF)
    with s.tracer.start_as_current_span("workflow greet") as span:
        s.request("workflow started", "greet")
        s.python_logger.info("unsampled but logged")
    s.close()
    trace_id = f"{span.get_span_context().trace_id:032x}"
    lines = traces_cli(trace_id[:8], "--data-dir", str(tmp_path))
    assert "no spans kept" in lines[0] and "2 log records" in lines[0]
    assert lines[2].startswith("log INFO workflow started") and lines[3].startswith("log INFO unsampled but logged")
    result = CliRunner().invoke(cli, ["logs", "--trace", trace_id, "--data-dir", str(tmp_path)])
    assert len(result.output.splitlines()) == 2
