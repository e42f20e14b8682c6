"""The audit trail as a record processor: one row per workflow execution in a SQL database.

Kailash Nexus's plugin API's ``workflow_executions`` table (workflow_id, workflow_name,
session_id, channel, started_at, completed_at, duration, status) plus error,
trace_id and baggage (the listed W3C baggage keys the execution came with, as a
JSON object; ``docs/baggage.md``), created if missing; a table made before the
baggage column existed gets it added. Rows are upserted on ``workflow_id`` so a
repeat is harmless. ``on_end`` only spools rows into a local outbox file; a
worker writes them in batches, so a database that is down delays rows but
neither loses them nor slows a workflow. The spool write happens before the
workflow's caller gets its result, so a crash after that loses no row. SQLite is the embedded default;
``postgresql://`` DSNs use psycopg 3.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from .. import fastjson
from ..errors import ConfigurationError
from ..outbox import DEFAULT_LEASE, OK, Message, Outbox, OutboxView, Outcome, RetryPolicy, destination_scope
from ..outbox.postgres import PostgresOutbox, masked_reason
from ..outbox.writable import read_only
from ..records import ExecutionRecord
from ..telemetry import contract as c
from .audit_spans import AuditBatchSpans
from .outbox_exporter import OutboxExporter
from .span_links import execution_link

log = logging.getLogger("nexus_otel.audit")

COLUMNS = ("workflow_id", "workflow_name", "session_id", "channel", "started_at", "completed_at",
           "duration", "status", "error", "trace_id", "baggage")
ADDED_COLUMNS = ("baggage",)
"""Columns a table made by an earlier version lacks: added (as ``TEXT``) when a store opens it."""
_CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    workflow_id   TEXT PRIMARY KEY,
    workflow_name TEXT NOT NULL,
    session_id    TEXT,
    channel       TEXT,
    started_at    {ts} NOT NULL,
    completed_at  {ts},
    duration      DOUBLE PRECISION,
    status        TEXT NOT NULL,
    error         TEXT,
    trace_id      TEXT,
    baggage       TEXT
)"""


class AuditStore(Protocol):
    """Where audit rows end up; ``write`` upserts a batch or raises.

    ``db_attributes``: where, in OpenTelemetry's database conventions (``db.system.name``,
    ``db.collection.name``, ``server.address``...), for the spans of the batches written.
    """

    db_attributes: dict[str, Any]

    def write(self, rows: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def _upsert_sql(table: str, placeholder: str) -> str:
    cols = ", ".join(COLUMNS)
    values = ", ".join([placeholder] * len(COLUMNS))
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    return f"INSERT INTO {table} ({cols}) VALUES ({values}) ON CONFLICT (workflow_id) DO UPDATE SET {updates}"


_VALUES_ROWS = 16


@functools.lru_cache(maxsize=64)
def _upsert_values_sql(table: str, n: int) -> str:
    """The upsert of ``n`` rows as a VALUES list."""
    row = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    single = _upsert_sql(table, "%s")
    head, _, tail = single.partition(f" VALUES {row}")
    return f"{head} VALUES {', '.join([row] * n)}{tail}"


_PG_TYPES = {"started_at": "timestamptz", "completed_at": "timestamptz", "duration": "float8"}


def _upsert_set_sql(table: str) -> str:
    """The upsert of a set of rows given as one array per column (PostgreSQL's ``unnest``)."""
    cols = ", ".join(COLUMNS)
    arrays = ", ".join("%s::text[]" for _ in COLUMNS)
    values = ", ".join(f"{c}::{_PG_TYPES[c]}" if c in _PG_TYPES else c for c in COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS[1:])
    return (f"INSERT INTO {table} ({cols}) SELECT {values} FROM unnest({arrays}) AS u({cols})"
            f" ON CONFLICT (workflow_id) DO UPDATE SET {updates}")


class SQLiteAuditStore:
    """The embedded default: a SQLite file. ``busy_timeout``: how long a write waits for another's lock."""

    def __init__(self, path: str, table: str, busy_timeout: float = 5.0) -> None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout)
            try:
                self._prepare(table, time.monotonic() + busy_timeout)
            except sqlite3.Error:
                self._db.close()
                raise
        except (OSError, sqlite3.OperationalError) as exc:
            folder = Path(path).parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            why = f"{folder} is read-only" if read_only(folder) else f"{type(exc).__name__}: {exc}"
            raise ConfigurationError("DatabasePlugin.dsn", f"sqlite:///{path}",
                                     f"a SQLite file nexus-otel can write ({why})") from exc
        self._sql = _upsert_sql(table, "?")
        self._lock = threading.Lock()
        self.db_attributes: dict[str, Any] = {c.DB_SYSTEM_NAME: "sqlite", c.DB_COLLECTION_NAME: table}

    def _prepare(self, table: str, deadline: float) -> None:
        """WAL mode and the table. Workers of ``serve --workers`` start together on one file: switching
        it to WAL can answer "database is locked" at once, without waiting out the busy timeout, while a
        peer does the same, so that answer is retried until ``deadline``."""
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(_CREATE.format(table=table, ts="TEXT"))
                self._add_columns(table)
                self._db.commit()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def _add_columns(self, table: str) -> None:
        """The columns of :data:`ADDED_COLUMNS` a table made by an earlier version lacks (SQLite has no
        ``ADD COLUMN IF NOT EXISTS``; a peer worker adding one at the same time is no error)."""
        present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        for column in ADDED_COLUMNS:
            if column not in present:
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):
                        raise

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._lock, self._db:
            self._db.executemany(self._sql, [tuple(r.get(c) for c in COLUMNS) for r in rows])

    def close(self) -> None:
        self._db.close()


