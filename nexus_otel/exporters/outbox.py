"""A durable outbox: messages kept in a SQLite file until delivered (see ``delivery`` for who delivers them).

Record sinks that talk to something that can be down (a webhook receiver, a
database) put their messages here on the workflow's thread, and ``put``
returns only once they are written: a process crash after that loses nothing
(see ``docs/records.md`` for power loss). A put is one line appended to this
process's journal (:mod:`.journal`), not a SQLite transaction: the workflow's
thread never waits for the shared file's lock, and pays one ``write``. Whoever
reads the outbox (a worker's claim, the counts, the CLI) first moves every
journal's new lines into the table, so readers in any process see every
message put before they read.

Sinks that share a file (the built-in ones do, by default) each see their own
messages through an :class:`OutboxView`. A
:class:`~nexus_otel.exporters.delivery.OutboxWorker` delivers them. Because the
queue is a file, a restart or a long outage loses nothing: the next process
picks up where the last one stopped. Several processes may share the file
(the workers of ``serve --workers N``): a message is claimed by one of them at
a time (:meth:`Outbox.claim`), so none is delivered twice.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fastjson
from . import claimer, journal

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
CREATE TABLE IF NOT EXISTS outbox_journal (name TEXT PRIMARY KEY, taken INTEGER NOT NULL);
"""


Scope = tuple[str, tuple[Any, ...]]
"""Which messages a sink sees in a shared outbox: an SQL condition on ``destination`` and its parameters."""
ALL: Scope = ("1 = 1", ())
WEBHOOK_SCOPE: Scope = ("(destination LIKE 'http://%' OR destination LIKE 'https://%')", ())
"""Webhook destinations are URLs; other sinks sharing an outbox use plain names."""


def destination_scope(name: str) -> Scope:
    return ("destination = ?", (name,))


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


# No uniqueness index on message_id (outboxes made by earlier versions keep theirs, and OR IGNORE keeps its
# meaning there).
_INSERT = ("INSERT OR IGNORE INTO outbox (message_id, destination, payload, next_attempt_at, created_at)"
           " VALUES (?, ?, ?, ?, ?)")


_ROWS_PER_INSERT = 100  # 500 bound variables: well under SQLite's limit
DEFAULT_LEASE = 60.0
"""Seconds a claimed message is kept from other claimers (longer than any one delivery takes)."""
_IDS_PER_DELETE = 500  # well under SQLite's limit on bound variables


