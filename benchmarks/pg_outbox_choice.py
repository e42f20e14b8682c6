"""The shared outbox's queue on PostgreSQL: our own table with SKIP LOCKED leases, against procrastinate and pgmq.

Run::

    python benchmarks/pg_outbox_choice.py            # 3 rounds, ~3 min on 2 cores
    python benchmarks/pg_outbox_choice.py --rounds 5 --backlog 20000
    python benchmarks/pg_outbox_choice.py --smoke    # tiny numbers, checks on

Every side runs against one real PostgreSQL (``tests/postgres_server.py``: a
throw-away cluster on 127.0.0.1 run with ``fsync=off``, ``synchronous_commit=off``,
``full_page_writes=off``). The sides, each in the form the shared outbox would
use it:

- ``own``: the table of ``nexus_otel/outbox/postgres.py`` (same DDL, same
  statements). Enqueue: one transaction (``BEGIN``, ``INSERT ... SELECT FROM
  unnest(...)``, ``COMMIT``) on an autocommit connection, as the outbox's group
  commit does. Claim: ``UPDATE ... WHERE id IN (SELECT ... ORDER BY
  next_attempt_at, id LIMIT 50 FOR UPDATE SKIP LOCKED) RETURNING ...`` (a
  60 s lease). Ack: ``DELETE ... WHERE id = ANY(...)``.
- ``procrastinate`` (PyPI ``procrastinate``, if installed): its schema applied
  with its ``SchemaManager``; enqueue ``task.defer(...)`` through an ``App``
  with a ``SyncPsycopgConnector`` (its pool); claim and ack as its worker does
  them, its own ``fetch_job`` query (``procrastinate_fetch_job_v2``: one job a
  call) and ``finish_job`` (``procrastinate_finish_job_v1``, status succeeded,
  the job deleted), on a worker id registered with ``register_worker``.
- ``pgmq`` (PyPI ``pgmq``, if installed): the SQL-only PGMQ schema the package
  ships (``pgmq.install``), one queue; enqueue ``pgmq.send`` in a transaction on
  our connection; claim ``pgmq.read(queue, 60, 50)`` (a 60 s visibility
  timeout, 50 at a time); ack ``pgmq.delete(queue, ids)``. (The Debian archive
  has no ``postgresql-*-pgmq`` package; the SQL-only install needs none.)

Measured, each backend against the same server, in rounds whose order turns
(``harness.rotated``), wall time (``time.perf_counter``: what a caller waits,
the server's work included; the harness's CPU clocks would miss the server):

- (a) enqueue latency, one thread, one message per transaction (what one
  execution pays when no other commits with it): per round the median and the
  p99 of ``--latency-n`` enqueues; printed: the median over rounds of each.
  With ``--durable`` (on in a full run) (a) also runs on a second server with
  PostgreSQL's defaults (``fsync=on``, ``synchronous_commit=on``): what a
  commit that reaches the disk costs on this machine.
- (b) enqueue throughput, 8 threads each on its own connection (procrastinate:
  its pool of 8), one message per transaction: messages/s, median over rounds.
- (c) claim + ack throughput: a backlog of ``--backlog`` messages (written
  before the clock starts, then ``ANALYZE``), drained by 1 and by 3 consumer
  threads, each on its own connection: messages/s, median over rounds, and the
  ratio 3 consumers / 1 (SKIP LOCKED's scaling; 2 cores are shared with the
  server, so it is a floor, not the scaling on a real database host).

Ratios to ``own`` are printed beside each figure (median over rounds of the
per-round ratio, ``harness.paired_ratio``). Correctness, checked every round,
fails the run (exit 1; with ``--smoke`` the ``smoke_verdict``): after (a) and
(b) the stored message ids are exactly those enqueued, each once; after (c)
every message of the backlog was claimed and acked exactly once, by one
consumer, and none is left.

Without procrastinate or pgmq installed the script says how to install them
(``.venv/bin/pip install procrastinate pgmq``; neither is a dependency of
nexus-otel), measures ``own`` only, prints that the comparison was not run,
and exits 0.

What each offers the shared outbox (the code of procrastinate 3.10 and pgmq's
SQL 1.13 as shipped on PyPI), beside its figures:

- retry with a delay and an attempt count. own: yes (``next_attempt_at``,
  ``attempts``). procrastinate: yes (a ``RetryStrategy`` on the task; its
  worker reschedules). pgmq: by hand (``read_ct`` counts reads, ``set_vt``
  delays).
- dead letters, replay of chosen ids. own: yes (``state='dead'``, replay by
  id). procrastinate: failed jobs stay ``failed``; ``retry_job`` by id. pgmq:
  ``archive`` moves a message to ``a_<queue>``; replay is a new send by hand.
- scoping by destination (a sink sees its own). own: a ``WHERE`` on the lease.
  procrastinate: a queue per destination (``fetch_job`` takes queue names).
  pgmq: a queue (two tables) per destination, or an unindexed JSON filter.
- dedupe by (message_id, destination). own: a unique index when wanted.
  procrastinate: ``queueing_lock``, unique only while a job is ``todo``.
  pgmq: none.
- leases that end by time. own: yes (``next_attempt_at`` is the lease's end).
  procrastinate: no; a stalled job is found by its worker's missing heartbeat
  and retried by a periodic task the user writes. pgmq: yes (visibility
  timeout).
- the audit row in the enqueue's transaction. own: yes (our connection, our
  transaction). procrastinate: yes in 3.x, ``task.configure(connection=conn)
  .defer()`` runs its INSERT on our psycopg connection. pgmq: yes (SQL
  functions called on our connection).
- what it pulls in. own: nothing (psycopg is already a dependency).
  procrastinate: asgiref, attrs, croniter, python-dateutil, psycopg-pool, its
  schema (4 tables, 3 types, 7 triggers, an event row per state change), and
  an asyncio worker. pgmq: orjson, psycopg-pool, and a 2,200-line SQL schema
  (the SQL-only install has no upgrade path) or a server extension.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import add_smoke_option, paired_ratio, rotated, smoke_verdict

from tests.postgres_server import PostgresServer

INSTALL_HINT = ".venv/bin/pip install procrastinate pgmq"
DESTINATION = "webhook:https://hooks.example.test/nexus"
LEASE_SECONDS = 60
CLAIM_LIMIT = 50
ENQUEUE_THREADS = 8
CONSUMERS = (1, 3)
DURABLE_SETTINGS = ("fsync=on", "synchronous_commit=on", "full_page_writes=on")

# --------------------------------------------------------------------------------------
# The own table: the shared outbox's DDL and statements
# --------------------------------------------------------------------------------------
OWN_TABLE = "nexus_otel_outbox"
OWN_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {OWN_TABLE} (
  id BIGSERIAL PRIMARY KEY, message_id TEXT NOT NULL, destination TEXT NOT NULL, payload TEXT NOT NULL,
  state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
  created_at DOUBLE PRECISION NOT NULL, next_attempt_at DOUBLE PRECISION NOT NULL,
  last_error TEXT, claimed_by TEXT);
CREATE INDEX IF NOT EXISTS {OWN_TABLE}_due ON {OWN_TABLE} (next_attempt_at, id) WHERE state = 'pending'
"""
NOW = "extract(epoch from clock_timestamp())::float8"
OWN_INSERT = (f"INSERT INTO {OWN_TABLE} (message_id, destination, payload, created_at, next_attempt_at)"
              f" SELECT m, d, p, {NOW}, {NOW} FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(m, d, p)")
