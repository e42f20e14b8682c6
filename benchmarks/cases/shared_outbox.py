"""Cases (c-pg) and (c-pg-fast), the full pipeline on the shared outbox: case (c)'s host and plugins, with
``Nexus(outbox=<PostgreSQL URL>)`` and ``DatabasePlugin`` on the same database, over the host with core telemetry
alone. Reported beside (c), no target.

The PostgreSQL server is started by the case (``tests/postgres_server.py``, on loopback). (c-pg) runs it with
PostgreSQL's own defaults, ``fsync`` and ``synchronous_commit`` on, as users run it: every execution's commit
waits for the WAL to reach the disk. (c-pg-fast) turns both off (the test suite's settings): the difference is
what the disk's flush costs. Each execution's webhook message is inserted and its audit row upserted in one
transaction on the executing thread (the audit row joins the enqueue's transaction, so no audit message is
queued); the webhook worker leases and acks in the same table.

Thread CPU (the judged clock of (c)) does not count the time the executing thread waits for the database's
commit, so the note under each case gives the wall time per execution too, and the database server's CPU per
execution (its processes are not this one's). After the rounds the receiver must have every payload once, the
audit table one row per execution, and the outbox table nothing left.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from fixtures import (
    AUXILIARY_BUDGET,
    INPUTS,
    WORKFLOW,
    CountingStreamHandler,
    WebhookReceiver,
    core_host,
)
from harness import Case, Side, thread_cpu, tree_cpu

from nexus_otel.plugins import DatabasePlugin, MetricsPlugin, RequestLoggerPlugin, WebhookPlugin

# The test suite's PostgreSQL server (tests/postgres_server.py) is imported from the repository's root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.postgres_server import SERVER_SETTINGS, PostgresServer

perf_counter = time.perf_counter

DURABLE_SETTINGS: tuple[str, ...] = ()
"""PostgreSQL's defaults: fsync, synchronous_commit and full_page_writes on (a commit waits for the disk)."""
FAST_SETTINGS = SERVER_SETTINGS
"""The test suite's: fsync, synchronous_commit and full_page_writes off."""
DRAIN_TIMEOUT = 60.0  # seconds a round's drain may take before the case is reported broken
WEBHOOK_THREAD = "nexus-otel-webhooks"


def _postmaster_pid(pg: PostgresServer) -> int:
    """The server's postmaster (its backends are its children): the first line of ``postmaster.pid``."""
    return int((pg.data_dir / "postmaster.pid").read_text().split()[0])


def _wait_delivered(webhook: WebhookPlugin, database: DatabasePlugin, timeout: float = DRAIN_TIMEOUT) -> None:
    """Block until every queued payload is posted and every row written (in-memory counters, then the table)."""
    hook, audit = webhook.exporter, database.exporter
    assert hook is not None and audit is not None
    deadline = perf_counter() + timeout
    sleep = 0.0005
    while perf_counter() < deadline:
        h, a = hook.counts, audit.counts
        if (h["delivered"] + h["failed"] >= h["queued"] and a["written"] + a["failed"] >= a["queued"]
                and webhook.stats()["outbox_pending"] == 0):
            return
        time.sleep(sleep)
        sleep = min(sleep * 2, 0.008)
    raise RuntimeError(f"shared-outbox pipeline did not drain in {timeout:.0f} s: webhook {webhook.stats()}, "
                       f"audit {database.stats()}")


def shared_pipeline_builder(settings: tuple[str, ...]) -> Callable[[Callable[[], float]], tuple[Side, Side]]:
    """The build of a shared-outbox case whose PostgreSQL server runs with ``settings``."""

    def build(clock: Callable[[], float]) -> tuple[Side, Side]:
        base_app, base_providers, base_close = core_host()
        base_count = [0]

        def base_run() -> None:
            base_count[0] += 1
            base_app.execute_workflow(WORKFLOW, INPUTS)

        baseline = Side("core telemetry", base_run, base_close, {"executions": base_count})
        baseline.drain = base_app.telemetry.force_flush  # the same flush, so both sides pay it

        pg = PostgresServer(settings=settings)
        receiver = None
        devnull = open(os.devnull, "w")
        handler = CountingStreamHandler(devnull)
        try:
            pg.start()
            secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
            receiver = WebhookReceiver(secret)
            webhook = WebhookPlugin(receiver.url, secret=secret)
            database = DatabasePlugin(pg.dsn)
            metrics = MetricsPlugin()
            request_logger = RequestLoggerPlugin("json", output=handler)
            app, providers, close_app = core_host([request_logger, metrics, webhook, database], outbox=pg.dsn)
        except BaseException:
            base_close()
            if receiver is not None:
                receiver.stop()
            pg.close()
            devnull.close()
            raise
        count = [0]
        wall = [0.0]
        execute = app.execute_workflow

        def run() -> None:
            count[0] += 1
            start = perf_counter()
            execute(WORKFLOW, INPUTS)
            wall[0] += perf_counter() - start

        def drain() -> None:
            app.telemetry.force_flush()
            _wait_delivered(webhook, database)
            request_logger.flush()

        def close() -> None:
            try:
                close_app()
            finally:
                receiver.stop()
                pg.close()
                devnull.close()

        candidate = Side("shared outbox", run, close, {
            "app": app, "providers": providers, "executions": count, "wall": wall, "receiver": receiver,
            "webhook": webhook, "database": database, "metrics": metrics, "handler": handler,
            "request_logger": request_logger, "pg": pg, "postmaster": _postmaster_pid(pg),
        })
        candidate.drain = drain
        return baseline, candidate

    return build


