"""Case (c), the full pipeline: the host with core telemetry plus RequestLoggerPlugin (JSON to /dev/null, each record
also exported as an OTel log record), MetricsPlugin, WebhookPlugin (signed, to ``fixtures.WebhookReceiver``) and
DatabasePlugin (SQLite audit table), over the host with core telemetry alone. Target <= 1.5 on the hot path.

Records are durable on return (both outboxes written on the executing thread), so those writes are on the hot
path; log formatting and writing, webhook delivery and audit writes run on background threads. Every round
therefore yields two figures per side: the hot path (this thread's CPU around the executions, judged) and the
total (the process's CPU around the executions plus a drain that waits until everything is delivered,
reported). Before and after the rounds every execution must have reached every destination exactly once; the
note under the case gives the background threads' CPU per execution."""

from __future__ import annotations

import base64
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from fixtures import INPUTS, WORKFLOW, CountingStreamHandler, WebhookReceiver, core_host
from harness import Case, Side, thread_cpu

from nexus_otel import Nexus
from nexus_otel.plugins import DatabasePlugin, MetricsPlugin, RequestLoggerPlugin, WebhookPlugin

perf_counter = time.perf_counter

DRAIN_TIMEOUT = 60.0  # seconds a round's drain may take before the case is reported broken


def _wait_delivered(webhook: WebhookPlugin, database: DatabasePlugin, timeout: float = DRAIN_TIMEOUT) -> None:
    """Block until both outboxes are empty: every queued payload posted, every queued row written.

    The exporters' in-memory counters are polled (no SQL per poll, which would add
    CPU to the measured side); the outboxes themselves (``stats()``) confirm at the end.
    """
    hook, audit = webhook.exporter, database.exporter
    assert hook is not None and audit is not None
    deadline = perf_counter() + timeout
    sleep = 0.0005
    while perf_counter() < deadline:
        h, a = hook.counts, audit.counts
        if (h["delivered"] + h["failed"] >= h["queued"] and a["written"] + a["failed"] >= a["queued"]
                and webhook.stats()["outbox_pending"] == 0 and database.stats()["pending"] == 0):
            return
        time.sleep(sleep)
        sleep = min(sleep * 2, 0.008)
    raise RuntimeError(f"pipeline did not drain in {timeout:.0f} s: webhook {webhook.stats()}, "
                       f"audit {database.stats()}")


def build_pipeline_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    # Baseline: the host with core telemetry only (case (a)'s candidate).
    base_app, base_providers, base_close = core_host()
    base_execute = base_app.execute_workflow
    base_count = [0]

    def base_run() -> None:
        base_count[0] += 1
        base_execute(WORKFLOW, INPUTS)

    baseline = Side("core telemetry", base_run, base_close,
                    {"app": base_app, "providers": base_providers, "executions": base_count})
    baseline.drain = base_app.telemetry.force_flush  # the same flush, so both sides pay it

    # Candidate: the same plus every plugin of the pipeline, against healthy destinations.
    tmp = tempfile.mkdtemp(prefix="nexus-otel-overhead-")
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = None
    devnull = open(os.devnull, "w")
    handler = CountingStreamHandler(devnull)
    try:
        receiver = WebhookReceiver(secret)
        # Both durable sinks on one outbox file, as with the default data directory: one write per execution.
        webhook = WebhookPlugin(receiver.url, secret=secret, outbox_path=os.path.join(tmp, "outbox.sqlite"))
        database = DatabasePlugin(f"sqlite:///{os.path.join(tmp, 'audit.sqlite')}",
                                  spool_path=os.path.join(tmp, "outbox.sqlite"))
        metrics = MetricsPlugin()
        request_logger = RequestLoggerPlugin("json", output=handler)
        plugins = [request_logger, metrics, webhook, database]
        app, providers, close_app = core_host(plugins)
    except BaseException:
        if receiver is not None:
            receiver.stop()
        devnull.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    execute = app.execute_workflow
    count = [0]

    def run() -> None:
        count[0] += 1
        execute(WORKFLOW, INPUTS)

    def drain() -> None:
        app.telemetry.force_flush()
        _wait_delivered(webhook, database)
        request_logger.flush()  # the listener thread has formatted and written every record

    def close() -> None:
        try:
            close_app()
        finally:
            receiver.stop()
            devnull.close()
            shutil.rmtree(tmp, ignore_errors=True)

    candidate = Side("full pipeline", run, close, {
        "app": app, "providers": providers, "executions": count, "receiver": receiver, "webhook": webhook,
        "database": database, "metrics": metrics, "handler": handler, "request_logger": request_logger,
        "audit_db": os.path.join(tmp, "audit.sqlite"), "post_cpu": _time_posts(webhook),
    })
    candidate.drain = drain
    return baseline, candidate