OWN_LEASE = (f"UPDATE {OWN_TABLE} SET next_attempt_at = {NOW} + %s, claimed_by = %s WHERE id IN ("
             f"SELECT id FROM {OWN_TABLE} WHERE state = 'pending' AND next_attempt_at <= {NOW}"
             f" ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED)"
             " RETURNING id, message_id, destination, payload, attempts, created_at, last_error")
OWN_ACK = f"DELETE FROM {OWN_TABLE} WHERE id = ANY(%s)"

PGMQ_QUEUE = "nexus_outbox"


@dataclass(frozen=True)
class Message:
    """One outbox message: what a webhook delivery carries."""

    message_id: str
    destination: str
    payload: str


def make_messages(n: int) -> list[Message]:
    """``n`` messages shaped like a webhook payload (about 300 bytes of JSON), each with a fresh id."""
    out = []
    for _ in range(n):
        message_id = str(uuid.uuid4())
        payload = json.dumps({"event": "workflow.completed", "workflow": "ship", "execution_id": message_id,
                              "status": "completed", "duration_ms": 12.5, "trace_id": uuid.uuid4().hex,
                              "outputs": {"n": 7, "tags": ["x", "y"]}, "finished_at": "2026-12-07T15:00:00Z"})
        out.append(Message(message_id, DESTINATION, payload))
    return out


