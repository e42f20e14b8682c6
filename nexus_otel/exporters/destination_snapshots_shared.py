"""Each sender's destinations, published in the shared outbox's database for ``nexus-otel webhooks status``.

With the shared outbox (:class:`~nexus_otel.outbox.PostgresOutbox`) the
senders run in other pods than the one the status command runs in, so a file
beside the outbox would be seen by no one: each sender keeps one row of
``nexus_otel_outbox_senders`` instead (its process identity, the database's
clock at the write, and the same snapshot a file holds:
:func:`~.destination_snapshots.snapshot_body`, URLs masked).

:class:`SharedDestinationSnapshots` has the file publisher's interface
(:meth:`~SharedDestinationSnapshots.due`, :meth:`~SharedDestinationSnapshots.publish`,
:meth:`~SharedDestinationSnapshots.close`): it writes what changed, at most once
per ``interval``, and at least every ``HEARTBEAT`` seconds while it runs, so a
row that has not been written for ``STALE_AFTER`` seconds belongs to a sender
that stopped without a word (a sender in another pod cannot be checked for
liveness): the status shows it as "not seen for N s (ended?)", and a publisher
removes rows older than ``FORGET_AFTER``. A clean stop deletes the sender's row.

It opens its own connection, lazily, apart from the outbox's (a status write
never waits behind a lease). Writing is best effort: a write that fails is one
warning, never a failed delivery, and the next one is tried ``RETRY_AFTER``
seconds later.

:func:`snapshots_for` picks the publisher for an outbox: this one for the
shared outbox, the file one (:class:`~.destination_snapshots.DestinationSnapshots`)
for a local outbox; :func:`status_lines_for` reads either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ..outbox import OutboxView, PostgresOutbox, Queue
from ..outbox.owners import identity
from ..outbox.postgres import connect, is_url, masked_reason, safe_url
from .destination_snapshots import (
    INTERVAL,
    DestinationSnapshots,
    Snapshot,
    describe,
    parse_snapshot,
    snapshot_body,
    snapshots_dir,
    status_lines,
)
from .destinations import DestinationState

log = logging.getLogger("nexus_otel.webhooks")

TABLE = "nexus_otel_outbox_senders"
HEARTBEAT = 3.0
"""Seconds between two writes of an unchanged snapshot (so a running sender's row stays fresh)."""
STALE_AFTER = 10.0
"""Seconds without a write after which a sender's row is shown as possibly ended."""
FORGET_AFTER = 3600.0
"""Seconds without a write after which a publisher removes a sender's row."""
RETRY_AFTER = 10.0
"""Seconds before a write is tried again after one failed (the database is down: the outbox says so loudly)."""
CONNECT_TIMEOUT = 3
"""Seconds a connection attempt may take."""
_NOW = "extract(epoch from clock_timestamp())::float8"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    sender     TEXT PRIMARY KEY,
    updated_at DOUBLE PRECISION NOT NULL,
    snapshot   TEXT NOT NULL
)
"""
_UPSERT = (f"INSERT INTO {TABLE} (sender, updated_at, snapshot) VALUES (%s, {_NOW}, %s)"
           " ON CONFLICT (sender) DO UPDATE SET updated_at = EXCLUDED.updated_at, snapshot = EXCLUDED.snapshot")


class SnapshotPublisher(Protocol):
    """What a sender publishes its destinations through (a file beside a local outbox, or a row)."""

    def due(self) -> bool: ...
    def publish(self, states: Iterable[DestinationState]) -> bool: ...
    def close(self) -> None: ...


def snapshots_for(outbox: Queue | OutboxView) -> SnapshotPublisher:
    """The publisher of a sender's destinations for ``outbox`` (or a view of it): a row in the shared
    outbox's database, else a file beside the local outbox."""
    queue = outbox.outbox if isinstance(outbox, OutboxView) else outbox
    if isinstance(queue, PostgresOutbox):
        return SharedDestinationSnapshots(queue)
    return DestinationSnapshots(snapshots_dir(queue.path))


def status_lines_for(outbox: PostgresOutbox | str | os.PathLike[str], now: float | None = None) -> list[str]:
    """A line per destination of every sender of ``outbox``: the shared outbox (or its URL), or a local
    outbox's file. ``psycopg.Error`` if the database cannot be read."""
    if isinstance(outbox, PostgresOutbox) or is_url(outbox):
        return shared_status_lines(outbox, now)  # type: ignore[arg-type]  # a URL, by is_url
    return status_lines(snapshots_dir(outbox), now)


def _url(outbox: PostgresOutbox | str) -> str:
    return outbox.url if isinstance(outbox, PostgresOutbox) else outbox


def _connect(url: str) -> Any:
    return connect(url, CONNECT_TIMEOUT, statement_timeout_ms=5000)


