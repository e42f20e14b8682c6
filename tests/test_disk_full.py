"""A full or read-only disk under the durable outbox: records fail closed, torn writes hurt no later line.

The promise is that an execution that returns has its records (webhook
payload, audit row) on disk. When the outbox cannot be written the app fails
closed: the execution raises ``RecordsUnavailableError`` (HTTP 503 with
``Retry-After``), ``/healthz`` says the outbox is unwritable, and once space
returns everything recovers by itself. The disk here is real: a small tmpfs
filled by a ballast file (we run as root; without the right to mount, these
tests skip, except under CI where they fail).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from nexus_otel import Nexus, RecordsUnavailableError, cli
from nexus_otel.errors import ConfigurationError, PluginSetupError
from nexus_otel.outbox import ALL, Outbox, OutboxWorker, journal
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin
from nexus_otel.serving import BackgroundServer

from . import small_disk as small_disk_tools
from .served import REPO, Served, cli_env
from .webhook_receiver import WebhookReceiver


def _mount_tmpfs(folder: Path, size_mb: int) -> None:
    """A tmpfs at ``folder``; skips (fails under CI) where this process may not mount one."""
    problem = small_disk_tools.mount(folder, size_mb)
    if problem is not None:
        reason = f"a small disk needs a tmpfs mount (root, or CAP_SYS_ADMIN): {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs, unmounted afterwards."""
    folder = tmp_path / "small-disk"
    _mount_tmpfs(folder, 8)
    try:
        yield folder
    finally:
        small_disk_tools.unmount(folder)