# --------------------------------------------------------------------------------------
# Backends: each the same small interface
# --------------------------------------------------------------------------------------
class Enqueuer(Protocol):
    def put(self, message: Message) -> None: ...
    def close(self) -> None: ...


class Consumer(Protocol):
    def claim(self) -> list[tuple[Any, str]]:
        """Up to a batch of due messages, leased: (the handle to ack, message_id)."""
    def ack(self, handles: Sequence[Any]) -> None: ...
    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def enqueuer(self) -> Enqueuer: ...
    def consumer(self, name: str) -> Consumer: ...
    def fill(self, messages: Sequence[Message]) -> None: ...
    def stored_ids(self) -> list[str]: ...
    def reset(self) -> None: ...
    def close(self) -> None: ...


def _connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=5)


class _Conn:
    """A backend's admin connection: schema, fill, reads for the checks, reset."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.admin = _connect(dsn)

    def close(self) -> None:
        self.admin.close()


class OwnTable(_Conn):
    """The shared outbox's own table."""

    name = "own"

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.admin.execute(OWN_SCHEMA)

    class _Enqueuer:
        def __init__(self, dsn: str) -> None:
            self.conn = _connect(dsn)

        def put(self, message: Message) -> None:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.execute(OWN_INSERT, ([message.message_id], [message.destination], [message.payload]))

        def close(self) -> None:
            self.conn.close()

    class _Consumer:
        def __init__(self, dsn: str, name: str) -> None:
            self.conn, self.name = _connect(dsn), name

        def claim(self) -> list[tuple[Any, str]]:
            rows = self.conn.execute(OWN_LEASE, (LEASE_SECONDS, self.name, CLAIM_LIMIT)).fetchall()
            return [(row[0], row[1]) for row in rows]

        def ack(self, handles: Sequence[Any]) -> None:
            self.conn.execute(OWN_ACK, (list(handles),))

        def close(self) -> None:
            self.conn.close()

    def enqueuer(self) -> Enqueuer:
        return self._Enqueuer(self.dsn)

    def consumer(self, name: str) -> Consumer:
        return self._Consumer(self.dsn, name)

    def fill(self, messages: Sequence[Message]) -> None:
        with self.admin.transaction():
            self.admin.execute(OWN_INSERT, ([m.message_id for m in messages], [m.destination for m in messages],
                                            [m.payload for m in messages]))
        self.admin.execute(f"ANALYZE {OWN_TABLE}")

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self.admin.execute(f"SELECT message_id FROM {OWN_TABLE}")]

    def reset(self) -> None:
        self.admin.execute(f"TRUNCATE {OWN_TABLE}")


