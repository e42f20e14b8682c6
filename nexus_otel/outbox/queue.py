"""The durable outbox: a queue of messages kept on disk until they are delivered or dead-lettered.

Record sinks that talk to something that can be down (a webhook receiver, a
database) enqueue their messages here on the workflow's thread, and
:meth:`Outbox.enqueue` returns only once they are written: a process crash
after that loses nothing (``docs/records.md`` says what a power cut can lose).
An enqueue is one line appended to this object's journal (:mod:`.journal`),
not a SQLite transaction: the workflow's thread never waits for the shared
file's lock, and pays one ``write``.

A worker (:class:`~nexus_otel.outbox.worker.OutboxWorker`) leases due
messages, delivers them, and acks, retries, dead-letters or releases each.
This object's own workers lease what it enqueued straight from memory
(:mod:`.local`): a message delivered at its first attempt never enters the
SQLite table (:mod:`.table`), which gets only a checkpoint of the journal once
per batch. What is not delivered at once (a retry, a dead letter, a
destination whose circuit is open, more than memory should hold) and
everything at :meth:`Outbox.close` goes into the table, where every reader in
every process sees it. The journal of a process that has ended is recovered
into the table, from its checkpoint, by the next reader.

Every state a message can be in, and every transition between them, is in
``docs/records.md`` ("The outbox's states"). Sinks that share a file (the
built-in ones do, by default) each see their own messages through an
:class:`OutboxView`. Several processes may share the file (the workers of
``serve --workers N``): a message in the table is leased by one of them at a
time, and a journal's messages are its process's alone while it runs, so
none is delivered twice by two live processes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .. import fastjson
from ..errors import RecordsUnavailableError
from . import journal, owners
from .deferred import Deferred, DeferredEnqueues
from .local import LocalMessage, LocalMessages
from .message import Handle, LocalHandle, Message, RowHandle, as_handle
from .scope import ALL, Scope, matcher
from .table import (
    INSERT_NEW,
    READ_WAIT,
    ROW_COLUMNS,
    SCHEMA,
    HandedOver,
    Transaction,
    add_claimed_by,
    committed,
    hand_over,
    hand_over_when_gone,
    local_message,
    note_checkpoint,
    remove_journal,
    row_message,
    to_table,
)
from .view import DEFAULT_LEASE, OutboxView
from .writable import Writability, read_only

log = logging.getLogger("nexus_otel.outbox")

OUTBOX_FILE = "outbox.sqlite"
"""The data directory's outbox, shared by the built-in durable sinks (one write per execution)."""

_IDS_PER_STATEMENT = 500  # well under SQLite's limit on bound variables
_MAX_LOCAL = 20_000
"""Local messages kept in memory for this object's workers; beyond that (no worker keeps up) they go into the table."""
_ALIVE_RECHECK = 1.0  # seconds between checks that another process writing a journal still runs


def default_outbox_path(data_dir: str | os.PathLike[str], legacy: str) -> Path:
    """``DATA_DIR/outbox.sqlite``, or the sink's own file of an earlier version if it exists (its messages wait)."""
    old = Path(data_dir) / legacy
    return old if old.exists() else Path(data_dir) / OUTBOX_FILE


def _encoded(payload: Any) -> str:
    return payload if isinstance(payload, str) else fastjson.dumps(payload)


def _split(handles: Iterable[Handle | int]) -> tuple[list[LocalHandle], list[int]]:
    """Handles as this object's local messages, and the table's row ids."""
    local: list[LocalHandle] = []
    rows: list[int] = []
    for value in handles:
        handle = as_handle(value)
        if isinstance(handle, LocalHandle):
            local.append(handle)
        else:
            rows.append(handle.row)
    return local, rows


def _chunks(ids: list[int]) -> Iterator[tuple[list[int], str]]:
    """``ids`` in chunks of at most :data:`_IDS_PER_STATEMENT`, each with its ``?, ?, ...`` placeholders."""
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start:start + _IDS_PER_STATEMENT]
        yield chunk, ",".join("?" * len(chunk))


