"""A claim names its claimer: when that process has ended, its messages are due again at once, not at lease end."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from nexus_otel.outbox import OK, Outbox, OutboxWorker, owners

from .served import REPO

CLAIM_AND_DIE = """
import os, signal, sys
from nexus_otel.outbox import Outbox
outbox = Outbox(sys.argv[1])
claimed = outbox.lease(limit=100, lease=600)
print(len(claimed), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_claimer(path) -> int:
    """A process claims every due message of ``path`` for 10 minutes and is SIGKILLed; how many it claimed."""
    done = subprocess.run([sys.executable, "-c", CLAIM_AND_DIE, str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return int(done.stdout)


def test_this_process_is_alive_and_an_ended_one_is_not():
    me = owners.identity()
    assert me == owners.identity(os.getpid()) and not owners.has_ended(me)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = owners.identity(child.pid)
    child.wait(30)
    assert owners.has_ended(gone)
    host, pid, start = me.split("/")
    assert not owners.has_ended(f"another-host/{pid}/{start}")  # cannot tell: wait for the lease
    assert owners.has_ended(f"{host}/{pid}/{int(start) + 1}")  # this pid, but not the process that claimed
    assert not owners.has_ended("not an identity")


def test_messages_claimed_by_a_killed_process_are_due_again_for_the_next(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([(f"m{i}", "sink", {"i": i}) for i in range(20)])
    outbox.close()  # from its journal into the table, where another process may claim them
    assert _killed_claimer(path) == 20
    assert outbox.due() == [] and outbox.lease() == []  # held for the dead process's 10-minute lease
    outbox.enqueue([("live", "sink", {})])
    assert [m.message_id for m in outbox.lease(limit=5)] == ["live"]
    assert outbox.release_orphans() == 20  # this process's own claim stays
    assert sorted(m.message_id for m in outbox.due()) == sorted(f"m{i}" for i in range(20))
    outbox.close()


def test_a_starting_worker_delivers_what_a_killed_process_had_claimed(tmp_path):
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([(f"m{i}", "sink", {"i": i}) for i in range(30)])
    outbox.close()  # from its journal into the table, where another process may claim them
    assert _killed_claimer(path) == 30
    delivered: list[str] = []
    worker = OutboxWorker(outbox, lambda batch, deadline=None: delivered.extend(m.message_id for m in batch)
                          or [OK] * len(batch), name="after-crash", linger=0).start()
    deadline = time.monotonic() + 10
    while len(delivered) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.stop(5)
    assert sorted(delivered) == sorted(f"m{i}" for i in range(30))  # in seconds, not at the 10-minute lease
    assert outbox.counts()["pending"] == 0
    outbox.close()


def test_an_outbox_from_before_claims_named_their_claimer_gets_the_column(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE outbox (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, destination TEXT NOT NULL,
                payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL,
                created_at REAL NOT NULL, last_error TEXT, state TEXT NOT NULL DEFAULT 'pending');
            INSERT INTO outbox (message_id, destination, payload, next_attempt_at, created_at)
                VALUES ('old', 'sink', '{"kept": true}', 0, 0);
        """)
    outbox = Outbox(path)
    (message,) = outbox.lease()
    assert message.message_id == "old" and message.payload == {"kept": True}
    Outbox(path).close()  # a second opener finds the column there
    outbox.close()
