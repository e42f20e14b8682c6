"""The shared outbox: the same queue as :class:`~.queue.Outbox`, in a PostgreSQL table every replica reads.

With ``NEXUS_OTEL_OUTBOX_URL=postgresql://...`` (or ``Nexus(outbox=...)``)
the durable sinks of every process and every pod queue their messages in one
table, and any replica's worker delivers any message: a pod needs no volume
for its records, a pod killed mid-delivery or scaled away leaves nothing on
its disk, and the backlog is seen in one place.

- **Enqueue**: committed in PostgreSQL before the execution returns. Concurrent
  executions share one transaction (:mod:`.group_commit`): a lone execution
  pays one round trip and one commit. A write the database cannot take (it is
  down, unreachable, out of space) raises
  :class:`~nexus_otel.errors.RecordsUnavailableError`, and marks the outbox
  unwritable until a probe (an enqueue rolled back, once a second at most) passes: the
  same fail-closed rule as the local outbox on a full disk.
- **Lease**: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``
  moves the messages' next attempt to the lease's end and names this process:
  two workers never lease one message, and neither waits for the other's
  rows. A worker that dies mid-delivery leaves its messages due again when the
  lease ends (within seconds on the same host, in the same PID namespace:
  :meth:`release_orphans`, which every worker calls every 10 s, sees the
  process gone).
- **Times** are the database's clock (``clock_timestamp()``), so replicas whose
  clocks differ agree on what is due.
- **One transaction with the audit row**: a sink whose rows go to the same
  database (``DatabasePlugin`` on it) registers a writer with :meth:`join`;
  its messages are then written by that writer inside the enqueue's
  transaction instead of being queued (the row and the other sinks' messages
  of the execution commit together, or not at all).

The table (``nexus_otel_outbox``) is created if missing. Its rows are the
local table's (``docs/records.md``, "The outbox's states"): ``pending``
(leased when ``claimed_by`` is set and its next attempt lies ahead) or
``dead``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .. import fastjson
from ..errors import ConfigurationError, RecordsUnavailableError, UsageError
from . import owners
from .deferred import Deferred, DeferredEnqueues
from .group_commit import GroupCommit
from .message import Handle, LocalHandle, Message, RowHandle, as_handle
from .scope import ALL, Scope
from .view import DEFAULT_LEASE, OutboxView
from .writable import Writability

log = logging.getLogger("nexus_otel.outbox")

URL_ENV = "NEXUS_OTEL_OUTBOX_URL"
"""The environment variable naming a shared outbox's database."""
TABLE = "nexus_otel_outbox"
SCHEMES = ("postgresql", "postgres")
_NOW = "extract(epoch from clock_timestamp())::float8"
_COLUMNS = "id, message_id, destination, payload, attempts, created_at, last_error, state"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id              BIGSERIAL PRIMARY KEY,
    message_id      TEXT NOT NULL,
    destination     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    last_error      TEXT,
    claimed_by      TEXT
);
CREATE INDEX IF NOT EXISTS {TABLE}_due ON {TABLE} (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS {TABLE}_dead ON {TABLE} (id) WHERE state = 'dead'
"""
_VALUES_ROWS = 16
"""Groups up to this many messages are inserted with a VALUES list (cheaper to send than arrays: a lone
execution's put costs about 40 % less CPU); larger ones with one array per column."""
_INSERT = (f"INSERT INTO {TABLE} (message_id, destination, payload, created_at, next_attempt_at)"
           f" SELECT m, d, p, {_NOW}, {_NOW} FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(m, d, p)")


@functools.lru_cache(maxsize=_VALUES_ROWS)
def _insert_values(n: int) -> str:
    row = f"(%s, %s, %s, {_NOW}, {_NOW})"
    return (f"INSERT INTO {TABLE} (message_id, destination, payload, created_at, next_attempt_at)"
            f" VALUES {', '.join([row] * n)}")


def _insert_statement(rows: list[tuple[str, str, str]]) -> tuple[str, list[Any]]:
    """The INSERT of ``rows`` and its parameters."""
    if len(rows) <= _VALUES_ROWS:
        return _insert_values(len(rows)), [value for row in rows for value in row]
    return _INSERT, [[r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]]


_STATEMENT_TIMEOUT_MS = 10_000
"""A statement the database does not finish in this long fails (a lock held by a stuck session, say)."""

JoinedStatement = Callable[[list[str]], tuple[str, Sequence[Any]]]
"""The statement (one INSERT, its parameters) that writes one destination's payloads with the enqueue."""


@dataclass(frozen=True)
class _Joined:
    statement: JoinedStatement
    prepare: Callable[[Any], None] | None
    committed: Callable[[int], None] | None
    probe: str | None


def safe_url(url: str) -> str:
    """The URL without its password (in its user part or its query), for logs, errors and metric attributes."""
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
        parts = parts._replace(query=urlencode(query, safe="*"))
    return parts.geturl()


def connect(url: str, timeout: float, statement_timeout_ms: int = _STATEMENT_TIMEOUT_MS) -> Any:
    """An autocommit psycopg connection to ``url`` that gives up on a peer gone silent within about ``timeout``
    seconds and on a statement after ``statement_timeout_ms``; the URL's own options (a search_path) kept."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url).get("options")
    options = " ".join(filter(None, [str(given or ""), f"-c statement_timeout={statement_timeout_ms}"]))
    return psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)),
                           # a peer that vanished (its host gone, a partition) is noticed in seconds
                           keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
                           tcp_user_timeout=int(timeout * 1000), options=options)


def masked_reason(url: str, exc: BaseException) -> str:
    """The first line of ``exc``'s text with ``url``'s password masked, also the parts of it the driver may
    quote (an unescaped ``@`` in a password makes the rest of it look like the host name)."""
    lines = str(exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    try:
        password = urlsplit(url).password or ""
    except ValueError:
        password = ""
    for secret in sorted({password, *re.split(r"[@:/]", password)}, key=len, reverse=True):
        if len(secret) >= 3:
            reason = reason.replace(secret, "***")
    return reason


def is_url(value: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL: a shared outbox, not a file."""
    return isinstance(value, str) and urlsplit(value).scheme in SCHEMES


def _render(scope: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """A scope's condition for psycopg: its ``?`` placeholders as ``%s`` (and a literal ``%`` doubled)."""
    return scope[0].replace("%", "%%").replace("?", "%s"), tuple(scope[1])


def _encoded(payload: Any) -> str:
    return payload if isinstance(payload, str) else fastjson.dumps(payload)


def _row_message(row: tuple[Any, ...]) -> Message:
    id_, message_id, destination, payload, attempts, created_at, last_error, state = row
    return Message(RowHandle(id_), message_id, destination, fastjson.loads(payload), attempts, created_at,
                   last_error, state)


def _rows(handles: Iterable[Handle | int]) -> list[int]:
    """Row ids of ``handles`` (a shared outbox holds nothing in memory: every message is a row)."""
    rows = []
    for value in handles:
        handle = as_handle(value)
        if isinstance(handle, LocalHandle):
            raise UsageError(f"not a message of a shared outbox: {handle} (give back the handle it leased)")
        rows.append(handle.row)
    return rows


class PostgresOutbox(DeferredEnqueues):
    """A durable queue in a PostgreSQL table shared by every process that names the same database.

    It answers to the operations of :class:`~.queue.Outbox` (enqueue, lease, ack, retry, dead_letter,
    release, hold, replay, counts, ...), so sinks, workers and ``nexus-otel webhooks`` use either.
    ``connect_timeout`` bounds a connection attempt; a statement is cut at 10 s.
    """

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        if not is_url(url):
            raise ConfigurationError(URL_ENV, safe_url(str(url)), "a postgresql:// URL")
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError(URL_ENV, safe_url(url), 'psycopg 3 installed for a shared outbox'
                                     ' (pip install "nexus-otel[postgres]")') from exc
        self.url = url
        self.path = safe_url(url)
        """What logs, errors and metrics call this outbox (the URL without its password)."""
        self.connect_timeout = connect_timeout
        self.writable = Writability(self.path, probe=self._probe)
        """Whether enqueues can be committed now (one that could not be marks it; a probe clears it)."""
        self._committer: GroupCommit[tuple[str, str, str]] = GroupCommit(self._insert, alone=_refused_value)
        self._writing_since: float | None = None  # while a group's write runs (the watchdog's look)
        self.write_limit = _WRITE_LIMIT
        """Seconds a group's write may run before its connection is cut (:func:`_watch`)."""
        self._watchdog: threading.Thread | None = None
        self._enqueue_conn: Any = None  # the writing caller's (one at a time: the group commit's)
        self._lock = threading.Lock()
        self._conn: Any = None  # the workers' and readers' (under _lock)
        self._deferred = Deferred()
        self._joined: dict[str, _Joined] = {}
        self._unprepared: set[str] = set()  # joined destinations whose prepare has not yet committed
        self._schema_ready = False
        self._pid = os.getpid()
        self._probe_lock = threading.Lock()
        self._probing = False
        try:
            with self._lock:
                self._db()
        except Exception as exc:  # the database is down as the app starts: it starts, and enqueues fail closed
            self.writable.mark_unwritable(Exception(masked_reason(url, exc)))

    # -- connections -----------------------------------------------------------------------------
    def _connect(self) -> Any:
        conn = connect(self.url, self.connect_timeout)
        if not self._schema_ready:
            try:
                # Made only if missing: a role that may write the table but not create in its schema uses it as is.
                row = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
                if row is None or row[0] is None:
                    with conn.transaction():
                        conn.execute(f"SELECT pg_advisory_xact_lock(hashtext('{TABLE}'))")  # replicas start together
                        conn.execute(_SCHEMA)
            except Exception:
                conn.close()
                raise
            self._schema_ready = True
        return conn

    def _forked(self) -> None:
        """In a forked child: the parent's connections are the parent's (closing them would end its sessions)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._conn = self._enqueue_conn = None  # let go of, not closed
            self._lock = threading.Lock()
            self._probe_lock = threading.Lock()
            self._probing = False  # the parent's probe thread is not the child's
            self._committer = GroupCommit(self._insert, alone=_refused_value)
            self._watchdog = None

    def _db(self) -> Any:
        """The readers' connection, opened on first use and again after a failure (call with ``_lock``)."""
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _run(self, sql: str, params: Sequence[Any] = (), *, fetch: bool = False, again: bool = True) -> Any:
        """One statement on the readers' connection: its rows (``fetch``) or its row count.

        A connection that was open already and fails at once (its session ended while idle: a server
        restart, a proxy's idle cut) is replaced and the statement run once more, unless ``again`` is false
        (a statement that must not apply twice should its first answer have been lost: a lease, an attempt).
        """
        import psycopg

        self._forked()
        with self._lock:
            reused = self._conn is not None and not self._conn.closed
            started = time.monotonic()
            for attempt in (1, 2):
                try:
                    cur = self._db().execute(sql, params)
                    return cur.fetchall() if fetch else cur.rowcount
                except psycopg.OperationalError:
                    self._drop("_conn")
                    if attempt == 2 or not again or not reused or time.monotonic() - started > 1.0:
                        raise
                except Exception:
                    self._drop("_conn")
                    raise

    def _drop(self, which: str) -> None:
        conn = getattr(self, which)
        setattr(self, which, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _probe(self) -> str | None:
        """Start a probe of the database in the background; why it is unwritable until that probe passes.

        Whoever asks first each second pays for the probe (an execution being refused, a scrape): against
        a database that does not answer at all (a partition) a probe waits for ``connect_timeout``, so it
        runs on a thread of its own, and clears the mark (:meth:`Writability.write_succeeded`) when it passes.
        """
        with self._probe_lock:
            if not self._probing:
                self._probing = True
                threading.Thread(target=self._probe_in_background, name="nexus-otel-outbox-probe",
                                 daemon=True).start()
        return self.writable.error or "probing the database"

    def _probe_in_background(self) -> None:
        try:
            problem = self._probe_now()
        finally:
            with self._probe_lock:
                self._probing = False
        if problem is None:
            self.writable.write_succeeded()

    def _probe_now(self) -> str | None:
        """An enqueue rolled back, on a fresh connection: None if the database takes it, else why not."""
        try:
            conn = self._connect()
        except Exception as exc:
            return masked_reason(self.url, exc)
        try:  # a write, rolled back: a database that answers but refuses writes (read-only, a standby) fails it
            with conn.transaction(force_rollback=True), conn.cursor() as cur:
                cur.execute(_INSERT, (["probe"], ["probe"], ["{}"]))
                for destination, joined in list(self._joined.items()):
                    if joined.prepare is not None and destination in self._unprepared:
                        joined.prepare(cur)  # rolled back too: the first write makes it for good
                    if joined.probe is not None:
                        cur.execute(joined.probe)
            return None
        except Exception as exc:
            return masked_reason(self.url, exc)
        finally:
            conn.close()

    # -- enqueue ---------------------------------------------------------------------------------
    def join(self, destination: str, statement: JoinedStatement, *, prepare: Callable[[Any], None] | None = None,
             committed: Callable[[int], None] | None = None, probe: str | None = None) -> None:
        """Write ``destination``'s messages with the enqueue, in the same statement, instead of queuing them
        (a sink whose target is this database).

        ``statement(payloads)`` gives one ``INSERT`` (no ``RETURNING``) and its parameters: it runs as a
        ``WITH`` part of the enqueue's own ``INSERT``, so both commit together, in one round trip.
        ``prepare(cursor)`` runs once, in a transaction of its own, before the first (its table, say);
        again after a failure until it commits. ``committed(n)`` once n of them are. ``probe``: a statement
        that writes nothing but fails where a real write would (the table missing, or not to be written):
        the outbox's probe runs it, so that executions stay refused until the joined sink can be written too.
        """
        self._joined[destination] = _Joined(statement, prepare, committed, probe)
        if prepare is not None:
            self._unprepared.add(destination)

    def same_database(self, url: str) -> bool:
        """True if ``url`` names this outbox's database (host, port, database and user alike)."""
        return _target(url) == _target(self.url)

    def enqueue(self, items: Iterable[tuple[str, str, Any]], *, required: bool = True) -> int:
        """Queue ``(message_id, destination, payload)`` items, committed on return; how many were queued.

        A commit the database cannot take marks the outbox unwritable (:attr:`writable`) and raises
        :class:`~nexus_otel.errors.RecordsUnavailableError` (its ``__cause__`` is the driver's error);
        with ``required=False`` it returns 0 instead. Nothing of a failed commit is kept.
        """
        batch = items if isinstance(items, list) else list(items)
        if not batch:
            return 0
        if self._deferred.hold(batch, required):  # inside defer(): written with the rest when it ends
            return len(batch)
        rows = [(mid, dest, _encoded(payload)) for mid, dest, payload in batch]
        self._forked()
        try:
            self._committer.submit(rows)
        except Exception as exc:
            if _refused_value(exc):  # this execution's records, not the database: the others go on
                reason = f"the database refused a value: {masked_reason(self.url, exc)}"
                log.error("%s: records of an execution not queued: %s", self.path, reason)
                if required:
                    raise RecordsUnavailableError(self.path, reason) from exc
                return 0
            reason = self.writable.write_failed(Exception(masked_reason(self.url, exc)), required=required)
            if required:
                raise RecordsUnavailableError(self.path, reason) from exc
            return 0
        self.writable.write_succeeded()
        return len(batch)

    put = enqueue

    def _insert(self, rows: list[tuple[str, str, str]]) -> None:
        """One transaction for a group of enqueues (the group commit's writer: one thread at a time).

        A connection that was open already and turns out dead (the server restarted, an idle connection
        cut by a proxy) is replaced and the write tried once more: the database is up, and a commit whose
        answer was lost is at worst queued twice (delivered at least once, with one ``webhook-id``).
        """
        import psycopg

        reused = self._enqueue_conn is not None and not self._enqueue_conn.closed
        started = time.monotonic()
        try:
            self._write_group(rows)
        except psycopg.OperationalError:
            if not reused or time.monotonic() - started > 1.0:  # a dead connection fails at once; a hang does not
                raise
            self._write_group(rows)

    def _write_group(self, rows: list[tuple[str, str, str]]) -> None:
        self._start_watchdog()
        self._writing_since = time.monotonic()
        try:
            if self._enqueue_conn is None or self._enqueue_conn.closed:
                self._enqueue_conn = self._connect()
            conn = self._enqueue_conn
            joined: dict[str, list[str]] = {}
            queued = []
            for row in rows:
                if row[1] in self._joined:
                    joined.setdefault(row[1], []).append(row[2])
                else:
                    queued.append(row)
            insert, values = _insert_statement(queued) if queued else ("SELECT 1", [])
            if not joined:  # one statement, its own transaction (the connection commits each): one round trip
                conn.execute(insert, values)
                return
            unprepared = [d for d in joined if d in self._unprepared]
            if unprepared:
                with conn.transaction(), conn.cursor() as cur:
                    for destination in unprepared:
                        prepare = self._joined[destination].prepare
                        if prepare is not None:
                            prepare(cur)
                self._unprepared.difference_update(unprepared)
            # One statement: the joined sinks' INSERTs as WITH parts of the outbox's, atomic and one round trip.
            parts: list[str] = []
            params: list[Any] = []
            for n, (destination, payloads) in enumerate(joined.items()):
                sql, its_params = self._joined[destination].statement(payloads)
                parts.append(f"j{n} AS ({sql})")
                params.extend(its_params)
            conn.execute(f"WITH {', '.join(parts)} {insert}", [*params, *values])
        except Exception:
            self._drop("_enqueue_conn")
            raise
        finally:
            self._writing_since = None
        for destination, payloads in joined.items():
            committed = self._joined[destination].committed
            if committed is not None:
                committed(len(payloads))

    def _start_watchdog(self) -> None:
        if self._watchdog is None or not self._watchdog.is_alive():
            self._watchdog = threading.Thread(target=_watch, args=(weakref.ref(self),),
                                              name="nexus-otel-outbox-watchdog", daemon=True)
            self._watchdog.start()

    def view(self, scope: Scope) -> OutboxView:
        """This outbox seen through ``scope``: what one sink sharing it reads and counts."""
        return OutboxView(self, scope)

    # -- reading, leasing, and what a worker does with a lease ----------------------------------
    def due(self, limit: int = 100, now: float | None = None, scope: Scope = ALL) -> list[Message]:
        """Pending messages (of ``scope``) due now, oldest first, read without a lease."""
        where, params = _render(scope)
        at = _NOW if now is None else "%s::float8"
        rows = self._run(f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = 'pending' AND next_attempt_at <= {at}"
                         f" AND {where} ORDER BY next_attempt_at, id LIMIT %s",
                         ((*((now,) if now is not None else ()), *params, limit)), fetch=True)
        return [_row_message(row) for row in rows]

    def lease(self, limit: int = 100, lease: float = DEFAULT_LEASE, scope: Scope = ALL) -> list[Message]:
        """Lease up to ``limit`` due messages (of ``scope``) for ``lease`` seconds: no other worker of any
        replica leases them meanwhile (rows another worker is leasing right now are skipped, not waited for)."""
        where, params = _render(scope)
        rows = self._run(
            f"UPDATE {TABLE} SET next_attempt_at = {_NOW} + %s, claimed_by = %s WHERE id IN ("
            f"SELECT id FROM {TABLE} WHERE state = 'pending' AND next_attempt_at <= {_NOW} AND {where}"
            f" ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
            (lease, _owner(), *params, limit), fetch=True, again=False)
        return sorted((_row_message(row) for row in rows), key=lambda m: m.id)

    claim = lease

    def release(self, handles: Sequence[Handle | int]) -> None:
        """End this process's leases without an attempt: the messages are due now."""
        rows = _rows(handles)
        if rows:
            self._run(f"UPDATE {TABLE} SET next_attempt_at = {_NOW}, claimed_by = NULL WHERE state = 'pending'"
                      " AND id = ANY(%s) AND claimed_by = %s", (rows, _owner()))

    def release_orphans(self, scope: Scope = ALL) -> int:
        """Release, due now, the leases of processes on this host that have ended; how many.

        Another host's process cannot be checked from here: its leases end when they run out.
        """
        where, params = _render(scope)
        claimers = [row[0] for row in self._run(
            f"SELECT DISTINCT claimed_by FROM {TABLE} WHERE state = 'pending' AND claimed_by IS NOT NULL"
            f" AND next_attempt_at > {_NOW} AND {where}", params, fetch=True)]
        released = 0
        for gone in [c for c in claimers if _has_ended(c)]:
            released += self._run(
                f"UPDATE {TABLE} SET next_attempt_at = {_NOW}, claimed_by = NULL WHERE state = 'pending'"
                f" AND claimed_by = %s AND {where}", (gone, *params))
        return released

    def next_due_in(self, scope: Scope = ALL) -> float | None:
        """Seconds until the next pending message is due (0 if one is due now), None if none is pending."""
        where, params = _render(scope)
        rows = self._run(f"SELECT MIN(next_attempt_at) - {_NOW} FROM {TABLE} WHERE state = 'pending' AND {where}",
                         params, fetch=True)
        value = rows[0][0] if rows else None
        return None if value is None else max(0.0, float(value))

    def ack(self, handles: Sequence[Handle | int]) -> None:
        """Delivered: the messages are gone."""
        rows = _rows(handles)
        if rows:
            self._run(f"DELETE FROM {TABLE} WHERE id = ANY(%s)", (rows,))

    delivered = ack

    def retry(self, handle: Handle | int, delay: float, error: str) -> None:
        """A failed attempt: one more attempt counted, due again in ``delay`` seconds (unless another worker
        leased it meanwhile, its lease having run out: then it is that worker's)."""
        (row,) = _rows([handle])
        self._run(f"UPDATE {TABLE} SET attempts = attempts + 1, next_attempt_at = {_NOW} + %s, last_error = %s,"
                  " claimed_by = NULL WHERE id = %s AND state = 'pending' AND (claimed_by = %s OR claimed_by IS NULL)",
                  (delay, error[:1000], row, _owner()), again=False)

    def hold(self, destination: str, until: float) -> int:
        """Postpone every pending message to ``destination`` due before ``until`` (``time.time()``: its circuit
        is open), counted on the database's clock from now."""
        return int(self._run(
            f"UPDATE {TABLE} SET next_attempt_at = {_NOW} + %s, claimed_by = NULL WHERE state = 'pending'"
            f" AND destination = %s AND next_attempt_at < {_NOW} + %s",
            (until - time.time(), destination, until - time.time())))

    def dead_letter(self, handle: Handle | int, error: str) -> None:
        """Given up on: kept as a dead letter (unless another worker leased it meanwhile)."""
        (row,) = _rows([handle])
        self._run(f"UPDATE {TABLE} SET attempts = attempts + 1, state = 'dead', last_error = %s, claimed_by = NULL"
                  " WHERE id = %s AND state = 'pending' AND (claimed_by = %s OR claimed_by IS NULL)",
                  (error[:1000], row, _owner()), again=False)

    dead = dead_letter

    def dead_letters(self, limit: int = 1000, scope: Scope = ALL) -> list[Message]:
        """The dead letters (of ``scope``), oldest first."""
        where, params = _render(scope)
        rows = self._run(f"SELECT {_COLUMNS} FROM {TABLE} WHERE state = 'dead' AND {where} ORDER BY id LIMIT %s",
                         (*params, limit), fetch=True)
        return [_row_message(row) for row in rows]

    def replay(self, ids: Sequence[int | RowHandle] | None = None, scope: Scope = ALL) -> int:
        """Move dead letters (all, or those ``ids``) back to pending, due now, with fresh attempts."""
        where, params = _render(scope)
        sql = (f"UPDATE {TABLE} SET state = 'pending', attempts = 0, next_attempt_at = {_NOW}, claimed_by = NULL"
               f" WHERE state = 'dead' AND {where}")
        if ids is None:
            return int(self._run(sql, params))
        rows = [i.row if isinstance(i, RowHandle) else i for i in ids]
        return int(self._run(sql + " AND id = ANY(%s)", (*params, rows)))

    def _known_down(self) -> None:
        """Raise at once while the database is known unwritable: a scrape must not wait for one that does not
        answer (the gauges then have no reading rather than a late one)."""
        if self.writable.error is not None:
            raise RecordsUnavailableError(self.path, self.writable.error)

    def counts(self, scope: Scope = ALL) -> dict[str, int]:
        """Messages (of ``scope``) by state: ``pending`` and ``dead``, of every replica."""
        self._known_down()
        where, params = _render(scope)
        rows = self._run(f"SELECT state, COUNT(*) FROM {TABLE} WHERE {where} GROUP BY state", params, fetch=True)
        out = {"pending": 0, "dead": 0}
        out.update({state: int(n) for state, n in rows})
        return out

    def oldest_age(self, scope: Scope = ALL) -> float | None:
        """Seconds since the oldest pending message (of ``scope``) was enqueued, None if none is pending."""
        self._known_down()
        where, params = _render(scope)
        rows = self._run(f"SELECT {_NOW} - MIN(created_at) FROM {TABLE} WHERE state = 'pending' AND {where}",
                         params, fetch=True)
        value = rows[0][0] if rows else None
        return None if value is None else max(0.0, float(value))

    def left(self, scope: Scope = ALL) -> int:
        """Messages this process leaves for its next start: none (what waits is every replica's to deliver)."""
        return 0

    def close(self) -> None:
        """Close the connections (they open again on next use: the table is the queue)."""
        self._forked()
        with self._lock:
            self._drop("_conn")
        self._drop("_enqueue_conn")


_NOT_THE_TARGET = frozenset({"password", "connect_timeout", "application_name", "keepalives", "keepalives_idle",
                             "keepalives_interval", "keepalives_count", "tcp_user_timeout"})


def _target(url: str) -> tuple[Any, ...]:
    """What a URL's connection writes to: host, port, database, user and every other parameter (options, a
    search_path among them), but not the password or timeouts."""
    from psycopg.conninfo import conninfo_to_dict

    info = {k: str(v) for k, v in conninfo_to_dict(url).items() if k not in _NOT_THE_TARGET}
    info.setdefault("host", "localhost")
    info.setdefault("port", "5432")
    return tuple(sorted(info.items()))


def _pid_namespace() -> str:
    """This process's PID namespace (Linux), "?" where it cannot be read."""
    return _namespace_of(os.getpid())


@functools.lru_cache(maxsize=2)
def _namespace_of(pid: int) -> str:  # keyed by pid: a forked child reads its own
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return "?"


def _owner() -> str:
    """Who holds a lease: the process's identity and its PID namespace. Containers sharing a host name
    (host networking) each have PIDs of their own: a lease is checked only from its own namespace."""
    return f"{owners.identity()}/{_pid_namespace()}"


def _has_ended(owner: str) -> bool:
    """True only if ``owner``'s process is known to have ended: on this host, in this PID namespace."""
    base, _, namespace = owner.rpartition("/")
    if namespace == "?" or namespace != _pid_namespace():
        return False
    return owners.has_ended(base)


_WRITE_LIMIT = _STATEMENT_TIMEOUT_MS / 1000 + 5.0
"""Seconds a group's write may run before the watchdog cuts its connection: the server's statement timeout
cannot end a write to a backend that stopped answering (its host frozen, storage hung)."""


def _watch(outbox_ref: Callable[[], PostgresOutbox | None]) -> None:
    """Cut the enqueue connection of a write that runs past :data:`_WRITE_LIMIT`: its callers then fail (503)
    instead of waiting, and the next write opens a new connection."""
    while True:
        time.sleep(1.0)
        outbox = outbox_ref()
        if outbox is None:
            return
        since, conn, limit = outbox._writing_since, outbox._enqueue_conn, outbox.write_limit
        del outbox
        if since is not None and conn is not None and time.monotonic() - since > limit:
            log.error("the shared outbox's database has not answered a write for %.0f s: its connection is cut",
                      time.monotonic() - since)
            try:
                cut = socket.socket(fileno=os.dup(conn.fileno()))
                try:
                    cut.shutdown(socket.SHUT_RDWR)
                finally:
                    cut.close()
            except Exception as exc:  # closed meanwhile (the write ended): nothing to cut
                log.debug("cannot cut the connection: %s", exc)


def _refused_value(exc: BaseException) -> bool:
    """True when the database refused a value (a character it cannot store, a constraint), not the write."""
    import psycopg

    return isinstance(exc, (psycopg.DataError, psycopg.IntegrityError))
