"""`nexus-otel webhooks status|dead-letters|replay` on the shared PostgreSQL outbox, and each sender's row there.

Real PostgreSQL (the session's server, a database of its own per test), real ``nexus-otel`` processes
where what matters is what a user's terminal shows, CliRunner elsewhere.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from click.testing import CliRunner

from nexus_otel import Nexus, cli
from nexus_otel.exporters.destination_snapshots import DestinationSnapshots, snapshot_body
from nexus_otel.exporters.destination_snapshots_shared import (
    RETRY_AFTER,
    TABLE,
    SharedDestinationSnapshots,
    shared_status_lines,
    snapshots_for,
)
from nexus_otel.exporters.destinations import DestinationState
from nexus_otel.outbox import WEBHOOK_SCOPE, Outbox, PostgresOutbox, destination_scope
from nexus_otel.plugins import WebhookPlugin

from .plain_receivers import StockReceiver
from .ports import free_port
from .served import cli_env, nexus_otel

PASSWORD = "s3cret-PW"
HOOK = "http://127.0.0.1:9/hook"
OTHER_HOOK = "http://127.0.0.1:9/other"


@pytest.fixture
def url(postgres) -> str:
    """A database of its own on the session's PostgreSQL, named by a URL with a password (trust auth ignores it)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(postgres.dsn_for(name))
    return parts._replace(netloc=f"{parts.username}:{PASSWORD}@{parts.hostname}:{parts.port}").geturl()


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli.main, list(args), env=env)
    assert PASSWORD not in result.output
    return result.exit_code, result.output.splitlines()


def _fill(url: str) -> tuple[PostgresOutbox, list[int]]:
    """Three webhook payloads and two audit messages queued; the first two webhook ones and an audit one made dead
    letters (the webhook commands must not see the audit ones)."""
    box = PostgresOutbox(url)
    box.enqueue([("a0", "audit", {"row": 0})] + [(f"m{i}", HOOK, {"workflow": f"order{i}"}) for i in range(3)]
                + [("a1", "audit", {"row": 1})])
    (audit,) = box.lease(1, scope=destination_scope("audit"))
    box.dead_letter(audit.handle, "refused")
    leased = box.lease(2, scope=WEBHOOK_SCOPE)
    for message in leased:
        box.dead_letter(message.handle, f"HTTP 404 from http://hooks:{PASSWORD}@example/in")
    return box, sorted(int(str(m.handle)) for m in leased)


def _rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT sender FROM {TABLE}").fetchall()


# --- status, dead letters, replay ---------------------------------------------------------------------

def test_status_counts_the_webhook_scope_and_the_oldest_pending_age(url: str) -> None:
    """`status --outbox URL`: pending and dead of the webhook messages only (not the audit one), the oldest's age."""
    box, _ = _fill(url)
    time.sleep(0.2)
    code, lines = _invoke("webhooks", "status", "--outbox", url)
    assert code == 0, lines
    (first,) = lines
    match = re.fullmatch(r"pending 1  dead 2  oldest (\d+\.\d) s", first)
    assert match and float(match.group(1)) >= 0.2, first
    box.close()


def test_dead_letters_lists_and_replay_by_id_then_all_requeues_them(url: str) -> None:
    """`dead-letters` lists both with their workflow and masked error; `replay ID` moves one, `--all` the other."""
    box, dead = _fill(url)
    code, lines = _invoke("webhooks", "dead-letters", "--outbox", url)
    assert code == 0 and len(lines) == 2, lines
    assert [line.split()[0] for line in lines] == [str(i) for i in dead]
    assert "order0" in lines[0] and "attempts=1" in lines[0] and "HTTP 404" in lines[0]
    assert _invoke("webhooks", "replay", str(dead[0]), "--outbox", url) == (0, ["queued 1 for delivery"])
    assert box.counts(WEBHOOK_SCOPE) == {"pending": 2, "dead": 1}
    assert _invoke("webhooks", "replay", "--all", "--outbox", url) == (0, ["queued 1 for delivery"])
    assert box.counts(WEBHOOK_SCOPE) == {"pending": 3, "dead": 0}
    assert box.counts() == {"pending": 4, "dead": 1}  # the audit messages untouched throughout
    assert _invoke("webhooks", "dead-letters", "--outbox", url) == (0, ["no dead letters"])
    box.close()