class Procrastinate(_Conn):
    """procrastinate: ``task.defer`` through its sync connector; claim and ack with its worker's queries."""

    name = "procrastinate"

    def __init__(self, dsn: str, pool_size: int) -> None:
        import procrastinate  # type: ignore[import-not-found, unused-ignore]
        from procrastinate import sql  # type: ignore[import-not-found, unused-ignore]
        from procrastinate.schema import SchemaManager  # type: ignore[import-not-found, unused-ignore]

        # It warns that an App made in a __main__ module cannot be found by its CLI: none is used here.
        logging.getLogger("procrastinate").setLevel(logging.ERROR)

        super().__init__(dsn)
        self.queries = sql.queries
        self.app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(
            conninfo=dsn, min_size=pool_size, max_size=pool_size))
        self.app.open()
        SchemaManager(self.app.connector).apply_schema()

        def deliver(message_id: str, destination: str, payload: str) -> None:
            """The delivery task (the benchmark's consumers claim its jobs without running it)."""

        self.task = self.app.task(name="deliver", queue="outbox")(deliver)

    class _Enqueuer:
        def __init__(self, task: Any) -> None:
            self.task = task

        def put(self, message: Message) -> None:
            self.task.defer(message_id=message.message_id, destination=message.destination,
                            payload=message.payload)

        def close(self) -> None:
            pass

    class _Consumer:
        def __init__(self, dsn: str, queries: dict[str, str]) -> None:
            from psycopg.rows import dict_row

            self.conn = _connect(dsn)
            self.conn.row_factory = dict_row
            self.fetch, self.finish = queries["fetch_job"], queries["finish_job"]
            self.worker_id = self.conn.execute(queries["register_worker"]).fetchone()["worker_id"]

        def claim(self) -> list[tuple[Any, str]]:
            row = self.conn.execute(self.fetch, {"queues": ["outbox"], "worker_id": self.worker_id}).fetchone()
            if row is None or row["id"] is None:
                return []
            return [(row["id"], row["args"]["message_id"])]

        def ack(self, handles: Sequence[Any]) -> None:
            for job_id in handles:
                self.conn.execute(self.finish, {"job_id": job_id, "status": "succeeded", "delete_job": True})

        def close(self) -> None:
            self.conn.close()

    def enqueuer(self) -> Enqueuer:
        return self._Enqueuer(self.task)

    def consumer(self, name: str) -> Consumer:
        return self._Consumer(self.dsn, self.queries)

    def fill(self, messages: Sequence[Message]) -> None:
        for i in range(0, len(messages), 2000):
            jobs: list[dict[str, Any]] = [{"message_id": m.message_id, "destination": m.destination,
                                           "payload": m.payload} for m in messages[i:i + 2000]]
            self.task.batch_defer(*jobs)
        self.admin.execute("ANALYZE procrastinate_jobs")

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self.admin.execute(
            "SELECT args->>'message_id' FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")]

    def reset(self) -> None:
        self.admin.execute("TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE")

    def close(self) -> None:
        self.app.close()
        super().close()


class Pgmq(_Conn):
    """pgmq (its SQL-only schema): ``send`` in our transaction, ``read`` with a visibility timeout, ``delete``."""

    name = "pgmq"

    def __init__(self, dsn: str) -> None:
        from pgmq.install import get_embedded_install_sql, install_pgmq_sql  # type: ignore[import-not-found, unused-ignore]

        super().__init__(dsn)
        import psycopg

        with psycopg.connect(dsn, autocommit=False) as conn:
            install_pgmq_sql(get_embedded_install_sql(), conn=conn)
            conn.commit()
        self.admin.execute("SELECT pgmq.create(%s)", (PGMQ_QUEUE,))

    class _Enqueuer:
        def __init__(self, dsn: str) -> None:
            self.conn = _connect(dsn)

        def put(self, message: Message) -> None:
            with self.conn.transaction():
                self.conn.execute("SELECT pgmq.send(%s, %s::jsonb)", (PGMQ_QUEUE, _pgmq_body(message)))

        def close(self) -> None:
            self.conn.close()

    class _Consumer:
        def __init__(self, dsn: str) -> None:
            self.conn = _connect(dsn)

        def claim(self) -> list[tuple[Any, str]]:
            rows = self.conn.execute("SELECT msg_id, message, read_ct FROM pgmq.read(%s, %s, %s)",
                                     (PGMQ_QUEUE, LEASE_SECONDS, CLAIM_LIMIT)).fetchall()
            return [(row[0], row[1]["message_id"]) for row in rows]

        def ack(self, handles: Sequence[Any]) -> None:
            self.conn.execute("SELECT pgmq.delete(%s, %s::bigint[])", (PGMQ_QUEUE, list(handles))).fetchall()

        def close(self) -> None:
            self.conn.close()

    def enqueuer(self) -> Enqueuer:
        return self._Enqueuer(self.dsn)

    def consumer(self, name: str) -> Consumer:
        return self._Consumer(self.dsn)

    def fill(self, messages: Sequence[Message]) -> None:
        with self.admin.transaction():
            self.admin.execute("SELECT pgmq.send_batch(%s, %s::jsonb[])",
                               (PGMQ_QUEUE, [_pgmq_body(m) for m in messages])).fetchall()
        self.admin.execute(f"ANALYZE pgmq.q_{PGMQ_QUEUE}")

    def stored_ids(self) -> list[str]:
        return [row[0] for row in self.admin.execute(f"SELECT message->>'message_id' FROM pgmq.q_{PGMQ_QUEUE}")]

    def reset(self) -> None:
        self.admin.execute(f"TRUNCATE pgmq.q_{PGMQ_QUEUE}")


