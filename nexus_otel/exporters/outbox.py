"""A durable outbox: messages kept in a SQLite file until delivered, retried with backoff, dead-lettered.

Record sinks that talk to something that can be down (a webhook receiver, a
database) put their messages here on the workflow's thread, and ``put``
returns only once they are committed to the file: a process crash after
that loses nothing (see ``docs/records.md`` for power loss). Commits are
grouped: a thread that finds no commit under way commits its own messages
and those of every thread that queued meanwhile, in one transaction, so
many threads putting at once share commits and one thread pays no hand-off.

An :class:`OutboxWorker` thread delivers them; what fails is retried with
exponential backoff and jitter, and after ``max_attempts`` it is moved to the
dead letters, from where it can be listed and replayed. A destination that
fails trips a circuit breaker: its other messages wait (their attempts are not
spent) while single probes back off, and the log gets one line when the
outage starts and one when it ends. Because the queue is a file, a restart or
a long outage loses nothing: the next process picks up where the last one
stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

log = logging.getLogger("nexus_otel.outbox")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    message_id      TEXT NOT NULL,
    destination     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at      REAL NOT NULL,
    last_error      TEXT,
    state           TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
"""


Scope = tuple[str, tuple[Any, ...]]
"""Which messages a sink sees in a shared outbox: an SQL condition on ``destination`` and its parameters."""
ALL: Scope = ("1 = 1", ())
WEBHOOK_SCOPE: Scope = ("(destination LIKE 'http://%' OR destination LIKE 'https://%')", ())
"""Webhook destinations are URLs; other sinks sharing an outbox use plain names."""


def destination_scope(name: str) -> Scope:
    return ("destination = ?", (name,))


OUTBOX_FILE = "outbox.sqlite"
"""The data directory's outbox, shared by the built-in durable sinks (one commit per execution)."""


def default_outbox_path(data_dir: str | os.PathLike[str], legacy: str) -> Path:
    """``DATA_DIR/outbox.sqlite``, or the sink's own file of an earlier version if it exists (its messages wait)."""
    old = Path(data_dir) / legacy
    return old if old.exists() else Path(data_dir) / OUTBOX_FILE


@dataclass(frozen=True, slots=True)
class Message:
    """One queued delivery."""

    id: int
    message_id: str
    destination: str
    payload: Any
    """The payload as put, decoded from JSON."""
    attempts: int
    created_at: float
    last_error: str | None
    state: str


class _Put:
    """Messages waiting for a commit, and what came of it."""

    __slots__ = ("items", "done", "changes", "error")

    def __init__(self, items: list[tuple[str, str, Any]]) -> None:
        self.items = items
        self.done = False
        self.changes = 0
        self.error: BaseException | None = None


# One row per put item: no uniqueness index to maintain on the workflow's thread (outboxes made by
# earlier versions keep theirs, and OR IGNORE keeps their meaning).
_INSERT = ("INSERT OR IGNORE INTO outbox (message_id, destination, payload, next_attempt_at, created_at)"
           " VALUES (?, ?, ?, ?, ?)")


_MAX_ROWS_PER_INSERT = 16


@functools.lru_cache(maxsize=_MAX_ROWS_PER_INSERT)
def _insert_rows(n: int) -> str:
    return _INSERT + ", (?, ?, ?, ?, ?)" * (n - 1)


def _encoded(payload: Any) -> str:
    return payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), default=str)