class PostgresAuditStore:
    """PostgreSQL through psycopg 3; reconnects after the server comes back."""

    def __init__(self, dsn: str, table: str, connect_timeout: float = 5.0) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ConfigurationError("DatabasePlugin.dsn", _safe(dsn),
                                     'psycopg 3 installed for postgresql:// (pip install "nexus-otel[postgres]")'
                                     ) from exc
        self._dsn = dsn
        self._table = table
        self._timeout = connect_timeout
        self._conn: Any = None
        self._sql = _upsert_sql(table, "%s")
        self._set_sql = _upsert_set_sql(table)
        self.db_attributes = _postgres_attributes(dsn, table)

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, connect_timeout=int(max(1, self._timeout)))
            with self._conn.transaction():
                self.prepare_on(self._conn)
        return self._conn

    @property
    def dsn(self) -> str:
        return self._dsn

    def prepare_on(self, cursor: Any) -> None:
        """Create the table if missing, and add the columns a table of an earlier version lacks, with ``cursor``
        (a connection or a cursor), in its transaction."""
        made = cursor.execute("SELECT to_regclass(%s)", (self._table,)).fetchone()
        if made is None or made[0] is None:  # a role that may write the table but not create in its schema uses it
            cursor.execute(_CREATE.format(table=self._table, ts="TIMESTAMPTZ"))
        # Looked up first: ALTER TABLE takes the table's exclusive lock even when the column exists, and would
        # queue behind a long report.
        present = {row[0] for row in cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0"
            " AND NOT attisdropped", (self._table,)).fetchall()}
        for column in ADDED_COLUMNS:
            if column not in present:
                cursor.execute(f"ALTER TABLE {self._table} ADD COLUMN IF NOT EXISTS {column} TEXT")

    def probe_statement(self) -> str:
        """An upsert of no row: fails as a real one would where the table is missing or may not be written."""
        nulls = ", ".join(["NULL"] * len(COLUMNS))
        return f"INSERT INTO {self._table} ({', '.join(COLUMNS)}) SELECT {nulls} WHERE false"

    def upsert_statement(self, rows: Sequence[dict[str, Any]]) -> tuple[str, list[Any]]:
        """One statement upserting ``rows`` (a column of values per parameter: any number of rows, one round
        trip), for the shared outbox to run with its enqueue. A workflow id given twice keeps its last row."""
        latest = {row["workflow_id"]: _pg_values(row) for row in rows}
        if len(latest) <= _VALUES_ROWS:  # a VALUES list: cheaper to send than arrays for the usual one or few
            return _upsert_values_sql(self._table, len(latest)), [v for values in latest.values() for v in values]
        return self._set_sql, [list(column) for column in zip(*latest.values())]

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        try:
            conn = self._connection()
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._sql, [_pg_values(r) for r in rows])
        except Exception:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
                self._conn = None
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _pg_values(row: dict[str, Any]) -> tuple[Any, ...]:
    """A row's values for PostgreSQL, whose text cannot hold NUL: a NUL in an error message would otherwise fail
    the row (and its batch) for good."""
    values = (row.get(c) for c in COLUMNS)
    return tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else float(v) if isinstance(v, int) else v
                 for v in values)  # a number as float: a column of ints and floats is one type