def _audit_sessions(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT session_id FROM workflow_executions")}


def _repeated_lines(stderr: str, seconds: float) -> dict[str, int]:
    """Log lines (numbers aside) written more often than once a second over ``seconds``."""
    kinds = Counter(re.sub(r"[0-9a-f]*[0-9][0-9a-f]*", "N", line) for line in stderr.splitlines() if line.strip())
    allowed = math.ceil(seconds) + 1
    return {kind: n for kind, n in kinds.items() if n > allowed}


def test_a_full_disk_fails_executions_closed_and_every_one_that_returned_has_its_records(small_disk, tmp_path):
    """Disk full mid-run: every 200 has its webhook and audit row after a restart, the rest got 503 + Retry-After."""
    audit = tmp_path / "audit.sqlite"  # the audit database lives elsewhere: only the outbox is on the small disk
    with WebhookReceiver() as receiver:
        env = cli_env(small_disk, TEST_WEBHOOK_URL=receiver.url, TEST_AUDIT_DSN=f"sqlite:///{audit}")
        app = Served("tests.apps.notify:app", env, REPO)
        began = time.monotonic()
        statuses: dict[str, int] = {}
        health_while_full: list[httpx.Response] = []
        with httpx.Client(base_url=app.url, timeout=10) as client:

            def ship(session: str) -> httpx.Response:
                response = client.post("/workflows/ship", json={"order": session}, headers={"X-Session-Id": session})
                statuses[session] = response.status_code
                if response.status_code == 503:
                    assert response.headers.get("retry-after", "").isdigit(), response.headers
                    body = response.json()
                    assert body["error"].startswith("records unavailable") and isinstance(body["ran"], bool), body
                return response

            try:
                for i in range(30):
                    assert ship(f"before-{i}").status_code == 200
                ballast = small_disk_tools.fill(small_disk)
                for i in range(150):
                    if ship(f"full-{i}").status_code == 503 and not health_while_full:
                        health_while_full.append(client.get("/healthz"))
                health_while_full.append(client.get("/healthz"))
                metrics_while_full = client.get("/metrics").text
                ballast.unlink()  # space returns: the app finds out by itself
                deadline = time.monotonic() + 10
                while client.get("/healthz").status_code != 200:
                    assert time.monotonic() < deadline, "/healthz did not recover within 10 s of space returning"
                    time.sleep(0.1)
                for i in range(30):
                    assert ship(f"after-{i}").status_code == 200
            finally:
                app.process.kill()  # no goodbye: what it returned for must already be on disk
                app.process.wait(10)
                seconds = time.monotonic() - began
                stderr = app.process.stderr.read() if app.process.stderr else ""
        assert set(statuses.values()) <= {200, 503}, Counter(statuses.values())
        refused = [s for s, code in statuses.items() if code == 503]
        assert refused, "the disk filled but every execution succeeded: nothing was tested"
        assert all(s.startswith("full-") for s in refused), refused
        for health in health_while_full:
            assert health.status_code == 503, health.text
            problem = health.json()["records"][0]
            assert problem["outbox"] == str(small_disk / "outbox.sqlite") and problem["writable"] is False, problem
        assert re.search(r'^nexus_records_outbox_unwritable\{[^}]*outbox="[^"]*outbox.sqlite"[^}]*\} 1(\.0)?$',
                         metrics_while_full, re.M), metrics_while_full
        refused_total = re.search(r'^nexus_records_unavailable_total\{[^}]*outcome="refused"[^}]*\} (\S+)$',
                                  metrics_while_full, re.M)
        assert refused_total and float(refused_total.group(1)) > 0, metrics_while_full
        repeated = _repeated_lines(stderr, seconds)
        assert not repeated, f"logged more than once a second over {seconds:.1f} s: {repeated}"

        returned = {s for s, code in statuses.items() if code == 200}
        restarted = Served("tests.apps.notify:app", env, REPO)  # the next start delivers what the first left
        try:
            receiver.wait_for(lambda reqs: returned <= {r.json()["session_id"] for r in reqs}, timeout=30)
            deadline = time.monotonic() + 30
            while not returned <= _audit_sessions(audit):
                assert time.monotonic() < deadline, f"audit rows missing: {sorted(returned - _audit_sessions(audit))}"
                time.sleep(0.1)
        finally:
            restarted.stop()
        recorded = {r.json()["session_id"] for r in receiver.requests()} | _audit_sessions(audit)
        assert not recorded & set(refused), "an execution answered 503 left records: it was neither refused nor failed"


def test_a_torn_write_leaves_the_next_put_whole_across_a_crash(tmp_path, caplog):
    """A put cut short (a real short write) raises and is cut back: the next good put survives a crash, unharmed."""
    path = tmp_path / "outbox.sqlite"
    code = """
import os, resource, signal, sys
from pathlib import Path
from nexus_otel import RecordsUnavailableError
from nexus_otel.outbox import journal
from nexus_otel.outbox import Outbox
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
box = Outbox(sys.argv[1])
box.enqueue([("first", "audit", {"n": 1})])
size = sum(os.path.getsize(Path(sys.argv[1]).parent / name) for name in journal.journals(Path(sys.argv[1])))
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 200, hard))  # room for part of the next line only
try:
    box.enqueue([("torn", "audit", {"pad": "x" * 2000})])
    print("written")
except RecordsUnavailableError as exc:
    print("raised:", type(exc.__cause__).__name__)
except OSError as exc:
    print("raised:", type(exc).__name__)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
box.enqueue([("good", "audit", {"n": 2})])
os._exit(0)  # a crash: the journal is left as it is
"""
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "raised: OSError", (done.stdout, "expected RecordsUnavailableError from OSError")
    with caplog.at_level(logging.ERROR, logger="nexus_otel.outbox"):
        taken = [m.message_id for m in Outbox(path).lease(10)]
    assert taken == ["first", "good"]
    assert not [r for r in caplog.records if "checksum" in r.getMessage() or "never finished" in r.getMessage()]
    assert journal.journals(path) == []


def test_a_close_that_cannot_commit_on_a_full_disk_keeps_every_message(small_disk, caplog):
    """close() whose COMMIT fails (disk full) keeps the journal and its messages: once space returns, all three go."""
    path = small_disk / "box" / "outbox.sqlite"
    box = Outbox(path)
    box.enqueue([("m1", "http://127.0.0.1:9/hook", {"n": 1}), ("m2", "http://127.0.0.1:9/hook", {"n": 2})])
    ballast = small_disk_tools.fill(small_disk)
    assert box.enqueue([("m3", "http://127.0.0.1:9/hook", {"n": 3})]) == 1, "the journal's last page takes a small put"
    with caplog.at_level(logging.WARNING, logger="nexus_otel.outbox"):
        box.close()
    assert "disk is full" in caplog.text, "the close was expected to fail on the full disk"
    assert journal.journals(path), "the journal went, though the close that made it unneeded never committed"
    assert box.counts()["pending"] == 3, "a failed close marked its messages settled in memory"
    ballast.unlink()
    box.close()  # again, now that there is room: what waits goes into the table
    taken = sorted(m.message_id for m in Outbox(path).lease(10))
    assert taken == ["m1", "m2", "m3"]


def test_fail_open_sinks_go_on_and_fail_closed_ones_refuse_until_space_returns(small_disk, tmp_path, caplog):
    """Disk full: "drop" sinks' executions return; "fail" ones are refused before they run, until space returns."""
    began = time.monotonic()
    with WebhookReceiver() as receiver, caplog.at_level(logging.WARNING):
        receiver.set_status(503)  # its retries cannot reach the full disk either: no busy loop, no flood of lines
        drop = Nexus("drop", environ={"NEXUS_OTEL_DATA_DIR": str(small_disk / "drop")})
        drop.add_plugin(WebhookPlugin(receiver.url, on_unavailable="drop"))
        fail = Nexus("fail", environ={"NEXUS_OTEL_DATA_DIR": str(small_disk / "fail")})
        fail.add_plugin(DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}"))
        calls: list[str] = []
        for app in (drop, fail):
            app.register("ship", lambda inputs, app=app: calls.append(app.name) or "shipped")
        try:
            for app in (drop, fail):
                assert app.execute_workflow("ship", {}) == "shipped"
            ballast = small_disk_tools.fill(small_disk)
            outcomes: list[str] = []

            def ship() -> str:
                try:
                    outcome = fail.execute_workflow("ship", {})
                except RecordsUnavailableError as exc:
                    assert "outbox.sqlite" in str(exc) and exc.retry_after > 0
                    outcome = "ran" if exc.ran else "refused"
                assert drop.execute_workflow("ship", {}) == "shipped", "a fail-open sink never fails an execution"
                outcomes.append(outcome)
                return outcome

            while ship() == "shipped":  # puts fit in the journal's last page for a while
                assert len(outcomes) < 200, "the disk is full but every put was written"
            assert outcomes[-1] == "ran", "the put that found the disk full fails its execution, which ran"
            assert [ship() for _ in range(20)] == ["refused"] * 20, "then executions are refused before they run"
            assert calls.count("fail") == 1 + len(outcomes) - 20, "a refused execution never ran"
            assert fail.records.unavailable()[0]["outbox"] == str(small_disk / "fail" / "outbox.sqlite")
            ballast.unlink()
            deadline = time.monotonic() + 5
            while True:
                try:
                    assert fail.execute_workflow("ship", {}) == "shipped"
                    break
                except RecordsUnavailableError:
                    assert time.monotonic() < deadline, "no recovery within 5 s of space returning"
                    time.sleep(0.05)
            assert fail.records.unavailable() == []
        finally:
            drop.stop(timeout=2)
            fail.stop(timeout=2)
    repeated = _repeated_lines("\n".join(r.getMessage() for r in caplog.records), time.monotonic() - began)
    assert not repeated, f"logged more than once a second: {repeated}"


def test_on_unavailable_takes_fail_or_drop_only():
    """A misspelt on_unavailable is a ConfigurationError naming the setting, at setup."""
    app = Nexus("bad")
    with pytest.raises(PluginSetupError, match="WebhookPlugin.on_unavailable"):
        app.add_plugin(WebhookPlugin("http://127.0.0.1:9/hook", on_unavailable="ignore"))
    with pytest.raises(PluginSetupError, match="DatabasePlugin.on_unavailable") as caught:
        app.add_plugin(DatabasePlugin("sqlite:///:memory:", on_unavailable=None))  # type: ignore[arg-type]
    assert isinstance(caught.value.__cause__, ConfigurationError)


def test_a_read_only_data_directory_is_named_as_such(tmp_path):
    """A read-only data directory: app setup and `webhooks status` name the read-only folder in one line."""
    data = tmp_path / "ro"
    _mount_tmpfs(data, 1)
    try:
        box = Outbox(data / "outbox.sqlite")
        box.enqueue([("m1", "http://127.0.0.1:9/hook", {"n": 1})])
        box.close()
        remounted = subprocess.run(["mount", "-o", "remount,ro", str(data)], capture_output=True, text=True)
        assert remounted.returncode == 0, remounted.stderr
        app = Nexus("ro", environ={"NEXUS_OTEL_DATA_DIR": str(data)})
        with pytest.raises(PluginSetupError) as caught:
            app.add_plugin(WebhookPlugin("http://127.0.0.1:9/hook"))
        assert f"{data} is read-only" in str(caught.value) and str(data / "outbox.sqlite") in str(caught.value)
        status = CliRunner().invoke(cli.main, ["webhooks", "status", "--data-dir", str(data)])
        assert status.exit_code == 1 and isinstance(status.exception, SystemExit), status.exception  # no traceback
        assert len(status.stderr.strip().splitlines()) == 1 and f"{data} is read-only" in status.stderr, status.stderr
    finally:
        small_disk_tools.unmount(data)


def test_the_stop_log_counts_only_what_this_process_leaves(tmp_path, caplog):
    """With another process on the outbox, "N messages left for the next start" counts only this process's."""
    path = tmp_path / "outbox.sqlite"
    earlier = Outbox(path)
    earlier.enqueue([(f"t{i}", "audit", {"n": i}) for i in range(5)])
    earlier.close()  # five rows in the table, for whoever runs
    other = subprocess.Popen(
        [sys.executable, "-c", "import sys; from nexus_otel.outbox import Outbox; o = Outbox(sys.argv[1]); "
         "o.enqueue([('theirs', 'audit', {})]); print('put', flush=True); sys.stdin.read()", str(path)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    mine = Outbox(path)
    try:
        assert other.stdout is not None and other.stdout.readline() == "put\n"
        mine.enqueue([("mine1", "audit", {}), ("mine2", "audit", {})])
        with caplog.at_level(logging.WARNING, logger="nexus_otel.outbox"):
            OutboxWorker(mine.view(ALL), lambda batch, deadline: []).stop(0)
        assert [r.getMessage().split(":")[1].split()[0] for r in caplog.records if "left in" in r.getMessage()] \
            == ["2"], caplog.text
    finally:
        other.communicate("", timeout=30)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nexus_otel.outbox"):
        OutboxWorker(mine.view(ALL), lambda batch, deadline: []).stop(0)
    left = [r.getMessage() for r in caplog.records if "left in" in r.getMessage()]
    # Alone now: the table's rows are this process's to leave too (five, and the one the other handed over as it
    # exited), with its own two.
    assert len(left) == 1 and ": 8 messages left in" in left[0], caplog.text
    mine.close()


def test_healthz_json_is_ok_while_the_outbox_is_writable(tmp_path):
    """/healthz says ok (200) with an outbox that takes writes: unhealthy is only for an unwritable one."""
    app = Nexus("healthy", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.add_plugin(WebhookPlugin("http://127.0.0.1:9/hook"))
    with BackgroundServer(app) as url:
        response = httpx.get(f"{url}/healthz", timeout=10)
    assert response.status_code == 200 and json.loads(response.text)["status"] == "ok"


def _log_outcomes(app: Nexus) -> dict[str, float]:
    """``nexus_telemetry_log_records_total{exporter="local"}`` by outcome, from the app's own /metrics text."""
    text = app.telemetry.prometheus_exposition()[0].decode()
    found = re.findall(r'nexus_telemetry_log_records_total\{[^}]*exporter="local"[^}]*outcome="(\w+)"[^}]*\} (\S+)',
                       text)
    return {outcome: float(value) for outcome, value in found}


def test_a_full_disk_under_the_local_log_store_costs_workflows_nothing_and_is_counted(small_disk, caplog):
    """The local log store on a full disk: every execution completes, the lost records are counted as failed (the
    store's own error lines are not captured back into it), and records are written again once space returns."""
    from nexus_otel.exporters.local_logs import read_logs
    from nexus_otel.plugins import RequestLoggerPlugin

    data = small_disk / "data"
    app = Nexus("full-logs", environ={"NEXUS_OTEL_DATA_DIR": str(data), "OTEL_TRACES_EXPORTER": "none",
                                      "OTEL_LOGS_EXPORTER": "local", "OTEL_BLRP_SCHEDULE_DELAY": "50"})
    plugin = RequestLoggerPlugin(output=None)
    app.add_plugin(plugin)
    shop = logging.getLogger("shop.full-disk")
    shop.setLevel(logging.INFO)
    app.register("ship", lambda inputs: shop.info("shipping %s", inputs["n"]) or inputs["n"])
    app.start()
    try:
        ballast = small_disk_tools.fill(small_disk)
        for n in range(50):
            assert app.execute_workflow("ship", {"n": n}) == n
        plugin.flush()
        app.telemetry.force_flush()
        full = _log_outcomes(app)
        errors = [r for r in caplog.records if r.name == "nexus_otel.exporters.local_logs"]
        ballast.unlink()
        for n in range(50, 60):
            app.execute_workflow("ship", {"n": n})
        plugin.flush()
        app.telemetry.force_flush()
        after = _log_outcomes(app)
    finally:
        app.stop()
    assert full["failed"] >= 150 and full.get("exported", 0) == 0, full  # 3 records an execution, none written
    assert 0 < len(errors) <= full["failed"], "one error line per failed batch at most"
    assert after["exported"] >= 30, after
    stored = [line.body for line in read_logs(data)]
    assert "shipping 59" in stored and "shipping 10" not in stored
    assert not [line for line in stored if "cannot write" in line], "the store's own errors went into the store"