def _problems(candidate: Side) -> list[str]:
    """Every execution reached every destination once; the audit rows joined the enqueues; nothing is left."""
    st = candidate.state
    executions = st["executions"][0]
    candidate.drain()  # type: ignore[misc]
    problems = []
    got = st["receiver"].count()
    with psycopg.connect(st["database"].connection_string, autocommit=True) as conn:  # where the rows went
        rows = conn.execute("SELECT COUNT(*), COUNT(DISTINCT workflow_id) FROM workflow_executions").fetchone()
    with st["pg"].connect() as conn:
        left = conn.execute("SELECT state, COUNT(*) FROM nexus_otel_outbox GROUP BY state").fetchall()
    hook_stats, audit = st["webhook"].stats(), st["database"].exporter
    if got["received"] != executions or got["unique_ids"] != executions or got["invalid"]:
        problems.append(f"webhook receiver got {got} for {executions} executions")
    if hook_stats.get("delivered") != executions or hook_stats.get("retried"):
        problems.append(f"webhook deliveries {hook_stats} for {executions} executions")
    if not audit.joined:
        problems.append("the audit rows are not written in the enqueue's transaction (DatabasePlugin not joined)")
    if rows[0] != executions or rows[1] != executions:
        problems.append(f"audit table has {rows[0]} rows ({rows[1]} distinct ids) for {executions} executions")
    if left:
        problems.append(f"the outbox table still holds {dict(left)} after the drain")
    total = st["metrics"].get_metrics()["requests_total"]
    if total != executions:
        problems.append(f"MetricsPlugin counted {total} for {executions} executions")
    st["request_logger"].flush()
    if st["handler"].records != 2 * executions:
        problems.append(f"request log wrote {st['handler'].records} records for {executions} executions")
    st["notes"] = [f"destinations: {executions} executions -> webhook receiver {got['received']} payloads "
                   f"({got['valid']} valid signatures, {got['unique_ids']} distinct ids), audit table {rows[0]} rows "
                   f"(joined into the enqueue's transaction), outbox table empty"]
    return problems


def _snapshot(candidate: Side) -> dict[str, Any]:
    st = candidate.state
    return {"executions": st["executions"][0], "wall": st["wall"][0], "db_cpu": tree_cpu(st["postmaster"]),
            "worker_cpu": (thread_cpu([WEBHOOK_THREAD]) or {}).get(WEBHOOK_THREAD)}


def check_shared_case(baseline: Side, candidate: Side) -> list[str]:
    """Before timing: one execution reaches every destination, its audit row joined into the enqueue."""
    baseline.run()
    candidate.run()
    problems = _problems(candidate)
    candidate.state["start"] = _snapshot(candidate)
    return problems


def final_check_shared_case(baseline: Side, candidate: Side) -> list[str]:
    start = candidate.state["start"]
    end = _snapshot(candidate)  # before the checks' own queries add to the server's CPU
    problems = _problems(candidate)
    n = end["executions"] - start["executions"]
    if n > 0:
        worker = ("not measured" if start["worker_cpu"] is None or end["worker_cpu"] is None
                  else f"{(end['worker_cpu'] - start['worker_cpu']) / n * 1e6:.0f} us")
        wall = (end["wall"] - start["wall"]) / n * 1e6
        db = (end["db_cpu"] - start["db_cpu"]) / n * 1e6
        candidate.state["notes"].append(
            f"per execution, warm-up and rounds ({n} executions): wall time {wall:.0f} us (the commit's wait "
            f"included), PostgreSQL server CPU {db:.0f} us (every backend: the enqueue, the lease and ack), "
            f"webhook worker CPU {worker}")
    return problems


CASES = [
    Case(
        key="c-pg", title="full pipeline on the shared outbox: (c)'s candidate with Nexus(outbox=PostgreSQL, fsync "
                          "and synchronous_commit on) and the audit rows in the same database, vs host with core "
                          "telemetry",
        baseline_label="core telemetry", candidate_label="shared outbox",
        build=shared_pipeline_builder(DURABLE_SETTINGS), target=None, n=100, check=check_shared_case,
        final_check=final_check_shared_case, budget=25.0, max_rounds=40, total=True,
    ),
    Case(
        key="c-pg-fast", title="as (c-pg), PostgreSQL with fsync, synchronous_commit and full_page_writes off "
                               "(the test suite's settings: what the disk's flush costs)",
        baseline_label="core telemetry", candidate_label="shared, no fsync",
        build=shared_pipeline_builder(FAST_SETTINGS), target=None, n=100, check=check_shared_case,
        final_check=final_check_shared_case, budget=AUXILIARY_BUDGET, max_rounds=40, total=True,
    ),
]