def _pgmq_body(message: Message) -> str:
    return json.dumps({"message_id": message.message_id, "destination": message.destination,
                       "payload": message.payload})


def available_libraries() -> tuple[list[str], list[str]]:
    """(the libraries importable here, those missing)."""
    import importlib.util

    present: list[str] = []
    missing: list[str] = []
    for name in ("procrastinate", "pgmq"):
        (present if importlib.util.find_spec(name) is not None else missing).append(name)
    return present, missing


def open_backends(dsn: str, names: Sequence[str]) -> list[Backend]:
    """The backends named, set up on the database at ``dsn`` (``own`` first)."""
    makers: dict[str, Callable[[], Backend]] = {
        "own": lambda: OwnTable(dsn),
        "procrastinate": lambda: Procrastinate(dsn, ENQUEUE_THREADS),
        "pgmq": lambda: Pgmq(dsn),
    }
    return [makers[name]() for name in names]


# --------------------------------------------------------------------------------------
# The measurements, each with its check
# --------------------------------------------------------------------------------------
@dataclass
class Figures:
    """Per backend, per figure: one value per round."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def add(self, backend: str, figure: str, value: float) -> None:
        self.values.setdefault((backend, figure), []).append(value)


def check_stored(backend: Backend, sent: Sequence[Message], what: str) -> list[str]:
    """The backend holds exactly the messages sent, each once."""
    stored = backend.stored_ids()
    expected = {m.message_id for m in sent}
    if len(stored) != len(set(stored)):
        return [f"{backend.name} {what}: {len(stored) - len(set(stored))} messages stored twice"]
    if set(stored) != expected:
        return [f"{backend.name} {what}: {len(expected - set(stored))} messages lost, "
                f"{len(set(stored) - expected)} unknown ones stored"]
    return []


def enqueue_latency(backend: Backend, n: int) -> tuple[float, float, list[str]]:
    """(a): ``n`` enqueues on one thread, one message each: (median µs, p99 µs, problems)."""
    messages = make_messages(n)
    enqueuer = backend.enqueuer()
    took = []
    try:
        for message in messages:
            start = time.perf_counter()
            enqueuer.put(message)
            took.append(time.perf_counter() - start)
    finally:
        enqueuer.close()
    problems = check_stored(backend, messages, "(a) enqueue")
    backend.reset()
    took.sort()
    return statistics.median(took) * 1e6, took[min(len(took) - 1, int(len(took) * 0.99))] * 1e6, problems


def _run_threads(workers: Sequence[Callable[[], None]]) -> float:
    """Start ``workers`` on threads of their own at once; seconds until the last ended. A worker's exception
    is raised here."""
    barrier = threading.Barrier(len(workers) + 1)
    errors: list[BaseException] = []

    def body(work: Callable[[], None]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(w,), name=f"bench-{i}") for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - start
    if errors:
        raise errors[0]
    return took


def enqueue_throughput(backend: Backend, per_thread: int) -> tuple[float, list[str]]:
    """(b): ``ENQUEUE_THREADS`` threads, each its own connection, ``per_thread`` one-message enqueues each:
    (messages/s, problems)."""
    batches = [make_messages(per_thread) for _ in range(ENQUEUE_THREADS)]
    enqueuers = [backend.enqueuer() for _ in batches]

    def work(enqueuer: Enqueuer, batch: list[Message]) -> Callable[[], None]:
        def loop() -> None:
            for message in batch:
                enqueuer.put(message)
        return loop

    try:
        took = _run_threads([work(e, b) for e, b in zip(enqueuers, batches)])
    finally:
        for enqueuer in enqueuers:
            enqueuer.close()
    problems = check_stored(backend, [m for b in batches for m in b], "(b) enqueue")
    backend.reset()
    return ENQUEUE_THREADS * per_thread / took, problems


def drain(backend: Backend, backlog: int, consumers: int) -> tuple[float, list[str]]:
    """(c): a backlog of ``backlog`` messages drained by ``consumers`` threads, each its own connection,
    claiming and acking until a claim finds nothing: (messages/s, problems)."""
    messages = make_messages(backlog)
    backend.fill(messages)
    seen: list[list[str]] = [[] for _ in range(consumers)]
    opened = [backend.consumer(f"bench-consumer-{i}") for i in range(consumers)]

    def work(consumer: Consumer, got: list[str]) -> Callable[[], None]:
        def loop() -> None:
            while batch := consumer.claim():
                consumer.ack([handle for handle, _ in batch])
                got.extend(message_id for _, message_id in batch)
        return loop

    try:
        took = _run_threads([work(c, s) for c, s in zip(opened, seen)])
    finally:
        for consumer in opened:
            consumer.close()
    problems = []
    delivered = [message_id for got in seen for message_id in got]
    expected = {m.message_id for m in messages}
    what = f"{backend.name} (c) {consumers} consumer(s)"
    if len(delivered) != len(set(delivered)):
        problems.append(f"{what}: {len(delivered) - len(set(delivered))} messages delivered twice")
    if set(delivered) != expected:
        problems.append(f"{what}: {len(expected - set(delivered))} messages never delivered")
    left = backend.stored_ids()
    if left:
        problems.append(f"{what}: {len(left)} messages left after the drain")
    backend.reset()
    return len(delivered) / took, problems


def measure(backends: Sequence[Backend], rounds: int, latency_n: int, per_thread: int, backlog: int,
            figures: Figures, latency_only: bool = False, tag: str = "") -> None:
    """Every measurement, in rounds; within a measurement the backends take turns going first."""
    for backend in backends:  # warm-up: connections, plans, the pool
        figures.problems += enqueue_latency(backend, min(latency_n, 20))[2]
    for r in range(rounds):
        for backend in rotated(list(backends), r):
            median, p99, problems = enqueue_latency(backend, latency_n)
            figures.add(backend.name, f"a{tag} median", median)
            figures.add(backend.name, f"a{tag} p99", p99)
            figures.problems += problems
        if latency_only:
            continue
        for backend in rotated(list(backends), r):
            rate, problems = enqueue_throughput(backend, per_thread)
            figures.add(backend.name, "b", rate)
            figures.problems += problems
        for consumers in CONSUMERS:
            for backend in rotated(list(backends), r):
                rate, problems = drain(backend, backlog, consumers)
                figures.add(backend.name, f"c{consumers}", rate)
                figures.problems += problems
        print(f"  round {r + 1}/{rounds} done", flush=True)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
ROWS = (
    ("a median", "(a) enqueue, 1 thread, 1 msg/txn: median", "µs", False),
    ("a p99", "(a) enqueue, 1 thread, 1 msg/txn: p99", "µs", False),
    ("a-durable median", "(a) on fsync=on, synchronous_commit=on: median", "µs", False),
    ("a-durable p99", "(a) on fsync=on, synchronous_commit=on: p99", "µs", False),
    ("b", f"(b) enqueue, {ENQUEUE_THREADS} threads, 1 msg/txn", "msg/s", True),
    *((f"c{k}", f"(c) claim+ack, {k} consumer{'s' if k > 1 else ''}", "msg/s", True) for k in CONSUMERS),
)


def report(figures: Figures, names: Sequence[str]) -> None:
    """Each figure's median over rounds per backend, and its per-round ratio to ``own``."""
    width = max(len(label) for _, label, _, _ in ROWS)
    print(f"\n{'figure':<{width}}  " + "  ".join(f"{name:>24}" for name in names))
    for key, label, unit, _higher_is_better in ROWS:
        own = figures.values.get(("own", key))
        if own is None:
            continue
        cells = []
        for name in names:
            values = figures.values.get((name, key), [])
            if not values:
                cells.append(f"{'-':>24}")
                continue
            ratio = "" if name == "own" else f" ({paired_ratio(values, own):.2f}x)"
            cells.append(f"{statistics.median(values):,.0f} {unit}{ratio}".rjust(24))
        print(f"{label:<{width}}  " + "  ".join(cells))
    print(f"{'(c) 3 consumers / 1 (paired)':<{width}}  " + "  ".join(
        f"{paired_ratio(figures.values[(n, 'c3')], figures.values[(n, 'c1')]):>24.2f}"
        if (n, "c3") in figures.values else f"{'-':>24}" for n in names))
    print("(x): median over rounds of the round's figure / own's; µs: lower is better, msg/s: higher is better")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-n", type=int, default=400, help="(a): enqueues per backend per round")
    parser.add_argument("--per-thread", type=int, default=150, help="(b): enqueues per thread per round")
    parser.add_argument("--backlog", type=int, default=20_000, help="(c): messages to drain per round")
    parser.add_argument("--durable", action=argparse.BooleanOptionalAction, default=None,
                        help="also run (a) on a server with fsync=on, synchronous_commit=on (default: on, "
                             "off with --smoke)")
    parser.add_argument("--own-only", action="store_true", help="measure the own table only")
    add_smoke_option(parser, "1 round, 20 enqueues, 8 x 5 threaded, a backlog of 300")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.latency_n, args.per_thread, args.backlog = 1, 20, 5, 300
    durable = (not args.smoke) if args.durable is None else args.durable
    present, missing = ([], []) if args.own_only else available_libraries()
    names = ["own", *present]
    if missing:
        print(f"not installed: {', '.join(missing)} (install with `{INSTALL_HINT}`; neither is a dependency of "
              f"nexus-otel): the comparison with {' and '.join(missing)} is NOT run")
    started = time.perf_counter()
    figures = Figures()
    with PostgresServer() as pg:
        print(f"PostgreSQL on 127.0.0.1:{pg.port}, settings: {', '.join(pg.settings)}; backends: "
              f"{', '.join(names)}; {args.rounds} rounds; (a) {args.latency_n} enqueues, (b) "
              f"{ENQUEUE_THREADS} x {args.per_thread}, (c) backlog {args.backlog:,}", flush=True)
        backends = open_backends(pg.dsn, names)
        try:
            measure(backends, args.rounds, args.latency_n, args.per_thread, args.backlog, figures)
        finally:
            for backend in backends:
                backend.close()
    if durable:
        with PostgresServer(settings=DURABLE_SETTINGS) as pg:
            print(f"(a) again on a second server with {', '.join(pg.settings)}", flush=True)
            backends = open_backends(pg.dsn, names)
            try:
                measure(backends, args.rounds, args.latency_n, args.per_thread, args.backlog, figures,
                        latency_only=True, tag="-durable")
            finally:
                for backend in backends:
                    backend.close()
    report(figures, names)
    print(f"elapsed {time.perf_counter() - started:.1f} s")
    if missing:
        print(f"comparison not run for {', '.join(missing)}: `{INSTALL_HINT}` to run it")
    if args.smoke:
        return smoke_verdict(figures.problems)
    for problem in figures.problems:
        print(f"CHECK FAILED: {problem}")
    return 1 if figures.problems else 0


if __name__ == "__main__":
    sys.exit(main())