def _pipeline_problems(candidate: Side) -> list[str]:
    """Every completed execution reached every destination, once; nothing failed or waits."""
    st = candidate.state
    executions = st["executions"][0]
    candidate.drain()  # type: ignore[misc]
    problems = []
    hook_stats, audit_stats = st["webhook"].stats(), st["database"].stats()
    got = st["receiver"].count()
    with sqlite3.connect(st["audit_db"]) as db:
        rows = db.execute("SELECT COUNT(*), COUNT(DISTINCT workflow_id) FROM workflow_executions").fetchone()
    stats = st["metrics"].get_metrics()
    st["request_logger"].flush()  # (the drain flushed it too) every queued record is written
    records = st["handler"].records
    if got["received"] != executions or got["unique_ids"] != executions or got["invalid"]:
        problems.append(f"webhook receiver got {got} for {executions} executions")
    if hook_stats.get("delivered") != executions or hook_stats.get("outbox_pending") or hook_stats.get("outbox_dead"):
        problems.append(f"webhook outbox {hook_stats} for {executions} executions")
    if rows[0] != executions or rows[1] != executions:
        problems.append(f"audit table has {rows[0]} rows ({rows[1]} distinct ids) for {executions} executions")
    if audit_stats.get("written") != executions or audit_stats.get("pending"):
        problems.append(f"audit spool {audit_stats} for {executions} executions")
    if stats["requests_total"] != executions or stats["requests_success"] != executions:
        problems.append(f"MetricsPlugin counted {stats['requests_total']} for {executions} executions")
    if records != 2 * executions:
        problems.append(f"request log wrote {records} records for {executions} executions (expected 2 each)")
    exported = st["providers"].log_exporter.count
    if exported != 2 * executions:
        problems.append(f"request log exported {exported} OTel log records for {executions} executions "
                        "(expected 2 each)")
    st["notes"] = [(
        f"destinations: {executions} executions -> webhook receiver {got['received']} payloads "
        f"({got['valid']} valid signatures, {got['unique_ids']} distinct ids; "
        f"{hook_stats.get('retried', 0)} retries), audit table {rows[0]} rows, "
        f"{records} request-log records ({exported} exported as OTel log records), "
        f"MetricsPlugin total {stats['requests_total']}"
    )]
    return problems


def check_pipeline_case(baseline: Side, candidate: Side) -> list[str]:
    """Before timing: the four record processors are in place, and one execution reaches every destination."""
    app: Nexus = candidate.state["app"]
    problems = []
    if not app.telemetry.enabled:
        problems.append("the pipeline host's telemetry is disabled")
    if len(app.records.processors) != 4:
        problems.append(f"expected 4 record processors (request log, metrics, webhook, audit), "
                        f"found {len(app.records.processors)}")
    baseline.run()
    candidate.run()
    problems += _pipeline_problems(candidate)
    candidate.state["background_start"] = _background_snapshot(candidate)
    return problems


def final_check_pipeline_case(baseline: Side, candidate: Side) -> list[str]:
    problems = _pipeline_problems(candidate)
    start = candidate.state.get("background_start")
    if start is not None:
        candidate.state["notes"].append(_background_note(start, _background_snapshot(candidate)))
    return problems


# Where the pipeline's background CPU goes: per-thread CPU clocks (Linux), read on the
# benchmark's thread. The request logger's listener thread is left out: its flush()
# replaces it every round.
BACKGROUND_THREADS = ("nexus-otel-webhooks", "nexus-otel-audit")


def _time_posts(webhook: WebhookPlugin) -> list[float]:
    """Wraps the webhook poster's ``post_all`` to add up the CPU its (worker) thread spends posting.

    Returns the accumulator, [cpu seconds, posts]. Costs two ``thread_time`` calls per batch.
    """
    poster = webhook.exporter._poster  # type: ignore[union-attr]
    post_all = poster.post_all
    acc = [0.0, 0]

    def timed_post_all(posts: Any) -> Any:
        t0 = time.thread_time()
        try:
            return post_all(posts)
        finally:
            acc[0] += time.thread_time() - t0
            acc[1] += len(posts)

    poster.post_all = timed_post_all  # type: ignore[method-assign]
    return acc


def _background_snapshot(candidate: Side) -> dict[str, Any] | None:
    """CPU seconds per background thread group, with the counts that divide them."""
    cpu = thread_cpu(BACKGROUND_THREADS)
    if cpu is None:
        return None
    st = candidate.state
    return {"cpu": cpu, "executions": st["executions"][0], "post_cpu": tuple(st["post_cpu"]),
            "threads": sorted(t.name for t in threading.enumerate() if t.name in BACKGROUND_THREADS)}


def _background_note(start: dict[str, Any], end: dict[str, Any] | None) -> str:
    if end is None or end["threads"] != start["threads"]:
        return "background CPU per execution: not measured (thread clocks unavailable or threads replaced)"
    executions = end["executions"] - start["executions"]
    if executions <= 0:
        return "background CPU per execution: no executions"

    def per_execution(name: str) -> str:
        return f"{(end['cpu'].get(name, 0.0) - start['cpu'].get(name, 0.0)) / executions * 1e6:.0f} us"

    post_cpu = end["post_cpu"][0] - start["post_cpu"][0]
    posts = end["post_cpu"][1] - start["post_cpu"][1]
    webhook = f"webhook worker {per_execution('nexus-otel-webhooks')}"
    if posts:
        webhook += f" (of which the POSTs {post_cpu / posts * 1e6:.0f} us per payload, {posts} payloads)"
    return (f"background CPU per execution, warm-up and rounds ({executions} executions): {webhook}, "
            f"audit worker {per_execution('nexus-otel-audit')} "
            f"(request-log listener not counted)")


CASES = [
    Case(
        key="c", title="full pipeline: host with redaction, request log, metrics, webhook and audit "
                       "vs host with core telemetry (trivial workflow, 3 hooks)",
        baseline_label="core telemetry", candidate_label="full pipeline",
        build=build_pipeline_case, target=1.5, n=100, check=check_pipeline_case,
        final_check=final_check_pipeline_case, budget=25.0, max_rounds=40, total=True,
    ),
]