class SharedDestinationSnapshots:
    """This process's row of ``nexus_otel_outbox_senders``: :meth:`publish` it often, :meth:`close` it at a
    clean stop."""

    def __init__(self, outbox: PostgresOutbox | str, *, interval: float = INTERVAL, heartbeat: float = HEARTBEAT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = _url(outbox)
        self.where = safe_url(self.url)
        """What warnings call the database (no password)."""
        self.interval = interval
        self.heartbeat = heartbeat
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._written: list[DestinationState] | None = None
        self._written_at = float("-inf")
        self._next = float("-inf")
        self._next_prune = float("-inf")
        self._sender: str | None = None
        self._closed = False
        self._warned = False

    def due(self) -> bool:
        """Whether :meth:`publish` could write now (``interval`` has passed): to skip making the states when not."""
        return not self._closed and self._clock() >= self._next

    def publish(self, states: Iterable[DestinationState]) -> bool:
        """Write ``states`` if they changed since the last write (or ``heartbeat`` has passed) and ``interval``
        has passed; true if written."""
        states = list(states)
        with self._lock:
            now = self._clock()
            if self._closed or now < self._next:
                return False
            if states == self._written and now - self._written_at < self.heartbeat:
                return False
            self._next = now + self.interval
            try:
                self._write(states, now)
            except Exception as exc:  # the database is down or refuses: the status is best effort
                self._next = now + max(self.interval, RETRY_AFTER)
                self._drop()
                if not self._warned:
                    self._warned = True
                    log.warning("cannot write the webhook destinations' status to %s: %s", self.where,
                                masked_reason(self.url, exc))
                else:
                    log.debug("cannot write the webhook destinations' status to %s: %s", self.where,
                              masked_reason(self.url, exc))
                return False
            self._written, self._written_at = states, now
            return True

    def close(self) -> None:
        """Delete this process's row (a clean stop): its destinations are no one's now."""
        with self._lock:
            self._closed = True
            if self._pid != os.getpid():  # a forked child that never wrote: the row and connection are the parent's
                self._conn = None
                return
            if self._sender is not None and self._conn is not None:
                try:
                    self._conn.execute(f"DELETE FROM {TABLE} WHERE sender = %s", (self._sender,))
                except Exception as exc:
                    log.debug("cannot remove this sender's status row from %s: %s", self.where, exc)
            self._drop()

    def _write(self, states: list[DestinationState], now: float) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's connection is the parent's (not closed here)
            self._pid, self._conn = os.getpid(), None
        if self._conn is None or self._conn.closed:
            self._conn = _connect(self.url)
            made = self._conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
            if made is None or made[0] is None:  # made only if missing: a least-privilege role uses it as it is
                self._conn.execute(_SCHEMA)
        self._sender = identity()  # a forked worker has its own
        self._conn.execute(_UPSERT, (self._sender, snapshot_body(states).decode()))
        if now >= self._next_prune:  # the rows of senders that ended long ago (once a minute is plenty)
            self._next_prune = now + 60.0
            self._conn.execute(f"DELETE FROM {TABLE} WHERE updated_at < {_NOW} - %s", (FORGET_AFTER,))

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass


def read_shared_snapshots(outbox: PostgresOutbox | str, now: float | None = None) -> tuple[list[Snapshot], list[str]]:
    """Every sender's snapshot in the shared outbox's database (by host and pid), and a note for each row that
    could not be read. ``psycopg.Error`` if the database cannot be read."""
    import psycopg

    now = time.time() if now is None else now
    with _connect(_url(outbox)) as conn:
        try:
            rows = conn.execute(f"SELECT sender, {_NOW} - updated_at, snapshot FROM {TABLE}").fetchall()
        except psycopg.errors.UndefinedTable:  # no sender has published yet
            return [], []
    snapshots, problems = [], []
    for sender, age, body in rows:
        try:
            snapshot = parse_snapshot(body)
        except (ValueError, TypeError) as exc:
            problems.append(f"{sender}: not readable as a destinations snapshot: {exc}")
            continue
        stale = float(age) > STALE_AFTER
        snapshots.append(Snapshot(snapshot.host, snapshot.pid, now - max(0.0, float(age)), snapshot.destinations,
                                  snapshot.ended, float(age) if stale else None))
    snapshots.sort(key=lambda s: (s.host, s.pid))
    return snapshots, problems


def shared_status_lines(outbox: PostgresOutbox | str, now: float | None = None) -> list[str]:
    """One line per destination of every sender of the shared outbox (not yet made inert for a terminal)."""
    now = time.time() if now is None else now
    snapshots, problems = read_shared_snapshots(outbox, now)
    return [line for snapshot in snapshots for line in describe(snapshot, now)] + problems