def _postgres_attributes(dsn: str, table: str) -> dict[str, Any]:
    """The database conventions' description of a ``postgresql://`` DSN's table (no user, no password)."""
    attributes: dict[str, Any] = {c.DB_SYSTEM_NAME: "postgresql", c.DB_COLLECTION_NAME: table}
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/")
    if database:
        attributes[c.DB_NAMESPACE] = database
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number: psycopg says so when it connects
        host, port = parts.hostname, None
    if host:  # none: a Unix socket
        attributes[c.SERVER_ADDRESS] = host
        attributes[c.SERVER_PORT] = port or 5432
    return attributes


def _safe(dsn: str) -> str:
    """The DSN with any password hidden, for error messages."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return dsn


def open_store(dsn: str, table: str = "workflow_executions") -> AuditStore:
    """``sqlite:///path`` (or a plain path) or ``postgresql://...``."""
    if not isinstance(table, str) or not table.replace("_", "").isalnum() or table[:1].isdigit():
        raise ConfigurationError("DatabasePlugin.table", table, "a plain SQL identifier (letters, digits, _)")
    if not isinstance(dsn, str) or not dsn:
        raise ConfigurationError("DatabasePlugin.dsn", dsn, "a postgresql:// DSN or a sqlite:/// path")
    scheme = urlsplit(dsn).scheme
    if scheme in ("postgresql", "postgres"):
        return PostgresAuditStore(dsn, table)
    if scheme == "sqlite":
        path = dsn[len("sqlite:///"):] if dsn.startswith("sqlite:///") else dsn[len("sqlite://"):]
        if not path:
            raise ConfigurationError("DatabasePlugin.dsn", dsn, "sqlite:///path/to/file.sqlite")
        return SQLiteAuditStore(path, table)
    if scheme == "":
        return SQLiteAuditStore(dsn, table)
    raise ConfigurationError("DatabasePlugin.dsn", _safe(dsn), "a postgresql:// DSN or a sqlite:/// path")


def row_of(record: ExecutionRecord) -> dict[str, Any]:
    """The audit row of a finished execution: Kailash Nexus's plugin API's columns plus error, trace_id and
    baggage (JSON text, or None when the execution came with none of the listed keys)."""
    error = None
    if record.failed:
        error = record.error_type or "error"
        if record.error:
            error = str(record.error)[:1000]
    return {
        "workflow_id": record.workflow_id, "workflow_name": record.workflow,
        "session_id": record.session_id, "channel": record.channel,
        "started_at": record.started_at_iso, "completed_at": record.completed_at,
        "duration": record.duration, "status": record.status, "error": error,
        "trace_id": record.trace_id,
        "baggage": fastjson.dumps(record.baggage) if record.baggage else None,
    }


def _row(stored: Any) -> dict[str, Any]:
    """The row for a spooled payload: a record's fields (or a finished row, as spooled before 0.2)."""
    record = ExecutionRecord.stored(stored)
    return row_of(record) if record is not None else stored