class Outbox:
    """A SQLite-backed queue; safe to share between threads (one connection, one lock).

    ``busy_timeout`` bounds how long a statement waits for another process's
    lock on the file (the ``nexus-otel webhooks`` command, another worker).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._puts: list[_Put] = []
        self._puts_changed = threading.Condition()
        self._committing = False
        self._deferred = threading.local()
        with self._lock:
            self._db.executescript(_SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use (again after :meth:`close`: the file is the queue)."""
        if self._conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False, timeout=self.busy_timeout,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # A commit is in the WAL file (the OS's page cache) on return: safe across a process crash;
            # an OS crash or power cut can lose the last commits (synchronous=FULL would fsync each).
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def put(self, items: Iterable[tuple[str, str, Any]]) -> int:
        """Queue ``(message_id, destination, payload)`` items, committed on return; how many were queued.

        A payload is anything JSON can encode, or a ``str`` that already is JSON.
        Raises what the commit raised (the disk is full, the file is locked).
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return 0
        deferred = getattr(self._deferred, "items", None)
        if deferred is not None:  # inside deferred(): committed, with the rest, when it ends
            deferred.extend(batch)
            return len(batch)
        put = _Put(batch)
        with self._puts_changed:
            self._puts.append(put)
            while self._committing and not put.done:
                self._puts_changed.wait()
            if not put.done:  # no commit under way: this thread commits everything queued
                self._committing = True
                puts, self._puts = self._puts, []
            else:
                puts = []
        if puts:
            try:
                self._commit(puts)
            finally:
                with self._puts_changed:
                    self._committing = False
                    self._puts_changed.notify_all()
        if put.error is not None:
            raise put.error
        return put.changes

    def defer(self) -> bool:
        """Hold this thread's puts until :meth:`commit_deferred` (one commit for all); false if already held."""
        if getattr(self._deferred, "items", None) is not None:
            return False
        self._deferred.items = []
        return True

    def commit_deferred(self) -> int:
        """Commit what this thread put since :meth:`defer` (raises what the commit raised)."""
        items = self._deferred.items
        self._deferred.items = None
        return self.put(items) if items else 0

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Puts on this thread inside the block are committed together when it ends (one commit).

        What the block's puts returned assumed success: if the commit fails, it raises here.
        """
        if not self.defer():  # nested: the outer block commits
            yield
            return
        try:
            yield
        except BaseException:
            self.commit_deferred()
            raise
        self.commit_deferred()

    def view(self, scope: Scope) -> "OutboxView":
        """This outbox seen through ``scope``: what one sink sharing the file reads and counts."""
        return OutboxView(self, scope)

    def _commit(self, puts: list[_Put]) -> None:
        """One transaction for every waiting put (a group commit)."""
        now = time.time()
        try:
            with self._lock:
                db = self._db
                if len(puts) == 1 and len(puts[0].items) <= _MAX_ROWS_PER_INSERT:
                    # The common case: one statement, its own transaction, no BEGIN/COMMIT round trips.
                    put = puts[0]
                    params: list[Any] = []
                    for mid, dest, payload in put.items:
                        params += (mid, dest, _encoded(payload), now, now)
                    before = db.total_changes
                    db.execute(_insert_rows(len(put.items)), params)
                    put.changes = db.total_changes - before
                else:
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        for put in puts:
                            before = db.total_changes
                            db.executemany(_INSERT, [(mid, dest, _encoded(payload), now, now)
                                                     for mid, dest, payload in put.items])
                            put.changes = db.total_changes - before
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
        except BaseException as exc:
            for put in puts:
                put.error = exc
                put.changes = 0
        for put in puts:
            put.done = True

    def due(self, limit: int = 100, now: float | None = None, scope: Scope = ALL) -> list[Message]:
        """Pending messages (of ``scope``) whose next attempt is due, oldest first."""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                f" WHERE state = 'pending' AND next_attempt_at <= ? AND {scope[0]}"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (time.time() if now is None else now, *scope[1], limit),
            )
            return [_message(row) for row in cur.fetchall()]

    def next_due_in(self, scope: Scope = ALL) -> float | None:
        """Seconds until the next pending message is due (0 if one is due now), None if none is pending."""
        with self._lock:
            row = self._db.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                   scope[1]).fetchone()
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

    def hold(self, destination: str, until: float) -> int:
        """Postpone every pending message to ``destination`` due before ``until`` (its circuit is open)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE outbox SET next_attempt_at = ? WHERE state = 'pending' AND destination = ?"
                " AND next_attempt_at < ?", (until, destination, until),
            )
            return cur.rowcount

    def dead(self, id_: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ? WHERE id = ?",
                (error[:1000], id_),
            )

    def dead_letters(self, limit: int = 1000, scope: Scope = ALL) -> list[Message]:
        with self._lock:
            cur = self._db.execute(
                "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                f" WHERE state = 'dead' AND {scope[0]} ORDER BY id LIMIT ?", (*scope[1], limit),
            )
            return [_message(row) for row in cur.fetchall()]

    def replay(self, ids: Sequence[int] | None = None, scope: Scope = ALL) -> int:
        """Move dead letters (all, or those ``ids``) back to the queue with fresh attempts."""
        with self._lock:
            if ids is None:
                cur = self._db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                    f" WHERE state = 'dead' AND {scope[0]}", (time.time(), *scope[1]),
                )
                return cur.rowcount
            total = 0
            for id_ in ids:
                cur = self._db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                    f" WHERE state = 'dead' AND id = ? AND {scope[0]}", (time.time(), id_, *scope[1]),
                )
                total += cur.rowcount
            return total

    def counts(self, scope: Scope = ALL) -> dict[str, int]:
        """Messages (of ``scope``) by state: ``pending`` and ``dead``."""
        with self._lock:
            rows = self._db.execute(f"SELECT state, COUNT(*) FROM outbox WHERE {scope[0]} GROUP BY state",
                                    scope[1]).fetchall()
        out = {"pending": 0, "dead": 0}
        out.update({state: n for state, n in rows})
        return out

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class OutboxView:
    """One sink's part of a shared :class:`Outbox`: puts go to the file, queries see only its scope."""

    def __init__(self, outbox: Outbox, scope: Scope) -> None:
        self.outbox = outbox
        self.scope = scope
        self.path = outbox.path

    def put(self, items: Iterable[tuple[str, str, Any]]) -> int:
        return self.outbox.put(items)

    def due(self, limit: int = 100, now: float | None = None) -> list[Message]:
        return self.outbox.due(limit, now, self.scope)

    def next_due_in(self) -> float | None:
        return self.outbox.next_due_in(self.scope)

    def delivered(self, ids: Sequence[int]) -> None:
        self.outbox.delivered(ids)

    def retry(self, id_: int, delay: float, error: str) -> None:
        self.outbox.retry(id_, delay, error)

    def hold(self, destination: str, until: float) -> int:
        return self.outbox.hold(destination, until)

    def dead(self, id_: int, error: str) -> None:
        self.outbox.dead(id_, error)

    def dead_letters(self, limit: int = 1000) -> list[Message]:
        return self.outbox.dead_letters(limit, self.scope)

    def replay(self, ids: Sequence[int] | None = None) -> int:
        return self.outbox.replay(ids, self.scope)

    def counts(self) -> dict[str, int]:
        return self.outbox.counts(self.scope)

    def close(self) -> None:
        self.outbox.close()


