"""`nexus-otel top`: executions in flight and a line per workflow, from a served app's /executions and /metrics."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.cli import main as cli
from nexus_otel.events import WorkflowEvent
from nexus_otel.serving import BackgroundServer

from .ports import free_port
from .served import cli_env, nexus_otel

EVIL = "A\x1b[2J\x1b]0;owned\x07B\x9b31m\u202e[bold]C[/bold]"
ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

# (channel, status) -> cumulative buckets (le 0.1, 0.5, 1.0, 2.5, +Inf) per workflow, in the first and second read.
FIRST = {
    "checkout": {("api", "completed"): (50, 90, 100, 100, 100), ("cli", "failed"): (0, 0, 5, 5, 5)},
    "greet": {("api", "completed"): (10, 10, 10, 10, 10)},
}
SECOND = {
    # checkout, between the reads: 10 ended within 0.1 s, 8 more within 0.5 s, 2 (failed) within 1 s: 20 in all,
    # so its p95 (rank 19 of 20) is 0.5 + 0.5 * (19 - 18) / (20 - 18) = 0.75 s.
    "checkout": {("api", "completed"): (60, 108, 118, 118, 118), ("cli", "failed"): (0, 0, 7, 7, 7)},
    "greet": {("api", "completed"): (10, 10, 10, 10, 10)},  # none ended between the reads: rate 0, no p95
    # report's series are new in the second read: all 4 between the reads, p95 = 1 + 1.5 * 3.8 / 4 = 2.425 s.
    "report": {("cli", "completed"): (0, 0, 0, 4, 4)},
}
ACTIVE = {"checkout": 2, "greet": 0, "report": 1}
BOUNDS = ("0.1", "0.5", "1.0", "2.5", "+Inf")


def exposition(series: dict[str, dict[tuple[str, str], tuple[int, ...]]], active: dict[str, int]) -> str:
    """Prometheus text as a served app writes it: the duration histogram, the executions counter, the gauge."""
    out = ["# HELP nexus_workflow_duration_seconds Duration of workflow executions.",
           "# TYPE nexus_workflow_duration_seconds histogram"]
    for workflow, by_labels in series.items():
        for (channel, status), counts in by_labels.items():
            labels = f'channel="{channel}",service_name="shop",status="{status}",workflow="{workflow}"'
            out += [f'nexus_workflow_duration_seconds_bucket{{{labels},le="{le}"}} {n}.0'
                    for le, n in zip(BOUNDS, counts)]
            out += [f"nexus_workflow_duration_seconds_count{{{labels}}} {counts[-1]}.0",
                    f"nexus_workflow_duration_seconds_sum{{{labels}}} {counts[-1] * 0.2}"]
    out += ["# HELP nexus_workflow_executions_total Finished workflow executions.",
            "# TYPE nexus_workflow_executions_total counter"]
    for workflow, by_labels in series.items():
        for (channel, status), counts in by_labels.items():
            out.append(f'nexus_workflow_executions_total{{channel="{channel}",service_name="shop",'
                       f'status="{status}",workflow="{workflow}"}} {counts[-1]}.0')
    out += ["# HELP nexus_workflow_active Workflow executions in progress.", "# TYPE nexus_workflow_active gauge"]
    out += [f'nexus_workflow_active{{service_name="shop",workflow="{w}"}} {n}.0' for w, n in active.items()]
    return "\n".join(out) + "\n"


def execution(workflow: str, elapsed: float, **fields: object) -> dict[str, object]:
    """One entry of GET /executions."""
    entry: dict[str, object] = {"workflow": workflow, "workflow_id": f"wf-{elapsed}", "channel": "api",
                                "session_id": None, "started_at": "2026-12-07T08:00:00+00:00",
                                "elapsed_seconds": elapsed, "trace_id": None, "place": None, "plugin": None}
    entry.update(fields)
    return entry


RUNNING = [  # not in order: top sorts them
    execution("report", 3.2, place="node fetch_rows", channel="cli", trace_id="b" * 32),
    execution("checkout", 42.5, place="hook workflow_started audit", plugin="audit", trace_id=TRACE,
              session_id="s-1"),
    execution("checkout", 0.4, trace_id="c" * 32),
]


class FakeApp:
    """A served app's /executions and /metrics on loopback: each /metrics read answers the next body (the last
    one again once they run out); ``status`` answers every request with that code instead."""

    def __init__(self, executions: list[dict[str, object]], metrics: list[str], status: int = 200,
                 extra: dict[str, object] | None = None) -> None:
        self.executions, self.metrics, self.status = executions, list(metrics), status
        self.extra = extra or {}
        self.metric_reads = 0
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if app.status != 200:
                    body, kind = b"unavailable", "text/plain"
                elif self.path == "/executions":
                    body, kind = json.dumps({"executions": app.executions, **app.extra}).encode(), "application/json"
                elif self.path == "/metrics":
                    body = app.metrics[min(app.metric_reads, len(app.metrics) - 1)].encode()
                    app.metric_reads += 1
                    kind = "text/plain; version=0.0.4"
                else:
                    self.send_error(404)
                    return
                self.send_response(app.status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def served() -> Iterator[FakeApp]:
    app = FakeApp(RUNNING, [exposition(FIRST, ACTIVE), exposition(SECOND, ACTIVE)])
    yield app
    app.close()


def row(lines: list[str], text: str) -> str:
    return next(line for line in lines if text in line)


def test_once_prints_executions_longest_first_and_per_workflow_rates(served: FakeApp, tmp_path: Path) -> None:
    """--once: rows longest first, the slow one marked, per workflow in flight, rate and p95 between two reads."""
    result = nexus_otel("top", served.url, "--once", "--interval", "0.3", env=cli_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert served.metric_reads == 2
    assert "\x1b" not in result.stdout  # not a terminal: plain text
    window = float(re.search(r"rate and p95 over the last ([\d.]+) s", result.stdout).group(1))
    assert window >= 0.3

    rows = [line for line in lines if re.search(r"[0-9a-f]{32}", line)]
    assert [re.search(r"[0-9a-f]{32}", r).group(0) for r in rows] == [TRACE, "b" * 32, "c" * 32]
    slow = row(lines, TRACE)
    assert slow.startswith("!") and "42.5 s" in slow and "hook workflow_started audit" in slow
    assert slow.split()[1:] == ["checkout", "42.5", "s", "hook", "workflow_started", "audit", "audit", TRACE,
                                "api", "s-1"]
    assert not row(lines, "b" * 32).startswith("!") and "node fetch_rows" in row(lines, "b" * 32)
    assert row(lines, "c" * 32).split()[-3:] == ["c" * 32, "api", "-"]  # no session
    assert "3 in flight" in result.stdout

    def workflow_line(name: str) -> list[str]:
        return next(line.split() for line in lines if line.split()[:1] == [name] and "/s" in line)

    checkout, greet, report = workflow_line("checkout"), workflow_line("greet"), workflow_line("report")
    assert checkout[1] == "2" and checkout[-2:] == ["750.0", "ms"]
    assert float(checkout[2].removesuffix("/s")) == pytest.approx(20 / window, rel=0.01)
    assert greet[1:] == ["0", "0.00/s", "-"]
    assert report[1] == "1" and report[-2:] == ["2.4", "s"]
    assert float(report[2].removesuffix("/s")) == pytest.approx(4 / window, rel=0.01)


def top_once(url: str, *args: str) -> str:
    """What `nexus-otel top URL --once ARGS` prints, run in this process (not a terminal)."""
    result = CliRunner().invoke(cli, ["top", url, "--once", "--interval", "0.05", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_slow_threshold_is_the_option(served: FakeApp) -> None:
    """--slow 1 marks every execution running longer than one second, and only those."""
    lines = top_once(served.url, "--slow", "1").splitlines()
    assert [row(lines, t).startswith("!") for t in (TRACE, "b" * 32, "c" * 32)] == [True, True, False]


def test_unreachable_or_failing_url_exits_1_naming_it(tmp_path: Path) -> None:
    """A URL nothing listens on, or one answering 503, is one error line naming it, exit status 1, no traceback."""
    down = f"http://127.0.0.1:{free_port()}"
    result = nexus_otel("top", down, "--once", env=cli_env(tmp_path), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot reach {down}/metrics" in result.stderr and "Traceback" not in result.stderr
    failing = FakeApp([], [""], status=503)
    try:
        answered = CliRunner().invoke(cli, ["top", failing.url, "--once"])
    finally:
        failing.close()
    assert answered.exit_code == 1 and answered.exception is not None and answered.exc_info[0] is SystemExit
    assert f"Error: {failing.url}/metrics answered 503 Service Unavailable" in answered.output


def test_hostile_strings_are_shown_inert() -> None:
    """Escape sequences and markup in a workflow name, place, plugin and session are printed as text, not obeyed."""
    running = [execution(EVIL, 20.0, place=f"hook workflow_started {EVIL}", plugin=EVIL, session_id=EVIL,
                         trace_id=TRACE)]
    metrics = exposition({EVIL: {("api", "completed"): (1, 1, 1, 1, 1)}}, {EVIL: 1})
    app = FakeApp(running, [metrics])
    try:
        output = top_once(app.url)
    finally:
        app.close()
    assert ACTING.findall(output) == []
    shown = "A\\x1b[2J\\x1b]0;owned\\x07B\\x9b31m\\u202e[bold]C[/bold]"
    assert output.count(shown) == 5  # in the workflow line; the row's workflow, place, plugin and session


def test_a_server_with_workers_shows_each_executions_worker_and_the_workers_missing() -> None:
    """Under --workers: a WORKER column (the process running each), and a line naming workers that did not answer."""
    body = [{**entry, "worker": pid} for entry, pid in zip(RUNNING, (4101, 4102, 4101))]
    app = FakeApp(body, [exposition(SECOND, ACTIVE)], extra={"workers": [4101, 4102], "unanswered": [4103]})
    try:
        lines = top_once(app.url).splitlines()
    finally:
        app.close()
    assert row(lines, "TRACE ID").split()[-1] == "WORKER"
    assert [row(lines, t).split()[-1] for t in (TRACE, "b" * 32, "c" * 32)] == ["4102", "4101", "4101"]
    assert "workers 4103 did not answer in time: their executions are not listed" in lines


def test_without_workers_there_is_no_worker_column(served: FakeApp) -> None:
    """A single process lists no worker: the table has no WORKER column."""
    assert "WORKER" not in top_once(served.url)


def _read_until(fd: int, text: str, timeout: float = 8) -> str:
    """What the terminal showed up to ``text`` (fails after ``timeout``)."""
    seen = ""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} in {seen[-2000:]!r}"
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 65536).decode(errors="replace")
    return seen


def _wait_draining(proc: subprocess.Popen, fd: int, timeout: float = 8) -> int:
    """The exit status of ``proc``, reading what it writes to the terminal meanwhile so it never blocks."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "top did not exit"
        if select.select([fd], [], [], 0.1)[0]:
            os.read(fd, 65536)
    return proc.returncode


