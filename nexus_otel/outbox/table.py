"""The outbox's SQLite table: its schema, write transactions, and moving local messages into it.

The table holds every message another process (or a later start) may have to
deliver: retries, dead letters, messages of a destination whose circuit is
open, spills beyond what memory should hold, everything at a close, and the
lines recovered from journals whose process ended. A message delivered at its
first attempt never enters it; for those the table keeps only each journal's
checkpoint (``outbox_journal.taken``: the offset up to which every line's
messages are done).

Files (a journal removed, a new one started) and memory (local messages
marked done) change only once the rows that make that safe are committed
(:class:`Transaction`): a COMMIT that fails (a full disk) loses no message.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import fastjson
from . import journal, owners
from .local import LocalMessage, LocalMessages
from .message import LocalHandle, Message, RowHandle

HandedOver = dict[LocalHandle, tuple[str, str]]
"""Local messages handed to the table while in delivery: handle -> the row's key (message_id, destination)."""

log = logging.getLogger("nexus_otel.outbox")

READ_WAIT = 0.2
"""Seconds a read that must not hold anything up (counts, a close) waits for another process's lock before it
reads the table as it is (or leaves the hand-over to the next reader)."""

SCHEMA = """
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


# Rows enter the table from an ended process's journal (not twice: its process may have moved some in
# already, after its last checkpoint), or from this object's local messages (a retry, a
# dead letter, a circuit held open, a spill, a close). Outboxes made by earlier versions keep their
# uniqueness index on message_id; OR IGNORE keeps its meaning there.
INSERT_NEW = ("INSERT INTO outbox (message_id, destination, payload, next_attempt_at, created_at)"
               " SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE message_id = ? AND destination = ?)")
_INSERT_OWN = ("INSERT OR IGNORE INTO outbox (message_id, destination, payload, next_attempt_at, created_at, attempts,"
               " state, last_error, claimed_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_ROWS_PER_INSERT = 100  # 900 bound variables: well under SQLite's limit (32,766)


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_own_rows(n: int) -> str:
    return _INSERT_OWN + ", (?, ?, ?, ?, ?, ?, ?, ?, ?)" * (n - 1)


class Transaction:
    """One write transaction, and what it changes outside SQLite: ``after`` it committed, ``undo`` if it did not.

    Files (a journal removed, a new one started) and memory (local messages done) change only once
    the rows that make that safe are committed: a COMMIT that fails (a full disk) loses no message,
    and the messages it would have moved are put back as they were.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.after: list[Callable[[], object]] = []
        self.undo: list[Callable[[], object]] = []


@contextlib.contextmanager
def committed(db: sqlite3.Connection) -> Iterator[Transaction]:
    """Inside a transaction already begun: COMMIT after the body, then its ``after`` actions, in order; or, if the
    body or the COMMIT raised, ROLLBACK and its ``undo`` actions.

    SQLite may have rolled back already (a full disk: SQLITE_FULL ends the transaction); then the
    error that did it is raised, not a failed ROLLBACK's.
    """
    tx = Transaction(db)
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


def note_checkpoint(tx: Transaction, folder: Path, own: LocalMessages, items: list[LocalMessage]) -> None:
    """In a write transaction: local messages done (acked, or moved into the table by it): write each journal's
    new checkpoint; once it committed, mark them done (:func:`_checkpointed`)."""
    for name, end in own.checkpoint_after(items).items():
        tx.db.execute("INSERT OR REPLACE INTO outbox_journal (name, taken) VALUES (?, ?)", (name, end))
    tx.after.append(functools.partial(_checkpointed, tx.db, folder, own, items))


def _checkpointed(db: sqlite3.Connection, folder: Path, own: LocalMessages, items: list[LocalMessage]) -> None:
    """Once committed: the messages done in memory; a new file after a megabyte checkpointed; finished files removed."""
    progress = own.finish(items)
    if not progress:
        return
    mine = own.writer.name
    if mine is not None and progress.get(mine, 0) >= journal.ROTATE_BYTES:
        own.rotate()  # the next enqueue starts a new file; this one goes once done
    remove_finished(db, folder, own)


def remove_finished(db: sqlite3.Connection, folder: Path, own: LocalMessages) -> None:
    """This object's journals retired and checkpointed to their end go."""
    for name in own.finished():
        remove_journal(db, folder, name)