class Outbox(DeferredEnqueues):
    """A durable queue on a SQLite file and this process's journal beside it; safe to share between threads.

    ``busy_timeout`` bounds how long a reader waits for another process's
    lock on the file (the ``nexus-otel webhooks`` command, another worker); an
    enqueue never waits for it.

    The operations, in queue terms: :meth:`enqueue`; :meth:`lease` (with :meth:`due` to read without
    leasing); :meth:`ack` (delivered), :meth:`retry` (a failed attempt: due again after a delay),
    :meth:`dead_letter` (given up), :meth:`release` (not attempted: due now); :meth:`hold` (a
    destination's circuit is open); :meth:`release_orphans` (leases of processes that ended);
    :meth:`replay` (dead letters back to pending); :meth:`close` (hand local messages to the table).
    ``put``, ``claim``, ``delivered`` and ``dead`` are the earlier names of enqueue, lease, ack and dead_letter.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable(self.path, exc) from exc
        self.busy_timeout = busy_timeout
        self.writable = Writability(self.path)
        """Whether enqueues can be written now (one that could not be marks it; a probe clears it)."""
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._deferred = Deferred()
        self._local = LocalMessages(journal.JournalWriter(self.path))
        self._handed_over: HandedOver = {}  # local messages handed to the table while in delivery
        # Dropped without close() (or left open as the process exits): its waiting messages still reach the table.
        weakref.finalize(self, hand_over_when_gone, self.path, self._local)
        # Another process's journal -> when its process was last seen running, and the file's size then.
        self._alive: dict[str, tuple[float, int | None]] = {}
        with self._lock:
            try:
                self._db.executescript(SCHEMA)
                add_claimed_by(self._db)
            except sqlite3.OperationalError as exc:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                raise _unavailable(self.path, exc) from exc

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

    def enqueue(self, items: Iterable[tuple[str, str, Any]], *, required: bool = True) -> int:
        """Queue ``(message_id, destination, payload)`` items, written on return; how many were queued.

        A payload is anything JSON can encode, or a ``str`` that already is JSON.
        An enqueue that cannot be written (the disk is full, the folder read-only or gone) leaves
        nothing behind (no part of its line, nothing held: see :mod:`.journal`), marks the outbox
        unwritable (:attr:`writable`) and raises :class:`~nexus_otel.errors.RecordsUnavailableError`
        (its ``__cause__`` is the ``OSError``); with ``required=False`` (a sink that chose to drop
        its records rather than fail the execution) it returns 0 instead. Nothing else changes:
        a later enqueue that can be written is written, whole, after the earlier ones.
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return 0
        if self._deferred.hold(batch, required):  # inside defer(): written with the rest when it ends
            return len(batch)
        try:
            self._local.enqueue(time.time(), [(mid, dest, _encoded(payload)) for mid, dest, payload in batch])
        except OSError as exc:
            reason = self.writable.write_failed(exc, required=required)
            if required:
                raise RecordsUnavailableError(str(self.path), reason) from exc
            return 0
        self.writable.write_succeeded()
        return len(batch)

    put = enqueue

    def view(self, scope: Scope) -> OutboxView:
        """This outbox seen through ``scope``: what one sink sharing the file reads and counts."""
        return OutboxView(self, scope)

    # -- recovery: journals of processes that ended --
    def _recover_journals(self, wait: float | None = None) -> bool:
        """Recover the journals of ended processes into the table, in a transaction of its own (call with ``_lock``).

        ``wait``: at most this many seconds for another process's lock on the file (instead of
        ``busy_timeout``), after which nothing is recovered and False is returned: for reads (counts,
        closing) that must not hold up a shutdown or a scrape. True once recovered.
        """
        todo = self._ended_journals()
        if not todo:
            return True
        if not self._begin(wait):
            return False
        with committed(self._db) as tx:
            self._recover(todo)
            tx.after.append(functools.partial(self._recovered, todo))
        return True

    def _begin(self, wait: float | None) -> bool:
        """``BEGIN IMMEDIATE`` (the file's write lock), waiting at most ``wait`` seconds if given; False if locked."""
        db = self._db
        if wait is not None:
            db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            if wait is None:
                raise
            return False
        finally:
            if wait is not None:
                db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return True

    def _ended_journals(self) -> list[str]:
        """Journals of processes that have ended (a running process delivers its own journal's messages)."""
        names = journal.journals(self.path)
        for gone in [name for name in self._alive if name not in names]:
            del self._alive[gone]
        now = time.monotonic()
        mine = self._local.writer.name
        retired = self._local.retired()
        ended = []
        for name in names:
            if name == mine or name in retired:
                continue
            size = journal.size_of(self.path.parent / name)
            seen = self._alive.get(name)
            if seen is not None and now - seen[0] < _ALIVE_RECHECK and size == seen[1]:
                continue  # its process ran a moment ago and has written nothing since
            if owners.has_ended(journal.owner_of(name)):
                self._alive.pop(name, None)
                ended.append(name)
            else:
                self._alive[name] = (now, size)
        return ended

    def _recover(self, names: list[str]) -> None:
        """Inside a write transaction: insert the lines of ended journals ``names`` from their checkpoints."""
        db = self._db
        rows: list[tuple[Any, ...]] = []
        for name in names:
            row = db.execute("SELECT taken FROM outbox_journal WHERE name = ?", (name,)).fetchone()
            start = row[0] if row else 0
            data = journal.read_from(self.path.parent / name, start)
            decoded = journal.decode(data)
            if decoded.corrupt:
                log.error("%s: %d lines of journal %s failed their checksum and were skipped (a torn write)",
                          self.path, decoded.corrupt, name)
            if len(data) > decoded.taken:
                log.error("%s: journal %s ends in %d bytes of a line its writer never finished; dropped",
                          self.path, name, len(data) - decoded.taken)
            rows += journal.rows_of(decoded.entries)
            db.execute("INSERT OR REPLACE INTO outbox_journal (name, taken) VALUES (?, ?)", (name, start + len(data)))
        # Its process may have moved some of these into the table already (a retry, a held circuit) after its
        # last checkpoint: those are not queued twice.
        db.executemany(INSERT_NEW, [(*row, row[0], row[1]) for row in rows])

    def _recovered(self, names: list[str]) -> None:
        """Once :meth:`_recover`'s transaction committed: the files go first, then their rows."""
        for name in names:
            remove_journal(self._db, self.path.parent, name)
            self._alive.pop(name, None)

    # -- this object's local messages --
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        """A write transaction of its own (call with ``_lock``): see :func:`committed`."""
        self._db.execute("BEGIN IMMEDIATE")
        with committed(self._db) as tx:
            yield tx

    def _finished(self, items: list[LocalMessage]) -> None:
        """Local messages acked (call with ``_lock``): write the journal's checkpoint, if that moved.

        They are done even if the checkpoint cannot be written: a checkpoint behind only means that
        the next reader of the journal, after this process ended, delivers them again (at least once).
        """
        try:
            if self._local.checkpoint_after(items):
                with self._transaction() as tx:
                    note_checkpoint(tx, self.path.parent, self._local, items)
        finally:
            self._local.finish(items)

    def _move_to_table(self, items: list[LocalMessage], **row: Any) -> None:
        """Move local messages into the table (call with ``_lock``); back as they were if that fails."""
        if items:
            with self._transaction() as tx:
                to_table(tx, self.path.parent, self._local, items, **row)

    def _spill(self, matches: Callable[[str], bool] | None = None, keep: int = 0) -> None:
        """Move local waiting messages (those ``matches`` accepts; all if None), beyond ``keep``, into the table."""
        self._move_to_table(self._local.take_waiting(matches, keep))

    # -- reading, leasing, and what a worker does with a lease --
    def due(self, limit: int = 100, now: float | None = None, scope: Scope = ALL) -> list[Message]:
        """Pending messages (of ``scope``) due now, oldest first, read without a lease (see :meth:`lease`)."""
        matches = matcher(scope)
        with self._lock:
            self._recover_journals()
            if matches is None:
                self._spill()
            cur = self._db.execute(
                f"SELECT {ROW_COLUMNS} FROM outbox"
                f" WHERE state = 'pending' AND next_attempt_at <= ? AND {scope[0]}"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (time.time() if now is None else now, *scope[1], limit),
            )
            rows = [row_message(row) for row in cur.fetchall()]
        own = [local_message(i) for i in self._local.waiting(matches)] if matches is not None else []
        return (rows + own)[:limit]

    def lease(self, limit: int = 100, lease: float = DEFAULT_LEASE, scope: Scope = ALL) -> list[Message]:
        """Lease up to ``limit`` due messages (of ``scope``) for delivery, oldest first, for ``lease`` seconds.

        This object's local messages (enqueued through it, not yet done) are leased from memory,
        after the table's: no other worker can have them (see :mod:`.local`). The table's are
        leased in one transaction: their next attempt moves to the lease's end, so no other
        process (or worker) sharing the file leases them meanwhile. The worker ends each lease with
        :meth:`ack`, :meth:`retry`, :meth:`dead_letter` or :meth:`release`. A worker that dies
        leaves them to be leased again: by :meth:`release_orphans` as soon as another process sees
        it gone, or when the lease ends (the same ``message_id``: a receiver that deduplicates sees
        it once). Journals of ended processes are recovered first, in the same transaction.
        """
        me = owners.identity()
        matches = matcher(scope)
        with self._lock:
            todo = self._ended_journals()
            db = self._db
            # Local messages beyond what memory should hold (no worker keeps up), or all of them for a scope
            # that cannot be tested in Python: into the table, where any worker sees them.
            self._spill(matches, _MAX_LOCAL if matches is not None else 0)
            db.execute("BEGIN IMMEDIATE")  # the file's write lock: no other worker reads these rows meanwhile
            with committed(db) as tx:
                if todo:
                    self._recover(todo)  # the journals of ended processes, in the same transaction
                    tx.after.append(functools.partial(self._recovered, todo))
                now = time.time()
                rows = db.execute(
                    f"SELECT {ROW_COLUMNS} FROM outbox"
                    f" WHERE state = 'pending' AND next_attempt_at <= ? AND {scope[0]}"
                    " ORDER BY next_attempt_at, id LIMIT ?", (now, *scope[1], limit),
                ).fetchall()
                for chunk, marks in _chunks([row[0] for row in rows]):
                    db.execute(f"UPDATE outbox SET next_attempt_at = ?, claimed_by = ? WHERE id IN ({marks})",
                               [now + lease, me, *chunk])
        leased = [row_message(row) for row in rows]
        if matches is not None:
            leased += [local_message(i) for i in self._local.lease(matches, limit - len(leased), time.time() + lease)]
        return leased

    claim = lease

    def _handed_over_rows(self, handles: Iterable[LocalHandle]) -> list[tuple[str, str]]:
        """Rows of local messages handed to the table while in delivery (call with ``_lock``)."""
        return [row for h in handles if (row := self._handed_over.pop(h, None)) is not None]

    def release(self, handles: Sequence[Handle | int]) -> None:
        """End leases without an attempt: the messages are due now (they were not attempted)."""
        now = time.time()
        local, rows = _split(handles)
        self._local.release(self._local.held(local))
        with self._lock:
            for mid, dest in self._handed_over_rows(local):
                self._db.execute("UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                                 " AND message_id = ? AND destination = ?", (now, mid, dest))
            for chunk, marks in _chunks(rows):
                self._db.execute("UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                                 f" AND id IN ({marks})", [now, *chunk])

    def release_orphans(self, scope: Scope = ALL) -> int:
        """Release, due now, the messages leased by processes that have ended; how many.

        A process killed while it held a lease (SIGKILL, a crash, a worker replaced) would
        otherwise keep its messages until the lease ends; a starting worker calls this.
        """
        now = time.time()
        with self._lock:
            claimers = [row[0] for row in self._db.execute(
                "SELECT DISTINCT claimed_by FROM outbox WHERE state = 'pending' AND claimed_by IS NOT NULL"
                f" AND next_attempt_at > ? AND {scope[0]}", (now, *scope[1])).fetchall()]
        released = 0
        for gone in [c for c in claimers if owners.has_ended(c)]:
            with self._lock:
                released += self._db.execute(
                    "UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                    f" AND claimed_by = ? AND {scope[0]}", (now, gone, *scope[1])).rowcount
        return released

    def next_due_in(self, scope: Scope = ALL) -> float | None:
        """Seconds until the next pending message is due (0 if one is due now), None if none is pending."""
        matches = matcher(scope)
        if matches is not None and self._local.has_waiting(matches):
            return 0.0
        with self._lock:
            self._recover_journals()
            if matches is None:
                self._spill()
            row = self._db.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                   scope[1]).fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, row[0] - time.time())

    def ack(self, handles: Sequence[Handle | int]) -> None:
        """Delivered: the messages are gone (one statement per chunk of rows, not one per message)."""
        local, rows = _split(handles)
        own = self._local.held(local)
        with self._lock:
            for mid, dest in self._handed_over_rows(local):
                self._db.execute("DELETE FROM outbox WHERE state = 'pending' AND message_id = ? AND destination = ?",
                                 (mid, dest))
            for chunk, marks in _chunks(rows):
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)
            if own:
                self._finished(own)

    delivered = ack

    def retry(self, handle: Handle | int, delay: float, error: str) -> None:
        """A failed attempt (a nack): one more attempt counted, due again in ``delay`` seconds, in the table."""
        handle = as_handle(handle)
        with self._lock:
            if isinstance(handle, LocalHandle) and handle not in self._handed_over:
                self._move_to_table(self._local.held([handle]), attempts=1, next_attempt_at=time.time() + delay,
                                    error=error[:1000])
                return
            where, key = self._row_of(handle)
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, claimed_by = NULL"
                f" WHERE {where}",
                (time.time() + delay, error[:1000], *key),
            )

    def hold(self, destination: str, until: float) -> int:
        """Postpone every pending message to ``destination`` due before ``until`` (its circuit is open)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                " AND destination = ? AND next_attempt_at < ?", (until, destination, until),
            )
            own = self._local.take_waiting(destination.__eq__)  # into the table, due at the circuit's next probe
            self._move_to_table(own, next_attempt_at=until)
            return cur.rowcount + len(own)

    def dead_letter(self, handle: Handle | int, error: str) -> None:
        """Given up on (the last attempt failed, or the answer was final): kept in the table as a dead letter."""
        handle = as_handle(handle)
        with self._lock:
            if isinstance(handle, LocalHandle) and handle not in self._handed_over:
                self._move_to_table(self._local.held([handle]), state="dead", attempts=1, error=error[:1000])
                return
            where, key = self._row_of(handle)
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ?, claimed_by = NULL"
                f" WHERE {where}",
                (error[:1000], *key),
            )

    dead = dead_letter

    def _row_of(self, handle: Handle) -> tuple[str, tuple[Any, ...]]:
        """The SQL condition naming a leased message's row (call with ``_lock``): by id, or for a local message
        handed to the table while in delivery, by its key."""
        if isinstance(handle, RowHandle):
            return "id = ?", (handle.row,)
        moved = self._handed_over_rows([handle])
        if moved:
            return "state = 'pending' AND message_id = ? AND destination = ?", moved[0]
        return "0", ()  # done already (acked, or never this object's): nothing to change

    def dead_letters(self, limit: int = 1000, scope: Scope = ALL) -> list[Message]:
        """The dead letters (of ``scope``), oldest first."""
        with self._lock:
            cur = self._db.execute(
                f"SELECT {ROW_COLUMNS} FROM outbox"
                f" WHERE state = 'dead' AND {scope[0]} ORDER BY id LIMIT ?", (*scope[1], limit),
            )
            return [row_message(row) for row in cur.fetchall()]

    def replay(self, ids: Sequence[int | RowHandle] | None = None, scope: Scope = ALL) -> int:
        """Move dead letters (all, or those ``ids``: row ids or their handles) back to pending, due now, with
        fresh attempts."""
        with self._lock:
            if ids is None:
                cur = self._db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                    f" WHERE state = 'dead' AND {scope[0]}", (time.time(), *scope[1]),
                )
                return cur.rowcount
            total = 0
            for id_ in (i.row if isinstance(i, RowHandle) else i for i in ids):
                cur = self._db.execute(
                    "UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?"
                    f" WHERE state = 'dead' AND id = ? AND {scope[0]}", (time.time(), id_, *scope[1]),
                )
                total += cur.rowcount
            return total

    def counts(self, scope: Scope = ALL) -> dict[str, int]:
        """Messages (of ``scope``) by state: ``pending`` and ``dead``.

        ``pending`` counts the table's and this object's local messages (enqueued through it, not yet
        done). Another running process's local messages are its to count; a journal left by a process
        that ended counts once recovered, which this does unless another process holds the file locked
        for more than a moment (a count never waits long).
        """
        matches = matcher(scope)
        with self._lock:
            self._recover_journals(wait=READ_WAIT)
            rows = self._db.execute(f"SELECT state, COUNT(*) FROM outbox WHERE {scope[0]} GROUP BY state",
                                    scope[1]).fetchall()
        out = {"pending": 0, "dead": 0}
        out.update({state: n for state, n in rows})
        out["pending"] += self._local.count(matches) if matches is not None else self._local.count()
        return out

    def oldest_age(self, scope: Scope = ALL) -> float | None:
        """Seconds since the oldest pending message (of ``scope``: the table's and this object's) was enqueued,
        None if none is pending. Another running process's local messages are its to report."""
        matches = matcher(scope)
        with self._lock:
            row = self._db.execute(f"SELECT MIN(created_at) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                   scope[1]).fetchone()
        times = [t for t in (row[0] if row else None, self._local.oldest(matches)) if t is not None]
        return max(0.0, time.time() - min(times)) if times else None

    def left(self, scope: Scope = ALL) -> int:
        """Messages (of ``scope``) this process leaves for the next start if it stops now.

        Its local messages (enqueued through it, not yet done), and the table's pending ones unless
        another running process shares the outbox (its journal is here): those are that process's to deliver.
        """
        matches = matcher(scope)
        own = self._local.count(matches) if matches is not None else self._local.count()
        with self._lock:
            mine = self._local.writer.name
            retired = self._local.retired()
            others = [name for name in journal.journals(self.path) if name != mine and name not in retired]
            if any(not owners.has_ended(journal.owner_of(name)) for name in others):
                return own
            try:
                row = self._db.execute(f"SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                       scope[1]).fetchone()
            except sqlite3.Error:
                return own
        return own + (row[0] if row else 0)

    def close(self) -> None:
        """Move this object's messages into the table and close the connection (both start again on next use).

        Messages still in delivery (a worker that could not finish by its deadline) go in leased to
        this process, as the table's own leases are; their worker's ack, retry or release ends them
        there. If the table cannot be written now (another process holds it locked), they wait in the
        journal: the next process to read the outbox after this one ends recovers them.
        """
        with self._lock:
            try:
                if self._local.writer.name is None and not self._local.count() and not self._local.retired():
                    pass  # nothing local on disk or in memory: nothing to hand over
                elif self._begin(READ_WAIT):
                    with committed(self._db) as tx:
                        hand_over(tx, self.path.parent, self._local, self._handed_over)
                else:
                    log.warning("%s: messages left in the journal for the next reader: the file is locked by"
                                " another process", self.path)
            except sqlite3.Error as exc:
                log.warning("%s: messages left in the journal for the next reader: %s", self.path, exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _unavailable(path: Path, exc: BaseException) -> RecordsUnavailableError:
    """The error for an outbox that cannot be opened: naming its folder as read-only when it is."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if read_only(folder):
        return RecordsUnavailableError(str(path), f"its folder {folder} is read-only")
    return RecordsUnavailableError(str(path), f"{type(exc).__name__}: {exc}")