def test_the_environments_outbox_url_is_the_default(url: str, tmp_path: Path) -> None:
    """Without --outbox, NEXUS_OTEL_OUTBOX_URL names the outbox, in a real process; no local outbox is made."""
    box, _ = _fill(url)
    env = cli_env(tmp_path / "data", NEXUS_OTEL_OUTBOX_URL=url)
    status = nexus_otel("webhooks", "status", env=env, cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.startswith("pending 1  dead 2  oldest "), status
    replayed = nexus_otel("webhooks", "replay", "--all", env=env, cwd=tmp_path)
    assert replayed.stdout.strip() == "queued 2 for delivery", replayed
    assert box.counts(WEBHOOK_SCOPE) == {"pending": 3, "dead": 0}
    assert PASSWORD not in status.stdout + status.stderr + replayed.stdout + replayed.stderr
    assert sorted(os.listdir(tmp_path)) == [], "the command made something in the working directory"
    box.close()


def test_an_unreachable_database_is_one_line_naming_it_without_its_password(tmp_path: Path) -> None:
    """No server at the URL: exit 1 and one line on stderr naming the URL, password masked, no traceback."""
    port = free_port()
    bad = f"postgresql://nexus:{PASSWORD}@127.0.0.1:{port}/nexus"
    expected = f"Error: cannot reach the shared outbox at postgresql://nexus:***@127.0.0.1:{port}/nexus: "
    done = nexus_otel("webhooks", "status", "--outbox", bad, env=cli_env(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == "", done
    (line,) = done.stderr.splitlines()  # a real process: no log line from the outbox beside it
    assert line.startswith(expected) and PASSWORD not in done.stderr
    for command in (["dead-letters"], ["replay", "--all"]):
        result = CliRunner().invoke(cli.main, ["webhooks", *command, "--outbox", bad])
        assert result.exit_code == 1 and result.stdout == "", result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith(expected) and PASSWORD not in result.output


def test_a_database_that_refuses_the_read_is_one_line_too(url: str) -> None:
    """Reachable but refusing (a table of the outbox's name that is not the outbox): one line per command, no
    traceback, the password masked."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE nexus_otel_outbox (id INTEGER)")
    for command, doing in ((["status"], "read"), (["dead-letters"], "read"),
                           (["replay", "--all"], "replay dead letters in")):
        result = CliRunner().invoke(cli.main, ["webhooks", *command, "--outbox", url])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"Error: cannot {doing} the shared outbox at postgresql://nexus:***@"), line
        assert "does not exist" in line and PASSWORD not in result.output


def test_a_malformed_url_from_the_environment_is_one_line_without_any_of_its_password(tmp_path: Path) -> None:
    """An unescaped "@" in the password: the driver quotes its tail as a host; the line masks that too."""
    bad = f"postgresql://nexus:s3cr@t-{PASSWORD}@127.0.0.1:{free_port()}/nexus"
    env = cli_env(tmp_path / "data", NEXUS_OTEL_OUTBOX_URL=bad)
    done = nexus_otel("webhooks", "status", env=env, cwd=tmp_path)
    assert done.returncode == 1, done
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: cannot reach the shared outbox at postgresql://nexus:***@127.0.0.1:"), line
    assert "***@127.0.0.1" in line.split(": ", 2)[2], line  # the driver's words, the password's tail masked
    assert PASSWORD not in done.stderr + done.stdout and "s3cr" not in done.stderr


# --- each sender's row -----------------------------------------------------------------------------------

def test_the_publisher_is_picked_by_the_outbox(url: str, tmp_path: Path) -> None:
    """A shared outbox (or a view of it) gets the database publisher; a local outbox the file one beside it."""
    box = PostgresOutbox(url)
    assert isinstance(snapshots_for(box), SharedDestinationSnapshots)
    assert isinstance(snapshots_for(box.view(WEBHOOK_SCOPE)), SharedDestinationSnapshots)
    local = snapshots_for(Outbox(tmp_path / "outbox.sqlite").view(WEBHOOK_SCOPE))
    assert isinstance(local, DestinationSnapshots) and local.directory == tmp_path / "outbox.sqlite.destinations"
    box.close()


def test_a_running_app_on_the_shared_outbox_publishes_its_row_and_a_clean_stop_removes_it(url: str,
                                                                                         tmp_path: Path) -> None:
    """The sender's destinations show in `status` from its row; after app.stop() the row is gone; no folder made."""
    with StockReceiver() as receiver:
        app = Nexus("t", outbox=url, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"),
                                               "OTEL_SDK_DISABLED": "true"})
        app.register("greet", lambda params: {"hi": 1})
        app.add_plugin(WebhookPlugin(webhook_url=receiver.url, secret="whsec_" + "A" * 32))
        app.start()
        try:
            app.execute_workflow("greet", {})
            assert receiver.wait_for(1, 10)
            deadline = time.monotonic() + 10
            while not (lines := _invoke("webhooks", "status", "--outbox", url)[1][1:]) and time.monotonic() < deadline:
                time.sleep(0.1)
            (line,) = lines
            assert line.startswith(f"{receiver.url}  limit ") and f"[pid {os.getpid()} on " in line, line
            assert "not seen" not in line and "ended" not in line
            assert len(_rows(url)) == 1
        finally:
            app.stop()
    assert _rows(url) == []
    assert _invoke("webhooks", "status", "--outbox", url) == (0, ["pending 0  dead 0"])
    assert Path.cwd() == tmp_path and os.listdir(tmp_path) == [], "a folder was made in the working directory"


def test_a_row_not_written_lately_reads_as_possibly_ended_and_an_hour_old_one_is_removed(url: str) -> None:
    """Another pod's sender cannot be checked: unseen for 30 s it shows "(ended?)"; a row over an hour old goes."""
    mine = SharedDestinationSnapshots(url, interval=0.0)
    assert mine.publish([DestinationState(HOOK, 2, 8, 0)])  # makes the table
    body = snapshot_body([DestinationState(OTHER_HOOK, 3, 16, 1)]).decode()
    with psycopg.connect(url, autocommit=True) as conn:
        for sender, age in (("elsewhere/7/1", 30), ("gone/8/1", 7200)):
            conn.execute(f"INSERT INTO {TABLE} VALUES (%s, extract(epoch from clock_timestamp()) - %s, %s)",
                         (sender, age, body.replace(f'"pid":{os.getpid()}', '"pid":7')))
    lines = shared_status_lines(url)
    assert len(lines) == 3, lines
    stale = [line for line in lines if "not seen for" in line]
    assert len(stale) == 2 and all(line.startswith(f"{OTHER_HOOK}  limit 3/16") for line in stale), lines
    assert any(re.search(r", not seen for (29|30|31) s \(ended\?\)\]$", line) for line in stale), stale
    fresh = next(line for line in lines if line.startswith(HOOK))
    assert "not seen" not in fresh
    mine.close()  # a clean stop deletes only its own row
    late = SharedDestinationSnapshots(url, interval=0.0)
    assert late.publish([DestinationState(HOOK, 1, 8, 0)])  # the next publish prunes the hour-old row
    senders = sorted(s for (s,) in _rows(url))
    assert "gone/8/1" not in senders and "elsewhere/7/1" in senders and len(senders) == 2, senders
    late.close()


def test_an_unchanged_snapshot_is_written_again_as_a_heartbeat(url: str) -> None:
    """Unchanged states are not rewritten within the heartbeat, and are after it (so a live sender stays fresh)."""
    snapshots = SharedDestinationSnapshots(url, interval=0.0, heartbeat=0.3)
    states = [DestinationState(HOOK, 2, 8, 0)]
    assert snapshots.publish(states)
    assert not snapshots.publish(states)
    time.sleep(0.35)
    assert snapshots.publish(states)
    snapshots.close()


def test_a_database_that_cannot_be_written_is_one_warning_never_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """Publishing to a database nobody listens on returns False and warns once, however often it is called."""
    clock = [0.0]
    snapshots = SharedDestinationSnapshots(f"postgresql://nexus:{PASSWORD}@127.0.0.1:{free_port()}/nexus",
                                           interval=0.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="nexus_otel.webhooks"):
        assert not snapshots.publish([DestinationState(HOOK, 1, 8, 0)])
        assert not snapshots.due()  # a failed write waits before the next try
        clock[0] += RETRY_AFTER
        assert snapshots.due() and not snapshots.publish([DestinationState(HOOK, 2, 8, 0)])
    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1 and PASSWORD not in warnings[0] and ":***@" in warnings[0], warnings
    snapshots.close()
