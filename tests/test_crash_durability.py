"""A process killed with SIGKILL right after its workflows return loses no record: a restart delivers each once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from nexus_otel import Nexus
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin

from .served import REPO, cli_env
from .webhook_receiver import WebhookReceiver

COUNT = 200


def _run_and_kill(tmp_path, url: str, mode: str, kill_after: float | None, kill_at_line: int | None) -> set[int]:
    """Run the crashing app; kill it at the chosen point; the executions that had returned."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.apps.crashing", str(tmp_path / "data"), url, str(COUNT), mode],
        cwd=REPO, env=cli_env(tmp_path / "data"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    returned: set[int] = set()
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("returned "):
            returned.add(int(line.split()[1]))
            if kill_at_line is not None and len(returned) == kill_at_line:
                proc.send_signal(signal.SIGKILL)
                break
        elif line.strip() == "done":
            if kill_after:
                time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    return returned


@pytest.mark.parametrize("mode, kill_after, kill_at_line", [
    ("self", None, None),  # SIGKILL 0 ms after the last execute_workflow returned
    ("wait", 0.0, None),  # as soon as the parent reads "done"
    ("wait", 0.05, None),
    ("wait", 0.1, None),
    ("wait", None, 120),  # mid-run, right after the 120th returned
], ids=["0ms-self", "0ms-parent", "50ms", "100ms", "mid-run"])
def test_sigkill_after_return_loses_no_record(tmp_path, mode, kill_after, kill_at_line):
    """Every execution that returned before SIGKILL is delivered after a restart, and none twice."""
    with WebhookReceiver(status=503) as receiver:  # nothing is delivered before the kill
        returned = _run_and_kill(tmp_path, receiver.url, mode, kill_after, kill_at_line)
        expected_returned = COUNT if kill_at_line is None else kill_at_line
        assert len(returned) >= expected_returned - 1 and (mode != "self" or len(returned) == COUNT - 1)
        if mode == "self":
            returned.add(COUNT - 1)  # it returned; the process died before it could print so
        receiver.set_status(200)
        restarted = Nexus("crashing", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"),
                                               "OTEL_TRACES_EXPORTER": "none"})
        webhook = WebhookPlugin(receiver.url, statuses=("completed", "failed"))
        restarted.add_plugin(webhook)
        restarted.add_plugin(DatabasePlugin())
        with restarted:
            wanted = {f"s{n}" for n in returned}
            receiver.wait_for(lambda reqs: wanted <= {r.json()["session_id"] for r in reqs if r.status == 200},
                              timeout=30)
            deadline = time.monotonic() + 10
            while webhook.stats().get("outbox_pending") and time.monotonic() < deadline:
                time.sleep(0.05)
    ok = [r for r in receiver.requests() if r.status == 200]
    ids = [r.headers["webhook-id"] for r in ok]
    assert len(ids) == len(set(ids)), "a payload was delivered twice"
    assert wanted <= {r.json()["session_id"] for r in ok}
    with sqlite3.connect(tmp_path / "data" / "audit.sqlite") as db:
        rows = db.execute("SELECT session_id FROM workflow_executions").fetchall()
    sessions = [r[0] for r in rows]
    assert len(sessions) == len(set(sessions)) and wanted <= set(sessions)