def _message(row: tuple[Any, ...]) -> Message:
    return Message(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt came to: ``ok``, or retry (with an optional delay hint), or give up.

    ``attempted=False`` means the message was not tried at all (the deadline
    came first): it stays as it was, with no attempt spent.
    """

    ok: bool
    error: str = ""
    retry: bool = True
    retry_after: float | None = None
    attempted: bool = True


OK = Outcome(True)
NOT_ATTEMPTED = Outcome(False, "not attempted", attempted=False)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits ``min(cap, base * 2**n)``, scaled by 0.5-1.0."""

    max_attempts: int = 8
    base: float = 0.5
    cap: float = 300.0

    def delay(self, attempts: int, hint: float | None = None, rng: random.Random = random.Random()) -> float:
        backoff = min(self.cap, self.base * (2 ** min(attempts, 60)))
        delay = backoff / 2 + rng.uniform(0, backoff / 2)
        if hint is not None:
            delay = max(delay, min(hint, self.cap))
        return delay


Deliver = Callable[[list[Message], float | None], list[Outcome]]
"""Deliver a batch; the second argument is a ``time.monotonic()`` deadline (or None) no attempt may pass."""


@dataclass(slots=True)
class _Circuit:
    """One destination's breaker: open after a failure, probed with single messages while it backs off."""

    failures: int = 0
    open_until: float = 0.0  # time.time() at which the next probe may go
    since: float = 0.0
    held: int = 0
    error: str = ""


@dataclass
class CircuitBreaker:
    """Per-destination outage handling: a few probes a second at most, and two log lines per outage.

    After a retryable failure the destination's circuit opens for
    ``base * 2**k`` seconds (capped at ``cap``): its other due messages are
    postponed without spending an attempt, then one message probes it. A
    success closes the circuit.
    """

    base: float = 0.5
    cap: float = 30.0
    name: str = "outbox"
    logger: logging.Logger = field(default=log)
    _circuits: dict[str, _Circuit] = field(default_factory=dict)

    def is_open(self, destination: str, now: float) -> bool:
        circuit = self._circuits.get(destination)
        return circuit is not None and now < circuit.open_until

    def open_until(self, destination: str) -> float:
        circuit = self._circuits.get(destination)
        return circuit.open_until if circuit is not None else 0.0

    def failed(self, destination: str, error: str, now: float) -> float:
        """A retryable failure; returns when the next probe may go."""
        circuit = self._circuits.get(destination)
        if circuit is None:
            circuit = self._circuits[destination] = _Circuit(since=now, error=error)
            self.logger.warning("%s: %s is unavailable (%s); deliveries to it wait and are retried with backoff",
                                self.name, destination, error)
        circuit.failures += 1
        circuit.error = error
        backoff = min(self.cap, self.base * (2 ** min(circuit.failures - 1, 30)))
        circuit.open_until = now + backoff / 2 + random.uniform(0, backoff / 2)
        return circuit.open_until

    def open_circuits(self, now: float) -> list[tuple[str, float]]:
        """``(destination, next probe time)`` for every circuit open at ``now``."""
        return [(dest, c.open_until) for dest, c in self._circuits.items() if c.open_until > now]

    def held(self, destination: str, n: int) -> None:
        circuit = self._circuits.get(destination)
        if circuit is not None:
            circuit.held += n

    def succeeded(self, destination: str, now: float) -> None:
        circuit = self._circuits.pop(destination, None)
        if circuit is not None:
            self.logger.warning("%s: %s is back after %.1f s (%d failed attempts, %d attempts held back)",
                                self.name, destination, now - circuit.since, circuit.failures, circuit.held)


class OutboxWorker:
    """Delivers due messages on one thread; wakes at once on new messages, else when the next retry is due.

    Only this thread ever delivers, also while stopping: a payload is never
    sent twice by a drain racing the worker. Call :meth:`start` before use.
    """

    def __init__(self, outbox: Outbox, deliver: Deliver, *, policy: RetryPolicy = RetryPolicy(),
                 batch_size: int = 50, name: str = "outbox",
                 on_outcome: Callable[[str, int], None] | None = None, idle_poll: float = 1.0,
                 breaker: CircuitBreaker | None = None, linger: float = 0.2) -> None:
        self.outbox = outbox
        self.deliver = deliver
        self.policy = policy
        self.batch_size = batch_size
        self.name = name
        self.on_outcome = on_outcome or (lambda outcome, n: None)
        self.idle_poll = idle_poll
        self.linger = linger
        """Seconds to wait after a wake-up so that messages queued meanwhile go in the same batch."""
        self.breaker = breaker or CircuitBreaker(base=min(policy.base, 1.0), cap=min(policy.cap, 30.0), name=name)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._drain_until: float | None = None
        self._up: set[str] = set()  # destinations whose last attempt was delivered
        self._thread = threading.Thread(target=self._run, name=f"nexus-otel-{name}", daemon=True)
        self._started = False

    def start(self) -> "OutboxWorker":
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def notify(self) -> None:
        """New messages were queued."""
        if not self._wake.is_set():
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once()
            except Exception as exc:  # never let the worker die; a broken batch waits and retries
                log.error("%s: delivery loop error: %s", self.name, exc)
                worked = False
            if worked:
                continue
            try:
                wait = self.outbox.next_due_in()
            except Exception:
                wait = None
            woken = self._wake.wait(self.idle_poll if wait is None else min(wait, self.idle_poll))
            self._wake.clear()
            if woken and self.linger and not self._stop.is_set():
                self._stop.wait(self.linger)
        # Stopping: deliver what is due now until the deadline, on this thread only.
        deadline = self._drain_until
        while deadline is not None and time.monotonic() < deadline:
            try:
                if not self.run_once(deadline):
                    break
            except Exception as exc:
                log.error("%s: drain error: %s", self.name, exc)
                break

    def run_once(self, deadline: float | None = None) -> bool:
        """Deliver one batch of due messages; true if any was delivered or retried.

        A destination not known to be up (new, or after a failure) gets one
        message first; the rest of its share of the batch goes only if that
        one was delivered. So an outage costs one attempt, not one per message.
        """
        now = time.time()
        groups: dict[str, list[Message]] = {}
        waiting: set[str] = set()
        for message in self.outbox.due(self.batch_size):
            dest = message.destination
            if self.breaker.is_open(dest, now):
                waiting.add(dest)  # postponed below, without spending an attempt
                continue
            groups.setdefault(dest, []).append(message)
        if waiting:
            self._hold_open(now, waiting)
        if not groups:
            return False
        worked = False
        for dest, messages in groups.items():
            if dest not in self._up and len(messages) > 1:
                worked = self._deliver(messages[:1], deadline) or worked
                if dest not in self._up:
                    continue  # the probe failed (its circuit is open) or was not attempted
                messages = messages[1:]
            worked = self._deliver(messages, deadline) or worked
        failed = {dest for dest in groups if dest not in self._up}
        if failed:
            self._hold_open(time.time(), failed)
        return worked

    def _deliver(self, batch: list[Message], deadline: float | None) -> bool:
        """Deliver ``batch`` and settle each outcome; true if any was attempted."""
        outcomes = self.deliver(batch, deadline)
        done, worked = [], False
        for message, outcome in zip(batch, outcomes):
            if not outcome.attempted:
                continue
            worked = True
            if outcome.ok:
                done.append(message.id)
                self._up.add(message.destination)
                self.breaker.succeeded(message.destination, time.time())
                continue
            self._up.discard(message.destination)
            if outcome.retry and message.attempts + 1 < self.policy.max_attempts:
                until = self.breaker.failed(message.destination, outcome.error, time.time())
                delay = max(self.policy.delay(message.attempts, outcome.retry_after), until - time.time())
                self.outbox.retry(message.id, delay, outcome.error)
                self.on_outcome("retried", 1)
            else:
                if outcome.retry:
                    self.breaker.failed(message.destination, outcome.error, time.time())
                self.outbox.dead(message.id, outcome.error)
                self.on_outcome("failed", 1)
                log.error("%s: giving up on %s to %s after %d attempts: %s", self.name, message.message_id,
                          message.destination, message.attempts + 1, outcome.error)
        if done:
            self.outbox.delivered(done)
            self.on_outcome("delivered", len(done))
        return worked

    def _hold_open(self, now: float, destinations: set[str]) -> None:
        """Postpone the due messages of these destinations, if their circuit is open, to their next probe."""
        for dest, until in self.breaker.open_circuits(now):
            if dest in destinations:
                held = self.outbox.hold(dest, until)
                if held:
                    self.breaker.held(dest, held)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop the thread, letting it deliver what is due for up to ``timeout`` seconds; true if it ended.

        What is not delivered stays queued on disk for the next process. A
        delivery still in flight at the deadline is left to finish on its own.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._drain_until = deadline
        self._stop.set()
        self._wake.set()
        if self._started:
            self._thread.join(max(0.0, deadline - time.monotonic()) + 0.05)
        alive = self._thread.is_alive()
        try:
            left = self.outbox.counts().get("pending", 0) if not alive else None
        except Exception:
            left = None
        if alive:
            log.warning("%s: stopped with a delivery still in flight; undelivered messages stay in %s",
                        self.name, self.outbox.path)
        elif left:
            log.warning("%s: %d messages left in %s for the next start", self.name, left, self.outbox.path)
        return not alive