@pytest.mark.parametrize("ending", ["q", "app stops, then ctrl-c", "sigterm"])
def test_live_view_in_a_terminal_ends_on_q_or_ctrl_c_and_restores_it(served: FakeApp, tmp_path: Path,
                                                                     ending: str) -> None:
    """In a pseudo-terminal: a frame with a row is drawn in cbreak mode; q (or SIGINT) exits 0, SIGTERM 143, the
    mode restored each time. An app that stops answering is said so on the screen, and the view goes on."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 180, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([sys.executable, "-m", "nexus_otel.cli", "top", served.url, "--interval", "0.2"],
                            stdin=slave, stdout=slave, stderr=slave, env=cli_env(tmp_path, TERM="xterm-256color"),
                            cwd=tmp_path)
    try:
        screen = _read_until(master, TRACE)
        assert "hook workflow_started audit" in screen and "q quits" in screen
        assert termios.tcgetattr(slave)[3] & (termios.ICANON | termios.ECHO) == 0  # cbreak while it runs
        _read_until(master, "over the last")  # a second frame, with rates
        if ending == "app stops, then ctrl-c":
            served.close()
            _read_until(master, f"cannot reach {served.url}/executions")
            _read_until(master, "trying again")
            assert proc.poll() is None
        if ending == "app stops, then ctrl-c":
            proc.send_signal(signal.SIGINT)
        elif ending == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            os.write(master, b"q")
        assert _wait_draining(proc, master) == (128 + signal.SIGTERM if ending == "sigterm" else 0)
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


class Gate(NexusPlugin):
    """Holds executions of ``hooked`` in its ``workflow_started`` hook until released."""

    name = "gate"

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def setup(self, nexus_app: Nexus) -> None:
        def started(event: WorkflowEvent) -> None:
            if event.workflow_name == "hooked":
                self.release.wait(10)

        nexus_app.on_workflow_started(started)


def test_once_against_a_served_app_lists_its_executions_in_flight(tmp_path: Path) -> None:
    """A real app with one execution blocked in its own code and one in a plugin's hook: top lists both, longest
    first, with their place, plugin and trace id, and the workflow lines count them in flight."""
    release = threading.Event()
    app = Nexus("shop", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data")})
    app.add_plugin(Gate(release))
    app.register("hold", lambda inputs: release.wait(10) and {"held": True})
    app.register("hooked", lambda inputs: {"hooked": True})
    traces = {"hold": "1" * 32, "hooked": "2" * 32}
    with BackgroundServer(app) as url:
        def post(workflow: str) -> threading.Thread:
            headers = {"traceparent": f"00-{traces[workflow]}-{'3' * 16}-01"}
            thread = threading.Thread(target=httpx.post, args=(f"{url}/workflows/{workflow}",),
                                      kwargs={"json": {}, "headers": headers, "timeout": 10})
            thread.start()
            return thread

        def running(count: int) -> None:
            deadline = time.monotonic() + 5
            while len(app.running()) < count:
                assert time.monotonic() < deadline
                time.sleep(0.01)

        threads = [post("hold")]
        running(1)
        time.sleep(0.1)  # the first is the longest running
        threads.append(post("hooked"))
        running(2)
        try:
            output = top_once(url)
        finally:
            release.set()
            for thread in threads:
                thread.join(10)
    lines = output.splitlines()
    rows = [line.split() for line in lines if re.search(r"[0-9a-f]{32}", line)]
    assert [r[-3] for r in rows] == [traces["hold"], traces["hooked"]]
    assert rows[0][:1] == ["hold"] and rows[0][3:5] == ["-", "-"]  # in its own code
    assert rows[1][:1] == ["hooked"] and rows[1][3:7] == ["hook", "workflow_started", "gate", "gate"]
    in_flight = {line.split()[0]: line.split()[1] for line in lines if "/s" in line}
    assert in_flight == {"hold": "1", "hooked": "1"}
    assert "2 in flight" in output, output