class AuditExporter(OutboxExporter):
    """Spools a row per finished workflow; a worker writes them to the store (after ``start()``).

    ``on_unavailable`` (``"fail"`` or ``"drop"``): what happens to an execution whose row cannot be
    spooled (see :class:`~nexus_otel.exporters.outbox_exporter.OutboxExporter`).
    With a ``tracer``, each batch written is a span of its own, linked to its executions' workflow spans
    (:mod:`~nexus_otel.exporters.audit_spans`).
    """

    log = log

    def __init__(self, store: AuditStore, spool: Outbox | PostgresOutbox | OutboxView, *,
                 policy: RetryPolicy | None = None,
                 batch_size: int = 200, meter: Meter | None = None, destination: str = "audit",
                 on_unavailable: str = "fail", tracer: Tracer | None = None, lease: float = DEFAULT_LEASE) -> None:
        self.store = store
        # A store of the user's own may say nothing of its database: its spans then carry only their operation.
        self._spans = (AuditBatchSpans(tracer, getattr(store, "db_attributes", {})) if tracer is not None
                       else None)
        self.destination = destination
        super().__init__(
            # The spool file may be shared with other sinks: this exporter sees its own rows only.
            spool.view(destination_scope(destination)) if isinstance(spool, (Outbox, PostgresOutbox)) else spool,
            self._write,
            name="audit", outcomes=("queued", "written", "retried", "failed"), meter=meter,
            outcomes_metric=("nexus.audit.rows", "Audit rows by outcome: queued, written, retried, failed."),
            queue_metric=("nexus.audit.queue", "Audit rows waiting to be written."),
            # A database outage is waited out, not given up on: retries are capped at one a minute.
            policy=policy or RetryPolicy(max_attempts=10**9, cap=60.0), batch_size=batch_size,
            # Under a steady load, batches wait to fill (one database transaction and one outbox claim each).
            refill=0.2, on_unavailable=on_unavailable, lease=lease)
        self.spool = self.outbox
        self.joined = False
        """True when the rows are written in the shared outbox's own transaction (the same database)."""
        shared = getattr(self.outbox, "outbox", self.outbox)
        if isinstance(shared, PostgresOutbox) and isinstance(store, PostgresAuditStore) \
                and shared.same_database(store.dsn):
            self._joined_store = store
            prepare = None
            try:
                store.write([])  # the table, made (or brought up to date) on the store's own connection
            except Exception as exc:  # the database is down as the app starts: made before the first write instead
                log.warning("audit table not prepared yet: %s", masked_reason(store.dsn, exc))
                prepare = store.prepare_on
            shared.join(destination, self._joined_statement, prepare=prepare, committed=self._joined_committed,
                        probe=store.probe_statement())
            self.joined = True

    def _joined_statement(self, payloads: list[str]) -> tuple[str, list[Any]]:
        """The upsert of the rows of ``payloads`` (records as JSON), run with the enqueue."""
        return self._joined_store.upsert_statement([_row(fastjson.loads(p)) for p in payloads])

    def _joined_committed(self, n: int) -> None:
        self._count("written", n)

    def on_end(self, record: ExecutionRecord) -> None:
        # The row is made by the writer, off the workflow's thread.
        self.queue([(record.workflow_id, self.destination, record.to_json())],
                   f"the audit row of {record.workflow_id}")

    def _write(self, batch: list[Message], deadline: float | None = None) -> list[Outcome]:
        try:
            if self._spans is None:
                self.store.write([_row(m.payload) for m in batch])
            else:
                records = [ExecutionRecord.stored(m.payload) for m in batch]
                rows = [row_of(r) if r is not None else m.payload for r, m in zip(records, batch)]
                links = [None if r is None else execution_link(r.trace_id, r.span_id, r.trace_sampled)
                         for r in records]
                with self._spans.batch(links):
                    self.store.write(rows)
        except Exception as exc:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            return [Outcome(False, f"{type(exc).__name__}: {first_line}")] * len(batch)
        return [OK] * len(batch)

    def close(self) -> None:
        self.store.close()
