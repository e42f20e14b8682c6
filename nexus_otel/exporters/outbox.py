"""A durable outbox: messages kept on disk until delivered (see ``delivery`` for who delivers them).

Record sinks that talk to something that can be down (a webhook receiver, a
database) put their messages here on the workflow's thread, and ``put``
returns only once they are written: a process crash after that loses nothing
(see ``docs/records.md`` for power loss). A put is one line appended to this
object's journal (:mod:`.journal`), not a SQLite transaction: the workflow's
thread never waits for the shared file's lock, and pays one ``write``.

The object's own workers deliver what it put straight from memory
(:mod:`.own_journal`): a message delivered at its first attempt never enters
the SQLite table; the table only notes, once per batch, how far the journal
is settled. What is not delivered at once (a retry, a dead letter, a
destination whose circuit is open, more than memory should hold) and
everything at :meth:`Outbox.close` goes into the table, where every reader in
every process sees it. A journal whose process has ended is taken into the
table, from its last note, by the next reader.

Sinks that share a file (the built-in ones do, by default) each see their own
messages through an :class:`OutboxView`. A
:class:`~nexus_otel.exporters.delivery.OutboxWorker` delivers them. Because the
queue is on disk, a restart or a long outage loses nothing: the next process
picks up where the last one stopped. Several processes may share the file
(the workers of ``serve --workers N``): a message in the table is claimed by
one of them at a time (:meth:`Outbox.claim`), and a journal's messages are
its process's alone while it runs, so none is delivered twice.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .. import fastjson
from ..errors import RecordsUnavailableError
from . import claimer, journal
from .own_journal import Item, OwnJournal
from .writable import Writability, read_only

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
    state           TEXT NOT NULL DEFAULT 'pending',
    claimed_by      TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_message ON outbox (message_id, destination);
CREATE TABLE IF NOT EXISTS outbox_journal (name TEXT PRIMARY KEY, taken INTEGER NOT NULL);
"""


class Scope(NamedTuple):
    """Which messages a sink sees in a shared outbox: an SQL condition on ``destination``, its parameters,
    and the same test in Python (for messages not yet in the table); a plain ``(sql, params)`` pair works too."""

    sql: str
    params: tuple[Any, ...]
    matches: Callable[[str], bool] | None = None


def _any(destination: str) -> bool:
    return True


def _is_url(destination: str) -> bool:
    return destination.startswith(("http://", "https://"))


ALL = Scope("1 = 1", (), _any)
WEBHOOK_SCOPE = Scope("(destination LIKE 'http://%' OR destination LIKE 'https://%')", (), _is_url)
"""Webhook destinations are URLs; other sinks sharing an outbox use plain names."""


def destination_scope(name: str) -> Scope:
    return Scope("destination = ?", (name,), name.__eq__)


def _matcher(scope: tuple[Any, ...]) -> Callable[[str], bool] | None:
    return scope[2] if len(scope) > 2 else None


OUTBOX_FILE = "outbox.sqlite"
"""The data directory's outbox, shared by the built-in durable sinks (one write per execution)."""


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


# Rows enter the table from an ended process's journal (not twice: its process may have moved some in
# already, after its last note of how far it had settled), or from this object's own messages (a retry, a
# dead letter, a circuit held open, a spill, a close). Outboxes made by earlier versions keep their
# uniqueness index on message_id; OR IGNORE keeps its meaning there.
_INSERT_NEW = ("INSERT INTO outbox (message_id, destination, payload, next_attempt_at, created_at)"
               " SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = ? AND destination = ?)")