_ALIVE_RECHECK = 1.0  # seconds between checks that another process writing a journal still runs
_LOOK_WAIT = 0.2  # seconds a look (counts, closing) waits for another process's lock before it reads as is


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_rows(n: int) -> str:
    return _INSERT + ", (?, ?, ?, ?, ?)" * (n - 1)


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._deferred = threading.local()
        self._writer = journal.JournalWriter(self.path)
        self._taken: dict[str, int] = {}  # journal name -> bytes known to be in the table (a hint: the table decides)
        self._retired: set[str] = set()  # this object's journals no longer written: removed once taken
        self._alive: dict[str, float] = {}  # another writer's journal -> when its process was last seen running
        with self._lock:
            self._db.executescript(_SCHEMA)
            _add_claimed_by(self._db)

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
        """Queue ``(message_id, destination, payload)`` items, written on return; how many were queued.

        A payload is anything JSON can encode, or a ``str`` that already is JSON.
        Raises what the write raised (the disk is full, the folder is gone).
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return 0
        deferred = getattr(self._deferred, "items", None)
        if deferred is not None:  # inside defer(): written, with the rest, when it ends
            deferred.extend(batch)
            return len(batch)
        self._writer.append(time.time(), [(mid, dest, _encoded(payload)) for mid, dest, payload in batch])
        return len(batch)

    def defer(self) -> bool:
        """Hold this thread's puts until :meth:`commit_deferred` (one write for all); false if already held."""
        if getattr(self._deferred, "items", None) is not None:
            return False
        self._deferred.items = []
        return True

    def commit_deferred(self) -> int:
        """Write what this thread put since :meth:`defer` (raises what the write raised)."""
        items = self._deferred.items
        self._deferred.items = None
        return self.put(items) if items else 0

    def view(self, scope: Scope) -> OutboxView:
        """This outbox seen through ``scope``: what one sink sharing the file reads and counts."""
        return OutboxView(self, scope)

    def _take_journals(self, wait: float | None = None) -> bool:
        """Move the journals' new lines into the table, in a transaction of its own (call with ``_lock``).

        ``wait``: at most this many seconds for another process's lock on the file (instead of
        ``busy_timeout``), after which nothing is taken and False is returned: for looks (counts,
        closing) that must not hold up a shutdown or a scrape. True once taken.
        """
        todo = self._journals_with_news()
        if not todo:
            return True
        db = self._db
        if wait is not None:
            db.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            db.execute("BEGIN IMMEDIATE")  # the file's write lock: one taker at a time, across processes
        except sqlite3.OperationalError:
            if wait is None:
                raise
            return False  # locked: what the table holds is what the caller sees this time
        finally:
            if wait is not None:
                db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        try:
            took = self._take(todo)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._took(*took)
        return True

    def _journals_with_news(self) -> list[str]:
        """The journals with lines not yet taken, or no longer written (to be removed once taken)."""
        names = journal.journals(self.path)
        for gone in [name for name in self._taken if name not in names]:
            self._taken.pop(gone, None)
            self._alive.pop(gone, None)
        now = time.monotonic()
        return [name for name in names if self._has_news(name, now)]

    def _take(self, names: list[str]) -> tuple[dict[str, int], list[str]]:
        """Inside a write transaction: insert the new lines of journals ``names``, record how far each was taken.

        Returns how far each was taken and which are finished (no longer written, all taken): the
        caller passes both to :meth:`_took` once the transaction has committed.
        """
        db = self._db
        finished: list[str] = []
        taken_now: dict[str, int] = {}
        rows: list[tuple[Any, ...]] = []
        for name in names:
            row = db.execute("SELECT taken FROM outbox_journal WHERE name = ?", (name,)).fetchone()
            start = row[0] if row else 0
            data = journal.read_from(self.path.parent / name, start)
            decoded = journal.decode(data)
            end = start + decoded.taken
            written = name == self._writer.name or (name not in self._retired and name in self._alive)
            if decoded.corrupt:
                log.error("%s: %d lines of journal %s failed their checksum and were skipped (a torn write)",
                          self.path, decoded.corrupt, name)
            if not written:
                if len(data) > decoded.taken:
                    log.error("%s: journal %s ends in %d bytes of a line its writer never finished; dropped",
                              self.path, name, len(data) - decoded.taken)
                end = start + len(data)
                finished.append(name)
            rows += journal.rows_of(decoded.entries)
            if end != start:
                db.execute("INSERT OR REPLACE INTO outbox_journal (name, taken) VALUES (?, ?)", (name, end))
            taken_now[name] = end
        for at in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[at:at + _ROWS_PER_INSERT]
            db.execute(_insert_rows(len(chunk)), [value for r in chunk for value in r])
        return taken_now, finished

    def _took(self, taken_now: dict[str, int], finished: list[str]) -> None:
        """After :meth:`_take`'s transaction committed: remember how far, remove finished journals, start anew."""
        self._taken.update(taken_now)
        for name in finished:  # all of it is in the table: the file goes first, then its row
            try:
                os.unlink(self.path.parent / name)
            except FileNotFoundError:
                pass
            self._db.execute("DELETE FROM outbox_journal WHERE name = ?", (name,))
            self._taken.pop(name, None)
            self._retired.discard(name)
            self._alive.pop(name, None)
        mine = self._writer.name
        if mine is not None and self._taken.get(mine, 0) >= journal.ROTATE_BYTES:
            retired = self._writer.retire()  # the next put starts a new file; this one goes once taken
            if retired is not None:
                self._retired.add(retired)

    def _has_news(self, name: str, now: float) -> bool:
        """Whether journal ``name`` has lines not yet taken, or is no longer written (to be removed)."""
        size = journal.size_of(self.path.parent / name)
        if size is None:
            return False
        if name == self._writer.name:
            return size != self._taken.get(name)
        if name in self._retired:
            return True
        news = size != self._taken.get(name)
        checked = self._alive.get(name)
        if news or checked is None or now - checked >= _ALIVE_RECHECK:  # its writer may have ended since
            if claimer.has_ended(journal.owner_of(name)):
                self._alive.pop(name, None)
                return True
            self._alive[name] = now
        return news

    def due(self, limit: int = 100, now: float | None = None, scope: Scope = ALL) -> list[Message]:
        """Pending messages (of ``scope``) whose next attempt is due, oldest first (a look: see :meth:`claim`)."""
        with self._lock:
            self._take_journals()
            cur = self._db.execute(
                "SELECT id, message_id, destination, payload, attempts, created_at, last_error, state FROM outbox"
                f" WHERE state = 'pending' AND next_attempt_at <= ? AND {scope[0]}"
                " ORDER BY next_attempt_at, id LIMIT ?",
                (time.time() if now is None else now, *scope[1], limit),
            )
            return [_message(row) for row in cur.fetchall()]

    def claim(self, limit: int = 100, lease: float = DEFAULT_LEASE, scope: Scope = ALL) -> list[Message]:
        """Take up to ``limit`` due messages (of ``scope``) for delivery, oldest first, for ``lease`` seconds.

        In one transaction, the messages' next attempt moves to the lease's end,
        so no other process (or worker) sharing the file takes them meanwhile. The claimer settles
        each with :meth:`delivered`, :meth:`retry`, :meth:`dead` or :meth:`release`. A claimer that
        dies leaves them to be taken again: by :meth:`release_orphans` as soon as another process
        sees it gone, or when the lease ends (the same ``message_id``: a receiver that deduplicates
        sees it once).
        """
        me = claimer.identity()
        with self._lock:
            todo = self._journals_with_news()
            db = self._db
            db.execute("BEGIN IMMEDIATE")  # the file's write lock: no other claimer reads these rows meanwhile
            try:
                took = self._take(todo) if todo else None  # the journals' new lines, in the same transaction
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
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if took is not None:
                self._took(*took)
        return [_message(row) for row in rows]

    def release(self, ids: Sequence[int]) -> None:
        """Give claimed messages back, due now (they were not attempted)."""
        now = time.time()
        with self._lock:
            for start in range(0, len(ids), _IDS_PER_DELETE):
                chunk = [int(i) for i in ids[start:start + _IDS_PER_DELETE]]
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
        with self._lock:
            self._take_journals()
            row = self._db.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND {scope[0]}",
                                   scope[1]).fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, row[0] - time.time())

    def delivered(self, ids: Sequence[int]) -> None:
        """Remove delivered messages: one statement (one transaction) per chunk of ids, not one per id."""
        with self._lock:
            for start in range(0, len(ids), _IDS_PER_DELETE):
                chunk = [int(i) for i in ids[start:start + _IDS_PER_DELETE]]
                self._db.execute(f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)

    def retry(self, id_: int, delay: float, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, claimed_by = NULL"
                " WHERE id = ?",
                (time.time() + delay, error[:1000], id_),
            )

    def hold(self, destination: str, until: float) -> int:
        """Postpone every pending message to ``destination`` due before ``until`` (its circuit is open)."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE outbox SET next_attempt_at = ?, claimed_by = NULL WHERE state = 'pending'"
                " AND destination = ? AND next_attempt_at < ?", (until, destination, until),
            )
            return cur.rowcount

    def dead(self, id_: int, error: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = attempts + 1, state = 'dead', last_error = ?, claimed_by = NULL"
                " WHERE id = ?",
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
        """Messages (of ``scope``) by state: ``pending`` and ``dead``.

        Messages still in a journal count once taken; if another process holds the file locked for
        more than a moment, the counts are the table's (a look never waits long).
        """
        with self._lock:
            self._take_journals(wait=_LOOK_WAIT)
            rows = self._db.execute(f"SELECT state, COUNT(*) FROM outbox WHERE {scope[0]} GROUP BY state",
                                    scope[1]).fetchall()
        out = {"pending": 0, "dead": 0}
        out.update({state: n for state, n in rows})
        return out

    def close(self) -> None:
        """Move this object's journal into the table and close the connection (both start again on next use).

        If the table cannot be written now (another process holds it locked), the journal
        stays for the next reader.
        """
        with self._lock:
            retired = self._writer.retire()
            if retired is not None:
                self._retired.add(retired)
            if self._retired:
                try:
                    taken = self._take_journals(wait=_LOOK_WAIT)
                except sqlite3.Error as exc:
                    taken, reason = False, str(exc)
                else:
                    reason = "the file is locked by another process"
                if not taken:
                    log.warning("%s: journal left for the next reader: %s", self.path, reason)
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

    def close(self) -> None:
        self.outbox.close()


def _add_claimed_by(db: sqlite3.Connection) -> None:
    """Outboxes made before claims named their claimer get the column (NULL: claimed by no one known)."""
    if "claimed_by" in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}:
        return
    try:
        db.execute("ALTER TABLE outbox ADD COLUMN claimed_by TEXT")
    except sqlite3.OperationalError as exc:  # another process added it meanwhile
        if "duplicate column" not in str(exc):
            raise


def _message(row: tuple[Any, ...]) -> Message:
    return Message(row[0], row[1], row[2], fastjson.loads(row[3]), row[4], row[5], row[6], row[7])