def remove_journal(db: sqlite3.Connection, folder: Path, name: str) -> None:
    """A journal all of whose lines are done or in the table (committed): the file goes first, then its row.

    A crash or a full disk between leaves a row naming no file, which nothing reads.
    """
    try:
        os.unlink(folder / name)
    except FileNotFoundError:
        pass
    with contextlib.suppress(sqlite3.Error):
        db.execute("DELETE FROM outbox_journal WHERE name = ?", (name,))


def to_table(tx: Transaction, folder: Path, own: LocalMessages, items: list[LocalMessage], **row: Any) -> None:
    """In a write transaction: local messages into the table (see :func:`insert`), checkpointed; if it does not
    commit, they go back to waiting."""
    if not items:
        return
    tx.undo.append(functools.partial(own.release, items))
    insert(tx, items, **row)
    note_checkpoint(tx, folder, own, items)


def insert(tx: Transaction, items: list[LocalMessage], *, state: str = "pending", attempts: int = 0,
           next_attempt_at: float | None = None, error: str | None = None, claimed_by: str | None = None) -> None:
    """In a write transaction: a row for each local message.

    With ``claimed_by``, each row stays leased to it until the message's lease ends.
    """
    rows = [(i.message_id, i.destination, i.payload, i.lease_until if claimed_by else i.created_at
             if next_attempt_at is None else next_attempt_at, i.created_at, attempts, state, error, claimed_by)
            for i in items]
    for at in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[at:at + _ROWS_PER_INSERT]
        tx.db.execute(_insert_own_rows(len(chunk)), [value for r in chunk for value in r])


def hand_over(tx: Transaction, folder: Path, own: LocalMessages, moved: HandedOver | None = None) -> None:
    """In a write transaction: local waiting messages into the table; once it committed, with nothing left
    not done, the file goes.

    With ``moved``, the messages still in delivery go too, leased to this process until their lease ends
    (``moved`` maps their handles to the rows, for when their delivery is acked, retried or released).
    """
    claimed = own.take_leased() if moved is not None else []  # first: the waiting ones are marked leased when taken
    waiting = own.take_waiting()
    tx.undo.append(functools.partial(own.release, waiting))  # those in delivery stay with their worker
    insert(tx, waiting)
    if moved is not None:
        insert(tx, claimed, claimed_by=owners.identity())
        tx.after.append(functools.partial(moved.update, {i.handle: (i.message_id, i.destination) for i in claimed}))
    note_checkpoint(tx, folder, own, waiting + claimed)
    tx.after.append(functools.partial(retire_if_done, tx.db, folder, own))


def retire_if_done(db: sqlite3.Connection, folder: Path, own: LocalMessages) -> None:
    """Once handed over: with nothing left not done, the journal is retired and its files go."""
    if own.all_done:
        own.rotate()
        remove_finished(db, folder, own)


def hand_over_when_gone(path: Path, own: LocalMessages) -> None:
    """An outbox object that goes away (unreferenced, or its process ending) hands its waiting messages over."""
    if not own.waiting() and own.writer.name is None:
        return
    try:
        db = sqlite3.connect(str(path), timeout=READ_WAIT, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        db.execute("BEGIN IMMEDIATE")
        with committed(db) as tx:
            hand_over(tx, path.parent, own)
    except sqlite3.Error as exc:
        log.warning("%s: messages left in the journal for the next reader: %s", path, exc)
    finally:
        db.close()


def add_claimed_by(db: sqlite3.Connection) -> None:
    """Outboxes made before leases named their holder get the column (NULL: leased by no one known)."""
    if "claimed_by" in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}:
        return
    try:
        db.execute("ALTER TABLE outbox ADD COLUMN claimed_by TEXT")
    except sqlite3.OperationalError as exc:  # another process added it meanwhile
        if "duplicate column" not in str(exc):
            raise


def local_message(item: LocalMessage) -> Message:
    """A local message as a worker leases it."""
    return Message(item.handle, item.message_id, item.destination, fastjson.loads(item.payload), 0, item.created_at,
                   None, "pending")


ROW_COLUMNS = "id, message_id, destination, payload, attempts, created_at, last_error, state"
"""The columns :func:`row_message` reads, in its order."""


def row_message(row: tuple[Any, ...]) -> Message:
    """A row (:data:`ROW_COLUMNS`) as a message."""
    return Message(RowHandle(row[0]), row[1], row[2], fastjson.loads(row[3]), row[4], row[5], row[6], row[7])