_INSERT_OWN = ("INSERT OR IGNORE INTO outbox (message_id, destination, payload, next_attempt_at, created_at, attempts,"
               " state, last_error, claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_ROWS_PER_INSERT = 100  # 900 bound variables: well under SQLite's limit (32,766)
DEFAULT_LEASE = 60.0
"""Seconds a claimed message is kept from other claimers (longer than any one delivery takes)."""
_IDS_PER_DELETE = 500  # well under SQLite's limit on bound variables
_MAX_OWN = 20_000
"""Own messages kept in memory for this object's workers; beyond that (no worker keeps up) they go into the table."""
_ALIVE_RECHECK = 1.0  # seconds between checks that another process writing a journal still runs
_LOOK_WAIT = 0.2  # seconds a look (counts, closing) waits for another process's lock before it reads as is


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_own_rows(n: int) -> str:
    return _INSERT_OWN + ", (?, ?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


def _encoded(payload: Any) -> str:
    return payload if isinstance(payload, str) else fastjson.dumps(payload)


class Outbox:
    """A SQLite-backed queue; safe to share between threads (one connection, one lock).

    ``busy_timeout`` bounds how long a reader waits for another process's
    lock on the file (the ``nexus-otel webhooks`` command, another worker); a
    put never waits for it.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _unavailable(self.path, exc) from exc
        self.busy_timeout = busy_timeout
        self.writable = Writability(self.path)
        """Whether puts can be written now (a put that could not be marks it; a probe clears it)."""
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._deferred = threading.local()
        self._own = OwnJournal(journal.JournalWriter(self.path))
        self._moved: dict[int, tuple[str, str]] = {}  # own handle -> (message_id, destination) once handed over
        # Dropped without close() (or left open as the process exits): its waiting messages still reach the table.
        weakref.finalize(self, _hand_over_when_gone, self.path, self._own)
        # Another process's journal -> when its process was last seen running, and the file's size then.
        self._alive: dict[str, tuple[float, int | None]] = {}
        with self._lock:
            try:
                self._db.executescript(_SCHEMA)
                _add_claimed_by(self._db)
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

    def put(self, items: Iterable[tuple[str, str, Any]], *, required: bool = True) -> int:
        """Queue ``(message_id, destination, payload)`` items, written on return; how many were queued.

        A payload is anything JSON can encode, or a ``str`` that already is JSON.
        A put that cannot be written (the disk is full, the folder read-only or gone) leaves
        nothing behind (no part of its line, nothing held: see :mod:`.journal`), marks the outbox
        unwritable (:attr:`writable`) and raises :class:`~nexus_otel.errors.RecordsUnavailableError`
        (its ``__cause__`` is the ``OSError``); with ``required=False`` (a sink that chose to drop
        its records rather than fail the execution) it returns 0 instead. Nothing else changes:
        a later put that can be written is written, whole, after the earlier ones.
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return 0
        deferred = getattr(self._deferred, "items", None)
        if deferred is not None:  # inside defer(): written, with the rest, when it ends
            deferred.extend(batch)
            if required:
                self._deferred.required = True
            return len(batch)
        try:
            self._own.put(time.time(), [(mid, dest, _encoded(payload)) for mid, dest, payload in batch])
        except OSError as exc:
            reason = self.writable.write_failed(exc, required=required)
            if required:
                raise RecordsUnavailableError(str(self.path), reason) from exc
            return 0
        self.writable.write_succeeded()
        return len(batch)

    def defer(self) -> bool:
        """Hold this thread's puts until :meth:`commit_deferred` (one write for all); false if already held."""
        if getattr(self._deferred, "items", None) is not None:
            return False
        self._deferred.items = []
        self._deferred.required = False
        return True

    def commit_deferred(self) -> int:
        """Write what this thread put since :meth:`defer`, as :meth:`put` does (required if any put was)."""
        items = self._deferred.items
        self._deferred.items = None
        return self.put(items, required=self._deferred.required) if items else 0

    def view(self, scope: Scope) -> OutboxView:
        """This outbox seen through ``scope``: what one sink sharing the file reads and counts."""
        return OutboxView(self, scope)

    # -- journals of processes that ended --------------------------------------------------
    def _take_journals(self, wait: float | None = None) -> bool:
        """Move the journals of ended processes into the table, in a transaction of its own (call with ``_lock``).

        ``wait``: at most this many seconds for another process's lock on the file (instead of
        ``busy_timeout``), after which nothing is taken and False is returned: for looks (counts,
        closing) that must not hold up a shutdown or a scrape. True once taken.
        """
        todo = self._ended_journals()
        if not todo:
            return True
        if not self._begin(wait):
            return False
        with _committed(self._db) as tx:
            self._take(todo)
            tx.after.append(functools.partial(self._took, todo))
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
        mine = self._own.writer.name
        retired = self._own.retired()
        ended = []
        for name in names:
            if name == mine or name in retired:
                continue
            size = journal.size_of(self.path.parent / name)
            seen = self._alive.get(name)
            if seen is not None and now - seen[0] < _ALIVE_RECHECK and size == seen[1]:
                continue  # its process ran a moment ago and has written nothing since
            if claimer.has_ended(journal.owner_of(name)):
                self._alive.pop(name, None)
                ended.append(name)
            else:
                self._alive[name] = (now, size)
        return ended

    def _take(self, names: list[str]) -> None:
        """Inside a write transaction: insert the lines of ended journals ``names`` from where they were settled."""
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
        # Its process may have moved some of these into the table already (a retry, a held circuit) after the
        # last note of how far the journal was settled: those are not queued twice.
        db.executemany(_INSERT_NEW, [(*row, row[0], row[1]) for row in rows])

    def _took(self, names: list[str]) -> None:
        """Once :meth:`_take`'s transaction committed: the files go first, then their rows."""
        for name in names:
            _remove_journal(self._db, self.path.parent, name)
            self._alive.pop(name, None)

    # -- this object's own messages ----------------------------------------------------------
    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        """A write transaction of its own (call with ``_lock``): see :func:`_committed`."""
        self._db.execute("BEGIN IMMEDIATE")
        with _committed(self._db) as tx:
            yield tx

    def _settled(self, items: list[Item]) -> None:
        """Own items delivered (call with ``_lock``): note how far the journal is settled, if that moved.

        They are settled even if the note cannot be written: a note behind only means that the
        next reader of the journal, after this process ended, delivers them again (at least once).
        """
        try:
            if self._own.settled_to(items):
                with self._transaction() as tx:
                    _note_settled(tx, self.path.parent, self._own, items)
        finally:
            self._own.settle(items)

    def _to_table(self, items: list[Item], **row: Any) -> None:
        """Move own items into the table (call with ``_lock``); put back as they were if that fails."""
        if items:
            with self._transaction() as tx:
                _to_table(tx, self.path.parent, self._own, items, **row)

    def _spill(self, matches: Callable[[str], bool] | None = None, keep: int = 0) -> None:
        """Move own waiting messages (those ``matches`` accepts; all if None), beyond ``keep``, into the table."""
        self._to_table(self._own.take_waiting(matches, keep))

    # -- reading and settling ------------------------------------------------------------------
    def due(self, limit: int = 100, now: float | None = None, scope: Scope = ALL) -> list[Message]:
        """Pending messages (of ``scope``) whose next attempt is due, oldest first (a look: see :meth:`claim`)."""
        matches = _matcher(scope)
        with self._lock:
            self._take_journals()
            if matches is None:
                self._spill()
            cur = self._db.execute(
                "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                f" WHERE state = 'pending' AND next_attempt_at <= ? AND {scope[0]}"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (time.time() if now is None else now, *scope[1], limit),
            )
            rows = [_message(row) for row in cur.fetchall()]
        own = [_own_message(i) for i in self._own.waiting(matches)] if matches is not None else []
        return (rows + own)[:limit]

    def claim(self, limit: int = 100, lease: float = DEFAULT_LEASE, scope: Scope = ALL) -> list[Message]:
        """Take up to ``limit`` due messages (of ``scope``) for delivery, oldest first, for ``lease`` seconds.

        This object's own messages (put through it, not yet settled) are taken from memory,
        after the table's: no other claimer can have them (see :mod:`.own_journal`). The table's
        are claimed in one transaction: their next attempt moves to the lease's end, so no other
        process (or worker) sharing the file takes them meanwhile. The claimer settles each with
        :meth:`delivered`, :meth:`retry`, :meth:`dead` or :meth:`release`. A claimer that dies
        leaves them to be taken again: by :meth:`release_orphans` as soon as another process sees
        it gone, or when the lease ends (the same ``message_id``: a receiver that deduplicates sees
        it once).
        """
        me = claimer.identity()
        matches = _matcher(scope)
        with self._lock:
            todo = self._ended_journals()
            db = self._db
            # Own messages beyond what memory should hold (no worker keeps up), or all of them for a scope
            # that cannot be tested in Python: into the table, where any claimer sees them.
            self._spill(matches, _MAX_OWN if matches is not None else 0)
            db.execute("BEGIN IMMEDIATE")  # the file's write lock: no other claimer reads these rows meanwhile
            with _committed(db) as tx:
                if todo:
                    self._take(todo)  # the journals of ended processes, in the same transaction
                    tx.after.append(functools.partial(self._took, todo))
                now = time.time()
                rows = db.execute(
                    "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                    f" WHERE state = 'pending' AND next_attempt_at <= ? AND {scope[0]}"
                    " ORDER BY next_attempt_at, id LIMIT ?", (now, *scope[1], limit),
                ).fetchall()
                for start in range(0, len(rows), _IDS_PER_DELETE):
                    chunk = [row[0] for row in rows[start:start + _IDS_PER_DELETE]]
                    db.execute(f"UPDATE outbox SET next_attempt_at = ?, claimed_by = ? WHERE id IN "
                               f"({','.join('?' * len(chunk))})", [now + lease, me, *chunk])
        claimed = [_message(row) for row in rows]
        if matches is not None:
            claimed += [_own_message(i) for i in self._own.claim(matches, limit - len(claimed), time.time() + lease)]
        return claimed

    def _moved_rows(self, ids: Iterable[int]) -> list[tuple[str, str]]:
        """Rows of own messages handed to the table while in delivery (call with ``_lock``)."""
        return [row for i in ids if i < 0 and (row := self._moved.pop(i, None)) is not None]

    def release(self, ids: Sequence[int]) -> None:
        """Give claimed messages back, due now (they were not attempted)."""
        now = time.time()
        self._own.release(self._own.held(i for i in ids if i < 0))
        table = [int(i) for i in ids if i > 0]
        with self._lock:
            for mid, dest in self._moved_rows(ids):
                self._db.execute("UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                                 " AND message_id = ? AND destination = ?", (now, mid, dest))
            for start in range(0, len(table), _IDS_PER_DELETE):
                chunk = table[start:start + _IDS_PER_DELETE]
                self._db.execute(f"UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                                 f" AND id IN ({','.join('?' * len(chunk))})", [now, *chunk])

    def release_orphans(self, scope: Scope = ALL) -> int:
        """Give back, due now, the messages claimed by processes that have ended; how many.

        A process killed while it held a claim (SIGKILL, a crash, a worker replaced) would
        otherwise keep its messages until the lease ends; a starting worker calls this.
        """
        now = time.time()
        with self._lock:
            claimers = [row[0] for row in self._db.execute(
                "SELECT DISTINCT claimed_by FROM outbox WHERE state = 'pending' AND claimed_by IS NOT NULL"
                f" AND next_attempt_at > ? AND {scope[0]}", (now, *scope[1])).fetchall()]
        released = 0
        for gone in [c for c in claimers if claimer.has_ended(c)]:
            with self._lock:
                released += self._db.execute(
                    "UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                    f" AND claimed_by = ? AND {scope[0]}", (now, gone, *scope[1])).rowcount
        return released

    def next_due_in(self, scope: Scope = ALL) -> float | None:
        """Seconds until the next pending message is due (0 if one is due now), None if none is pending."""
        matches = _matcher(scope)
        if matches is not None and self._own.has_waiting(matches):
            return 0.0
        with self._lock:
            self._take_journals()
            if matches is None:
                self._spill()
            row = self._db.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                   scope[1]).fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, row[0] - time.time())

    def delivered(self, ids: Sequence[int]) -> None:
        """Remove delivered messages: one statement (one transaction) per chunk of ids, not one per id."""
        own = self._own.held(i for i in ids if i < 0)
        table = [int(i) for i in ids if i > 0]
        with self._lock:
            for mid, dest in self._moved_rows(ids):
                self._db.execute("DELETE FROM outbox WHERE state = 'pending' AND message_id = ? AND destination = ?",
                                 (mid, dest))
            for start in range(0, len(table), _IDS_PER_DELETE):
                chunk = table[start:start + _IDS_PER_DELETE]
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            if own:
                self._settled(own)

    def retry(self, id_: int, delay: float, error: str) -> None:
        with self._lock:
            if id_ < 0 and id_ not in self._moved:
                self._to_table(self._own.held([id_]), attempts=1, next_attempt_at=time.time() + delay,
                               error=error[:1000])
                return
            where, key = _row_of(id_, self._moved_rows([id_]))
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
            own = self._own.take_waiting(destination.__eq__)  # into the table, due at the circuit's next probe
            self._to_table(own, next_attempt_at=until)
            return cur.rowcount + len(own)

    def dead(self, id_: int, error: str) -> None:
        with self._lock:
            if id_ < 0 and id_ not in self._moved:
                self._to_table(self._own.held([id_]), state="dead", attempts=1, error=error[:1000])
                return
            where, key = _row_of(id_, self._moved_rows([id_]))
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ?, claimed_by = NULL"
                f" WHERE {where}",
                (error[:1000], *key),
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
        """Messages (of ``scope``) by state: ``pending`` and ``dead``.

        ``pending`` counts the table's and this object's own (put through it, not yet settled).
        Another running process's own are its to count; a journal left by a process that ended
        counts once taken, which a look does unless another process holds the file locked for
        more than a moment (a look never waits long).
        """
        matches = _matcher(scope)
        with self._lock:
            self._take_journals(wait=_LOOK_WAIT)
            rows = self._db.execute(f"SELECT state, COUNT(*) FROM outbox WHERE {scope[0]} GROUP BY state",
                                    scope[1]).fetchall()
        out = {"pending": 0, "dead": 0}
        out.update({state: n for state, n in rows})
        out["pending"] += self._own.count(matches) if matches is not None else self._own.count()
        return out

    def left(self, scope: Scope = ALL) -> int:
        """Messages (of ``scope``) this process leaves for the next start if it stops now.

        Its own (put through it, not yet settled), and the table's pending ones unless another
        running process shares the outbox (its journal is here): those are that process's to deliver.
        """
        matches = _matcher(scope)
        own = self._own.count(matches) if matches is not None else self._own.count()
        with self._lock:
            mine = self._own.writer.name
            retired = self._own.retired()
            others = [name for name in journal.journals(self.path) if name != mine and name not in retired]
            if any(not claimer.has_ended(journal.owner_of(name)) for name in others):
                return own
            try:
                row = self._db.execute(f"SELECT COUNT(*) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                       scope[1]).fetchone()
            except sqlite3.Error:
                return own
        return own + (row[0] if row else 0)

    def close(self) -> None:
        """Move this object's messages into the table and close the connection (both start again on next use).

        Messages still in delivery (a worker that could not finish by its deadline) go in claimed by
        this process, as the table's own claims are; their delivery settles them there. If the table
        cannot be written now (another process holds it locked), they wait in the journal: the next
        process to read the outbox after this one ends takes them.
        """
        with self._lock:
            try:
                if self._own.writer.name is None and not self._own.count() and not self._own.retired():
                    pass  # nothing of its own on disk or in hand: nothing to hand over
                elif self._begin(_LOOK_WAIT):
                    with _committed(self._db) as tx:
                        _hand_over(tx, self.path.parent, self._own, self._moved)
                else:
                    log.warning("%s: messages left in the journal for the next reader: the file is locked by"
                                " another process", self.path)
            except sqlite3.Error as exc:
                log.warning("%s: messages left in the journal for the next reader: %s", self.path, exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class _Transaction:
    """One write transaction, and what it changes outside SQLite: ``after`` it committed, ``undo`` if it did not.

    Files (a journal removed, a new one started) and memory (own messages settled) change only once
    the rows that make that safe are committed: a COMMIT that fails (a full disk) loses no message,
    and the messages it would have moved are put back as they were.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.after: list[Callable[[], object]] = []
        self.undo: list[Callable[[], object]] = []


@contextlib.contextmanager
def _committed(db: sqlite3.Connection) -> Iterator[_Transaction]:
    """Inside a transaction already begun: COMMIT after the body, then its ``after`` actions, in order; or, if the
    body or the COMMIT raised, ROLLBACK and its ``undo`` actions.

    SQLite may have rolled back already (a full disk: SQLITE_FULL ends the transaction); then the
    error that did it is raised, not a failed ROLLBACK's.
    """
    tx = _Transaction(db)
    try:
        yield tx
        db.execute("COMMIT")
    except BaseException:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        finally:
            for action in tx.undo:
                action()
        raise
    for action in tx.after:
        action()


def _note_settled(tx: _Transaction, folder: Path, own: OwnJournal, items: list[Item]) -> None:
    """In a write transaction: own items settled (delivered, or moved into the table by it): note how far each
    journal is settled; once it committed, mark them settled (:func:`_mark_settled`)."""
    for name, end in own.settled_to(items).items():
        tx.db.execute("INSERT OR REPLACE INTO outbox_journal (name, taken) VALUES (?, ?)", (name, end))
    tx.after.append(functools.partial(_mark_settled, tx.db, folder, own, items))


def _mark_settled(db: sqlite3.Connection, folder: Path, own: OwnJournal, items: list[Item]) -> None:
    """Once noted: the items settled in memory; a new file after a megabyte settled; done files removed."""
    progress = own.settle(items)
    if not progress:
        return
    mine = own.writer.name
    if mine is not None and progress.get(mine, 0) >= journal.ROTATE_BYTES:
        own.rotate()  # the next put starts a new file; this one goes once settled
    _remove_finished(db, folder, own)


def _remove_finished(db: sqlite3.Connection, folder: Path, own: OwnJournal) -> None:
    """Own journals retired and settled to their end go."""
    for name in own.finished():
        _remove_journal(db, folder, name)


def _remove_journal(db: sqlite3.Connection, folder: Path, name: str) -> None:
    """A journal all of whose lines are settled or in the table (committed): the file goes first, then its row.

    A crash or a full disk between leaves a row naming no file, which nothing reads.
    """
    try:
        os.unlink(folder / name)
    except FileNotFoundError:
        pass
    with contextlib.suppress(sqlite3.Error):
        db.execute("DELETE FROM outbox_journal WHERE name = ?", (name,))


def _to_table(tx: _Transaction, folder: Path, own: OwnJournal, items: list[Item], **row: Any) -> None:
    """In a write transaction: own items into the table (see :func:`_insert`), noted settled; if it does not
    commit, they go back to waiting."""
    if not items:
        return
    tx.undo.append(functools.partial(own.release, items))
    _insert(tx, items, **row)
    _note_settled(tx, folder, own, items)


def _insert(tx: _Transaction, items: list[Item], *, state: str = "pending", attempts: int = 0,
            next_attempt_at: float | None = None, error: str | None = None, claimed_by: str | None = None) -> None:
    """In a write transaction: a row for each own item.

    With ``claimed_by``, each row stays claimed by it until the item's own lease ends.
    """
    rows = [(i.message_id, i.destination, i.payload, i.lease_until if claimed_by else i.created_at
             if next_attempt_at is None else next_attempt_at, i.created_at, attempts, state, error, claimed_by)
            for i in items]
    for at in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[at:at + _ROWS_PER_INSERT]
        tx.db.execute(_insert_own_rows(len(chunk)), [value for r in chunk for value in r])


def _hand_over(tx: _Transaction, folder: Path, own: OwnJournal, moved: dict[int, tuple[str, str]] | None = None
               ) -> None:
    """In a write transaction: own waiting messages into the table; once it committed, with nothing left
    unsettled, the file goes.

    With ``moved``, the messages still in delivery go too, claimed by this process until their lease ends
    (``moved`` maps their handles to the rows, for when their delivery is settled).
    """
    claimed = own.take_claimed() if moved is not None else []  # first: the waiting ones are marked claimed when taken
    waiting = own.take_waiting()
    tx.undo.append(functools.partial(own.release, waiting))  # those in delivery stay with their worker
    _insert(tx, waiting)
    if moved is not None:
        _insert(tx, claimed, claimed_by=claimer.identity())
        tx.after.append(functools.partial(moved.update, {i.handle: (i.message_id, i.destination) for i in claimed}))
    _note_settled(tx, folder, own, waiting + claimed)
    tx.after.append(functools.partial(_retire_if_settled, tx.db, folder, own))


def _retire_if_settled(db: sqlite3.Connection, folder: Path, own: OwnJournal) -> None:
    """Once handed over: with nothing left unsettled, the journal is retired and its files go."""
    if own.settled_all:
        own.rotate()
        _remove_finished(db, folder, own)


def _hand_over_when_gone(path: Path, own: OwnJournal) -> None:
    """An outbox object that goes away (unreferenced, or its process ending) hands its waiting messages over."""
    if not own.waiting() and own.writer.name is None:
        return
    try:
        db = sqlite3.connect(str(path), timeout=_LOOK_WAIT, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        with _committed(db) as tx:
            _hand_over(tx, path.parent, own)
    except sqlite3.Error as exc:
        log.warning("%s: messages left in the journal for the next reader: %s", path, exc)
    finally:
        db.close()


class OutboxView:
    """One sink's part of a shared :class:`Outbox`: puts go to the file, queries see only its scope."""

    def __init__(self, outbox: Outbox, scope: Scope) -> None:
        self.outbox = outbox
        self.scope = scope
        self.path = outbox.path

    def put(self, items: Iterable[tuple[str, str, Any]], *, required: bool = True) -> int:
        return self.outbox.put(items, required=required)

    def due(self, limit: int = 100, now: float | None = None) -> list[Message]:
        return self.outbox.due(limit, now, self.scope)

    def claim(self, limit: int = 100, lease: float = DEFAULT_LEASE) -> list[Message]:
        return self.outbox.claim(limit, lease, self.scope)

    def release(self, ids: Sequence[int]) -> None:
        self.outbox.release(ids)

    def release_orphans(self) -> int:
        return self.outbox.release_orphans(self.scope)

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

    def left(self) -> int:
        return self.outbox.left(self.scope)

    def close(self) -> None:
        self.outbox.close()


def _unavailable(path: Path, exc: BaseException) -> RecordsUnavailableError:
    """The error for an outbox that cannot be opened: naming its folder as read-only when it is."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if read_only(folder):
        return RecordsUnavailableError(str(path), f"its folder {folder} is read-only")
    return RecordsUnavailableError(str(path), f"{type(exc).__name__}: {exc}")


def _add_claimed_by(db: sqlite3.Connection) -> None:
    """Outboxes made before claims named their claimer get the column (NULL: claimed by no one known)."""
    if "claimed_by" in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}:
        return
    try:
        db.execute("ALTER TABLE outbox ADD COLUMN claimed_by TEXT")
    except sqlite3.OperationalError as exc:  # another process added it meanwhile
        if "duplicate column" not in str(exc):
            raise


def _row_of(id_: int, moved: list[tuple[str, str]]) -> tuple[str, tuple[Any, ...]]:
    """The SQL condition naming a row: by id, or for an own message handed over in delivery, by its key."""
    if moved:
        return "state = 'pending' AND message_id = ? AND destination = ?", moved[0]
    return "id = ?", (id_,)


def _own_message(item: Item) -> Message:
    return Message(item.handle, item.message_id, item.destination, fastjson.loads(item.payload), 0, item.created_at,
                   None, "pending")


def _message(row: tuple[Any, ...]) -> Message:
    return Message(row[0], row[1], row[2], fastjson.loads(row[3]), row[4], row[5], row[6], row[7])


