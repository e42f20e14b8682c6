"""A durable outbox: messages kept in a SQLite file until delivered, retried with backoff, dead-lettered.

Exporters that talk to something that can be down (a webhook receiver, a
database) put their messages here from the span processor's thread: one
local insert, no network. A :class:`OutboxWorker` thread delivers them; what
fails is retried with exponential backoff and jitter, and after
``max_attempts`` it is moved to the dead letters, from where it can be listed
and replayed. Because the queue is a file, a restart or a long outage loses
nothing: the next process picks up where the last one stopped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

log = logging.getLogger("nexus_otel.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id      TEXT NOT NULL,
    destination     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at      REAL NOT NULL,
    last_error      TEXT,
    state           TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (message_id, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
"""


@dataclass(frozen=True, slots=True)
class Message:
    """One queued delivery."""

    id: int
    message_id: str
    destination: str
    payload: dict[str, Any]
    attempts: int
    created_at: float
    last_error: str | None
    state: str


class Outbox:
    """A SQLite-backed queue; safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._db.executescript(_SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use (again after :meth:`close`: the file is the queue)."""
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def put(self, items: Iterable[tuple[str, str, dict[str, Any]]]) -> int:
        """Queue ``(message_id, destination, payload)`` items; a repeat of a queued pair is ignored."""
        now = time.time()
        rows = [(mid, dest, json.dumps(payload, separators=(",", ":"), default=str), now, now)
                for mid, dest, payload in items]
        if not rows:
            return 0
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO outbox (message_id, destination, payload, next_attempt_at, created_at)"
                " VALUES (?, ?, ?, ?, ?)", rows,
            )
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def due(self, limit: int = 100, now: float | None = None) -> list[Message]:
        """Pending messages whose next attempt is due, oldest first."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                " WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (time.time() if now is None else now, limit),
            )
            return [_message(row) for row in cur.fetchall()]

    def next_due_in(self) -> float | None:
        """Seconds until the next pending message is due (0 if one is due now), None if none is pending."""
        with self._lock:
            row = self._db.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending'").fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, row[0] - time.time())

    def delivered(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def retry(self, id_: int, delay: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
                (time.time() + delay, error[:1000], id_),
            )

    def dead(self, id_: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ? WHERE id = ?",
                (error[:1000], id_),
            )

    def dead_letters(self, limit: int = 1000) -> list[Message]:
        with self._lock:
            cur = self._db.execute(
                "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                " WHERE state = 'dead' ORDER BY id LIMIT ?", (limit,),
            )
            return [_message(row) for row in cur.fetchall()]

    def replay(self, ids: Sequence[int] | None = None) -> int:
        """Move dead letters (all, or those ``ids``) back to the queue with fresh attempts."""
        with self._lock:
            if ids is None:
                cur = self._db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ? WHERE state = 'dead'",
                    (time.time(),),
                )
                return cur.rowcount
            total = 0
            for id_ in ids:
                cur = self._db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                    " WHERE state = 'dead' AND id = ?", (time.time(), id_),
                )
                total += cur.rowcount
            return total

    def counts(self) -> dict[str, int]:
        """Messages by state: ``pending`` and ``dead``."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        out = {"pending": 0, "dead": 0}
        out.update({state: n for state, n in rows})
        return out

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _message(row: tuple[Any, ...]) -> Message:
    return Message(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt came to: ``ok``, or retry (with an optional delay hint), or give up."""

    ok: bool
    error: str = ""
    retry: bool = True
    retry_after: float | None = None


OK = Outcome(True)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits ``min(cap, base * 2**n)``, scaled by 0.5-1.0."""

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 300.0

    def delay(self, attempts: int, hint: float | None = None, rng: random.Random = random.Random()) -> float:
        backoff = min(self.cap, self.base * (2 ** attempts))
        delay = backoff / 2 + rng.uniform(0, backoff / 2)
        if hint is not None:
            delay = max(delay, min(hint, self.cap))
        return delay


Deliver = Callable[[list[Message]], list[Outcome]]


class OutboxWorker:
    """Delivers due messages on a thread; wakes at once on new messages, else when the next retry is due."""

    def __init__(self, outbox: Outbox, deliver: Deliver, *, policy: RetryPolicy = RetryPolicy(),
                 batch_size: int = 50, name: str = "outbox",
                 on_outcome: Callable[[str, int], None] | None = None, idle_poll: float = 1.0) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.policy = policy
        self.batch_size = batch_size
        self.on_outcome = on_outcome or (lambda outcome, n: None)
        self.idle_poll = idle_poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nexus-otel-{name}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New messages were queued."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # never let the worker die; a broken batch waits and retries
                log.error("outbox delivery loop error: %s", exc)
                worked = False
            if worked:
                continue
            wait = self.outbox.next_due_in()
            self._wake.wait(self.idle_poll if wait is None else min(wait, self.idle_poll))
            self._wake.clear()

    def run_once(self) -> bool:
        """Deliver one batch of due messages; true if there was any."""
        batch = self.outbox.due(self.batch_size)
        if not batch:
            return False
        outcomes = self.deliver(batch)
        done = []
        for message, outcome in zip(batch, outcomes):
            if outcome.ok:
                done.append(message.id)
            elif outcome.retry and message.attempts + 1 < self.policy.max_attempts:
                self.outbox.retry(message.id, self.policy.delay(message.attempts, outcome.retry_after),
                                  outcome.error)
                self.on_outcome("retried", 1)
            else:
                self.outbox.dead(message.id, outcome.error)
                self.on_outcome("failed", 1)
                log.error("giving up on %s to %s after %d attempts: %s", message.message_id,
                          message.destination, message.attempts + 1, outcome.error)
        if done:
            self.outbox.delivered(done)
            self.on_outcome("delivered", len(done))
        return True

    def stop(self, timeout: float = 10.0, drain: float = 5.0) -> None:
        """Stop the thread, then spend up to ``drain`` seconds delivering what is due now.

        What still fails stays queued on disk for the next process.
        """
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            try:
                if not self.run_once():
                    break
            except Exception as exc:
                log.error("outbox drain error: %s", exc)
                break
