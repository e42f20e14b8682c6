"""Throughput of the records path: how fast webhooks are delivered, and at what CPU per payload.

Run::

    python benchmarks/throughput.py              # 3 rounds of 3,000 payloads
    python benchmarks/throughput.py --quick      # 1 round of 1,000

Webhook delivery: a ``WebhookExporter`` (signed payloads,
its SQLite outbox, the concurrent poster with its default ``max_in_flight``)
delivers ``n`` queued payloads to a receiver in another process (its CPU is not
counted) that answers each request after 50 ms (``--delay-ms``). Queued first,
then the worker is started: the figure is the wall time from start to an empty
outbox (deliveries per second) and the CPU of the worker's thread per delivered
payload (read from its own CPU clock: JSON, signing, outbox reads and writes,
the POSTs). Every payload must arrive once (distinct ``webhook-id``s counted
by the receiver); a round that loses or doubles one is reported broken.

Targets: >= 1,000 deliveries per second with a 50 ms receiver; median CPU per
delivered payload <= 150 us, with delivery spans off and on. Each round runs twice,
delivery spans off (``tracer=None``) then on: a real SDK ``TracerProvider`` with a
``BatchSpanProcessor`` (the SDK's defaults) and the OTLP http/protobuf span exporter an
app uses (the SDK's, with nexus-otel's encoder) sending to a loopback receiver in
another process (as the full-pipeline side below). With spans on, the
figure is the worker thread's CPU plus the span export thread's (encoding and
sending the attempt spans) plus the final flush's, per delivered payload; every
attempt span must reach the exporter. The same run measures the CPU of one synchronous
``httpx`` POST to the same receiver (the client the worker used before), so the
CPU figure can be read as a ratio on a machine slower or faster than the one
the target was set on.

Open-loop load (``--pipeline``, or part of the full run): ``--rate`` executions
a second (default 1,000) for ``--seconds`` (default 30) through the Python API,
arrivals on a fixed schedule whatever the completions (a scheduler thread hands
each arrival to a pool of 8 threads). Two sides run the same load, one after
the other, each a fresh app in this process:

- core telemetry: the workflow span, hook spans and the contract metrics; no
  span exporter (``OTEL_TRACES_EXPORTER=none``), no records sinks;
- full pipeline: the same plus OTLP http/protobuf to a loopback receiver (another
  process), ``WebhookPlugin`` (signed) to the 50 ms receiver, and
  ``DatabasePlugin`` on SQLite (both on one outbox file, as by default).

Reported: the arrival rate achieved; the process's CPU per execution over the
load and the drain after it, and its ratio full / core (target <= 2.0); the
webhook outbox backlog each second and at the end of the load, in seconds of
delivery work at the measured delivery rate (target < 2 s); the time from the
end of the load until every payload is delivered and every row written
(target <= 10 s); and the records lost (target 0: distinct webhook ids at the
receiver and audit rows both equal to the executions). To show where the CPU
goes, each side's CPU per execution by thread (the workflow threads, each
worker, the span exporter, the load's own scheduler), and, after both sides,
the CPU of the durable write (one journal append) an execution's two rows take on the workflow's
thread, alone: after 1 ms idle (as under the open-loop load) and back to back.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness import add_smoke_option, cpu_of_thread, process_cpu, smoke_verdict
from loopback_receiver import Receiver
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from nexus_otel import Nexus
from nexus_otel.exporters.delivery_spans import SCRUBBED
from nexus_otel.exporters.otlp_exporters import OTLPHttpSpanExporter
from nexus_otel.exporters.webhook import WebhookExporter
from nexus_otel.outbox import Outbox
from nexus_otel.records import ExecutionRecord
from nexus_otel.telemetry.telemetry import Telemetry

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TARGET_RATE = 1000.0
TARGET_CPU_US = 150.0
DEFAULT_IN_FLIGHT = inspect.signature(WebhookExporter).parameters["max_in_flight"].default
IN_FLIGHT_SWEEP = (32, 64, DEFAULT_IN_FLIGHT)


def _record() -> ExecutionRecord:
    now = time.time()
    return ExecutionRecord(workflow="checkout", workflow_id=str(uuid.uuid4()), status="completed", channel="api",
                           session_id="s1", started_at=now - 0.012, ended_at=now, duration=0.012,
                           trace_id=uuid.uuid4().hex, span_id=uuid.uuid4().hex[:16])


def _thread_cpu(name: str) -> float:
    for thread in threading.enumerate():
        if thread.name == name and thread.ident is not None:
            cpu = cpu_of_thread(thread)
            if cpu is not None:
                return cpu
    raise RuntimeError(f"no thread {name}")


class _CountingExporter(OTLPHttpSpanExporter):
    """The app's OTLP http/protobuf span exporter (the SDK's, its bodies written by nexus-otel's encoder, as an app
    sends with ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``), counting the spans it exported."""

    exported = 0

    def export(self, spans: Any) -> SpanExportResult:
        result = super().export(spans)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        return result


class DeliveryTracing:
    """Delivery spans as an app exports them: its own ``Telemetry`` (so its tracer provider, redaction and the
    lean tracer of :meth:`Telemetry.delivery_tracer`), a ``BatchSpanProcessor`` (the SDK's defaults) and the app's
    OTLP http/protobuf span exporter to ``otlp_base`` (a loopback receiver, another process). ``sdk=True``
    makes the attempt spans with the SDK's own tracer instead, as on a tracer provider the app borrowed."""

    def __init__(self, otlp_base: str, *, sdk: bool = False) -> None:
        before = set(threading.enumerate())
        self.exporter = _CountingExporter(endpoint=f"{otlp_base}/v1/traces")
        self.telemetry = Telemetry("throughput", environ={
            "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"})
        self.telemetry.add_span_processor(BatchSpanProcessor(self.exporter))
        self.threads = [t for t in threading.enumerate() if t not in before]  # the span export thread
        provider = self.telemetry.tracer_provider
        self.tracer = (provider.get_tracer("nexus_otel.webhooks") if sdk
                       else self.telemetry.delivery_tracer("nexus_otel.webhooks", scrubbed=SCRUBBED))
        self.redactor = self.telemetry.redactor

    def cpu(self) -> float:
        """CPU seconds the span export thread has used so far."""
        return sum(cpu_of_thread(t) or 0.0 for t in self.threads)

    def flush(self) -> float:
        """Export what is queued; the CPU seconds that took on this thread (the SDK exports on the caller's)."""
        t0 = time.thread_time()
        self.telemetry.tracer_provider.force_flush()  # type: ignore[attr-defined]
        return time.thread_time() - t0

    def shutdown(self) -> None:
        self.telemetry.shutdown()


def webhook_round(receiver: Receiver, n: int, timeout: float = 120.0,
                  max_in_flight: int | None = None, tracing: DeliveryTracing | None = None) -> dict[str, float]:
    """Queue ``n`` payloads, start the worker, wait for an empty outbox: rate, CPU per payload, checks.

    With ``tracing``, every attempt is a delivery span: the span export thread's CPU (and the final flush's)
    is counted too (``span_cpu_us``), and ``spans`` is how many reached the OTLP exporter.
    """
    before = receiver.count()
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Outbox(os.path.join(tmp, "outbox.sqlite"))
        options: dict[str, Any] = {} if max_in_flight is None else {"max_in_flight": max_in_flight}
        if tracing is not None:
            options["tracer"] = tracing.tracer
            options["redactor"] = tracing.redactor
            spans0, span_cpu0 = tracing.exporter.exported, tracing.cpu()
        exporter = WebhookExporter([receiver.url], outbox, secret=SECRET, **options)
        for _ in range(n):
            exporter.on_end(_record())
        started = time.perf_counter()
        exporter.start()
        cpu0 = _thread_cpu("nexus-otel-webhooks")
        deadline = started + timeout
        while exporter.outbox.counts().get("pending", 0) and time.perf_counter() < deadline:
            time.sleep(0.01)
        wall = time.perf_counter() - started
        cpu = _thread_cpu("nexus-otel-webhooks") - cpu0
        pending = exporter.outbox.counts().get("pending", 0)
        exporter.shutdown(5.0)
    after = receiver.count()
    out = {"rate": n / wall, "cpu_us": cpu / n * 1e6, "pending": pending,
           "received": after["received"] - before["received"],
           "unique": after["unique_ids"] - before["unique_ids"]}
    if tracing is not None:
        flush_cpu = tracing.flush()
        out["span_cpu_us"] = (tracing.cpu() - span_cpu0 + flush_cpu) / n * 1e6
        out["spans"] = tracing.exporter.exported - spans0
    return out


def httpx_post_cpu(url: str, n: int = 200) -> float:
    """CPU microseconds of one synchronous httpx POST of a payload-sized body, same receiver."""
    import httpx
    body = json.dumps(ExecutionRecord.as_dict(_record()), separators=(",", ":")).encode()
    with httpx.Client(timeout=5.0) as client:
        client.post(url, content=body, headers={"webhook-id": "warm"})
        t0 = time.thread_time()
        for i in range(n):
            client.post(url, content=body, headers={"webhook-id": f"httpx-{i}"})
        return (time.thread_time() - t0) / n * 1e6


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux), to tell a saturated machine."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


def _app(side: str, otlp_url: str, webhook_url: str, tmp: str) -> tuple[Nexus, Any, Any]:
    from nexus_otel.plugins import DatabasePlugin, WebhookPlugin

    environ = {"OTEL_SERVICE_NAME": "throughput", "OTEL_METRICS_EXPORTER": "none",
               "NEXUS_OTEL_DATA_DIR": os.path.join(tmp, side)}
    if side == "core":
        environ["OTEL_TRACES_EXPORTER"] = "none"
    else:
        environ.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=otlp_url,
                       OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
    app = Nexus("throughput", environ=environ)
    webhook = database = None
    if side == "full":
        outbox = os.path.join(tmp, "outbox.sqlite")
        webhook = WebhookPlugin(webhook_url, secret=SECRET, outbox_path=outbox)
        database = DatabasePlugin(f"sqlite:///{os.path.join(tmp, 'audit.sqlite')}", spool_path=outbox)
        app.add_plugin(webhook)
        app.add_plugin(database)
    app.register("checkout", lambda inputs: {"total": sum(inputs["prices"])})
    app.start()
    return app, webhook, database


def _load(app: Nexus, rate: float, seconds: float, on_tick: Any = None) -> tuple[int, float, float]:
    """Open loop: ``rate`` arrivals a second for ``seconds``; returns (executions, achieved rate, wall)."""
    total = int(rate * seconds)
    inputs = {"prices": [12.5, 3.0, 7.25]}
    started = time.perf_counter()
    next_tick = started + 1.0
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="load") as pool:
        futures = []
        for i in range(total):
            due = started + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            futures.append(pool.submit(app.execute_workflow, "checkout", inputs))
            if on_tick is not None and now >= next_tick:
                on_tick(now - started)
                next_tick += 1.0
        for future in futures:
            future.result()
        if on_tick is not None:
            on_tick(time.perf_counter() - started)  # while the pool's threads are still there to read
    wall = time.perf_counter() - started
    return total, total / wall, wall


class ThreadCpu:
    """CPU seconds by thread over a run, read each second; a thread that ends keeps what was last read."""

    def __init__(self) -> None:
        self.start = {t: cpu for t in threading.enumerate() if (cpu := cpu_of_thread(t)) is not None}
        self.last: dict[threading.Thread, float] = {}

    def read(self) -> None:
        for t in threading.enumerate():
            cpu = cpu_of_thread(t)
            if cpu is not None:
                self.last[t] = cpu

    def by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for thread, cpu in self.last.items():
            name = thread.name
            role = "workflow threads" if name.startswith("load") else "load scheduler" if name == "MainThread" else name
            roles[role] = roles.get(role, 0.0) + cpu - self.start.get(thread, 0.0)
        return roles


def commit_cost(directory: str, n: int = 2000) -> tuple[float, float]:
    """CPU (us) of the durable write an execution's two rows take on its thread: (after 1 ms idle, back to back).

    The full pipeline pays this once per execution, on the workflow's thread, before the
    caller gets its result; a thread that slept between executions (as under an open-loop
    load) finds its caches cold, and pays the first figure.
    """
    outbox = Outbox(os.path.join(directory, "commit-cost.sqlite"))
    payload = _record().to_json()
    out = []
    try:
        for gap in (0.001, 0.0):
            cpu = 0.0
            for i in range(n):
                t0 = time.thread_time()
                outbox.enqueue([(f"msg_{gap}_{i}", "http://127.0.0.1:9/hook", payload),
                                (f"{gap}_{i}", "audit", payload)])
                cpu += time.thread_time() - t0
                if gap:
                    time.sleep(gap)
            out.append(cpu / n * 1e6)
    finally:
        outbox.close()
    return out[0], out[1]


def pipeline(rate: float, seconds: float, webhook_receiver: Receiver, commit_n: int = 2000) -> dict[str, Any]:
    otlp = Receiver(0)
    out: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for side in ("core", "full"):
                app, webhook, database = _app(side, otlp.base, webhook_receiver.url, tmp)
                before = webhook_receiver.count()
                backlog: list[tuple[float, int]] = []
                threads = ThreadCpu()

                def ticks(at: float, webhook: Any = webhook, threads: ThreadCpu = threads,
                          backlog: list[tuple[float, int]] = backlog) -> None:
                    threads.read()
                    if webhook is not None:
                        backlog.append((at, webhook.stats()["outbox_pending"]))
                cpu0 = time.process_time()
                busy0, total0 = _machine_busy()
                receivers0 = process_cpu(webhook_receiver.proc.pid) + process_cpu(otlp.proc.pid)
                n, achieved, wall = _load(app, rate, seconds, ticks)
                busy1, total1 = _machine_busy()
                receivers_cpu = process_cpu(webhook_receiver.proc.pid) + process_cpu(otlp.proc.pid) - receivers0
                end_backlog = webhook.stats()["outbox_pending"] if webhook else 0
                load_end = time.perf_counter()
                drained_after = 0.0
                if side == "full":
                    while time.perf_counter() - load_end < 120:
                        if (webhook.stats()["outbox_pending"] == 0 and database.stats()["pending"] == 0
                                and webhook_receiver.count()["unique_ids"] - before["unique_ids"] >= n):
                            break
                        time.sleep(0.05)
                    drained_after = time.perf_counter() - load_end
                app.telemetry.force_flush()
                threads.read()
                cpu = time.process_time() - cpu0
                result = {"executions": n, "achieved": achieved, "wall": wall, "cpu_us": cpu / n * 1e6,
                          "machine_busy": (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0,
                          "receivers_cores": receivers_cpu / wall,
                          "backlog": backlog, "end_backlog": end_backlog, "drained_after": drained_after,
                          "threads_us": {role: v / n * 1e6 for role, v in threads.by_role().items()}}
                if side == "full":
                    import sqlite3
                    with sqlite3.connect(os.path.join(tmp, "audit.sqlite")) as db:
                        rows = db.execute("SELECT count(DISTINCT workflow_id) FROM workflow_executions").fetchone()[0]
                    result["audit_rows"] = rows
                    result["webhook_ids"] = webhook_receiver.count()["unique_ids"] - before["unique_ids"]
                app.stop()
                out[side] = result
            out["commit_us"] = commit_cost(tmp, commit_n)
    finally:
        otlp.stop()
    return out


def records_lost(full: dict[str, Any]) -> int:
    """Executions of the full side whose webhook payload did not arrive or whose audit row was not written."""
    return (full["executions"] - full["webhook_ids"]) + (full["executions"] - full["audit_rows"])


def broken_rounds(rounds: list[dict[str, Any]], n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The delivery rounds that lost or doubled a payload (or left one), and those that lost an attempt span."""
    broken = [r for r in rounds if r["pending"] or r["unique"] != n or r["received"] != n]
    return broken, [r for r in rounds if "spans" in r and r["spans"] != r["received"]]


def smoke(delay_ms: float) -> int:
    """``--smoke``: a delivery round with spans off and one with them on, then a second of open-loop load, each
    with its checks (every payload once, every attempt span, no record lost); figures meaningless."""
    n = 100
    receiver, otlp = Receiver(delay_ms), Receiver(0)
    tracing = DeliveryTracing(otlp.base)
    try:
        rounds = [webhook_round(receiver, n), webhook_round(receiver, n, tracing=tracing)]
        res = pipeline(200.0, 1.0, receiver, commit_n=50)
    finally:
        receiver.stop()
        tracing.shutdown()
        otlp.stop()
    for r in rounds:
        print(f"webhook delivery: {r['received']} received, {r['unique']} distinct ids, {r['pending']} left"
              + (f", {r['spans']} spans exported" if "spans" in r else ""))
    report_pipeline(res, 200.0, rounds[0]["rate"])
    broken, lost_spans = broken_rounds(rounds, n)
    problems = [f"a delivery round lost or doubled payloads: {r}" for r in broken]
    problems += [f"a delivery round lost attempt spans: {r}" for r in lost_spans]
    if records_lost(res["full"]):
        problems.append(f"the open-loop load lost {records_lost(res['full'])} records")
    return smoke_verdict(problems)


def report_pipeline(res: dict[str, Any], rate: float, delivery_rate: float) -> bool:
    core, full = res["core"], res["full"]
    ratio = full["cpu_us"] / core["cpu_us"]
    lost = records_lost(full)
    backlog_s = full["end_backlog"] / delivery_rate if delivery_rate else float("inf")
    print(f"open-loop load: {rate:g} executions/s asked for {full['executions'] / rate:g} s")
    for name, side in (("core telemetry", core), ("full pipeline", full)):
        print(f"  {name:<15} achieved {side['achieved']:.0f}/s, CPU {side['cpu_us']:.0f} us per execution "
              f"(load + drain, whole process); during the load the machine's {os.cpu_count()} CPUs were "
              f"{side['machine_busy']:.0%} busy, the receiver processes used {side['receivers_cores']:.2f} CPUs")
    print(f"  CPU ratio full / core: {ratio:.2f} (target <= 2.0) {'PASS' if ratio <= 2.0 else 'FAIL'}")
    print("  where it went, us per execution by thread (core -> full):")
    roles = sorted(set(core["threads_us"]) | set(full["threads_us"]), key=lambda r: -full["threads_us"].get(r, 0.0))
    for role in roles:
        before, after = core["threads_us"].get(role, 0.0), full["threads_us"].get(role, 0.0)
        if max(before, after) >= 1:
            print(f"    {role:<30} {before:6.0f} -> {after:6.0f}")
    cold, hot = res["commit_us"]
    print(f"  of which the durable write (journal append) of an execution's two rows (same run, alone): "
          f"{cold:.0f} us CPU after 1 ms idle, {hot:.0f} us back to back")
    print(f"  webhook backlog by second: {[b for _, b in full['backlog']]}")
    print(f"  backlog at the end of the load: {full['end_backlog']} payloads = {backlog_s:.2f} s of delivery "
          f"at {delivery_rate:.0f}/s (target < 2 s) {'PASS' if backlog_s < 2 else 'FAIL'}")
    print(f"  everything delivered and written {full['drained_after']:.1f} s after the load "
          f"(target <= 10 s) {'PASS' if full['drained_after'] <= 10 else 'FAIL'}")
    print(f"  records lost: {lost} ({full['webhook_ids']} webhook ids, {full['audit_rows']} audit rows for "
          f"{full['executions']} executions) {'PASS' if lost == 0 else 'FAIL'}")
    return ratio <= 2.0 and backlog_s < 2 and full["drained_after"] <= 10 and lost == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--pipeline", action="store_true", help="only the open-loop pipeline load")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    add_smoke_option(parser, "two delivery rounds of 100 and a second of open-loop load at 200/s")
    args = parser.parse_args(argv)
    if args.smoke:
        return smoke(args.delay_ms)
    rounds, n = (1, 1000) if args.quick else (3, 3000)
    receiver = Receiver(args.delay_ms)
    if args.pipeline:
        try:
            webhook_round(receiver, 100)  # warm-up
            delivery = webhook_round(receiver, n)["rate"]
            ok = report_pipeline(pipeline(args.rate, args.seconds, receiver), args.rate, delivery)
        finally:
            receiver.stop()
        return 0 if ok else 2
    otlp = Receiver(0)
    tracing = DeliveryTracing(otlp.base)
    sdk_tracing = DeliveryTracing(otlp.base, sdk=True)
    try:
        webhook_round(receiver, 100)  # warm-up
        webhook_round(receiver, 100, tracing=tracing)
        webhook_round(receiver, 100, tracing=sdk_tracing)
        results, traced, sdk_traced = [], [], []
        for _ in range(rounds):  # off and on in turn: a machine that slows down slows all
            results.append(webhook_round(receiver, n))
            traced.append(webhook_round(receiver, n, tracing=tracing))
            sdk_traced.append(webhook_round(receiver, n, tracing=sdk_tracing))
        # Why the default max_in_flight: a receiver answering in 50 ms allows 20 requests a second per
        # connection, so the rate follows the requests in flight (Little's law) until the CPU limits it.
        by_in_flight = {k: webhook_round(receiver, n, max_in_flight=k)["rate"] for k in IN_FLIGHT_SWEEP}
        fast = Receiver(0)
        try:
            httpx_cpu = httpx_post_cpu(fast.url)
        finally:
            fast.stop()
    finally:
        receiver.stop()
        tracing.shutdown()
        sdk_tracing.shutdown()
        otlp.stop()
    broken, lost_spans = broken_rounds(results + traced + sdk_traced, n)
    rate = statistics.median(r["rate"] for r in results)
    cpu = statistics.median(r["cpu_us"] for r in results)
    print(f"webhook delivery: {rounds} rounds of {n} queued payloads to a receiver answering in "
          f"{args.delay_ms:g} ms (another process)")
    for i, r in enumerate(results, 1):
        print(f"  round {i}: {r['rate']:.0f} deliveries/s, {r['cpu_us']:.0f} us CPU per payload (worker thread), "
              f"{r['received']} received, {r['unique']} distinct ids, {r['pending']} left")
    print(f"  median: {rate:.0f} deliveries/s (target >= {TARGET_RATE:.0f}) "
          f"{'PASS' if rate >= TARGET_RATE else 'FAIL'}")
    print(f"  median: {cpu:.0f} us CPU per delivered payload (target <= {TARGET_CPU_US:.0f}) "
          f"{'PASS' if cpu <= TARGET_CPU_US else 'FAIL'}; one synchronous httpx POST costs {httpx_cpu:.0f} us "
          f"here, so the worker's whole cost per payload is {cpu / httpx_cpu:.2f}x one httpx POST")
    sweep = ", ".join(f"{k}: {rate:.0f}/s" for k, rate in by_in_flight.items())
    print(f"  one round each by max_in_flight (the default is {DEFAULT_IN_FLIGHT}): {sweep}")
    print("  with delivery spans on (the app's telemetry and its lean delivery tracer, a BatchSpanProcessor, OTLP "
          "http/protobuf to a loopback receiver, another process), the same rounds:")
    for i, r in enumerate(traced, 1):
        print(f"  round {i}: {r['rate']:.0f} deliveries/s, {r['cpu_us']:.0f} us worker thread + "
              f"{r['span_cpu_us']:.0f} us span export = {r['cpu_us'] + r['span_cpu_us']:.0f} us CPU per payload, "
              f"{r['spans']} spans exported for {r['received']} requests")
    traced_rate = statistics.median(r["rate"] for r in traced)
    traced_cpu = statistics.median(r["cpu_us"] + r["span_cpu_us"] for r in traced)
    print(f"  median with delivery spans on: {traced_rate:.0f} deliveries/s, {traced_cpu:.0f} us CPU per delivered "
          f"payload (target <= {TARGET_CPU_US:.0f}) {'PASS' if traced_cpu <= TARGET_CPU_US else 'FAIL'}; "
          f"off: {cpu:.0f} us; the spans cost {traced_cpu - cpu:.0f} us per payload")
    export_cpu = statistics.median(r["span_cpu_us"] for r in traced)
    floor = cpu + export_cpu
    print(f"  ceiling: a span that cost nothing to make would still cost its export ({export_cpu:.0f} us on the "
          f"span export thread), so with delivery spans on no payload can cost less than {cpu:.0f} + "
          f"{export_cpu:.0f} = {floor:.0f} us here (target {TARGET_CPU_US:.0f}: "
          f"{'within reach' if floor <= TARGET_CPU_US else 'out of reach'}); making the spans adds "
          f"{traced_cpu - floor:.0f} us")
    sdk_cpu = statistics.median(r["cpu_us"] + r["span_cpu_us"] for r in sdk_traced)
    print("  the same spans made by the SDK's tracer (a borrowed provider), same rounds: "
          + ", ".join(f"{r['cpu_us'] + r['span_cpu_us']:.0f}" for r in sdk_traced)
          + f" us; median {sdk_cpu:.0f} us CPU per payload, the spans {sdk_cpu - cpu:.0f} us")
    if broken or lost_spans:
        print(f"  BROKEN: {len(broken)} rounds lost or doubled payloads, {len(lost_spans)} rounds lost attempt spans")
        return 1
    ok = rate >= TARGET_RATE and cpu <= TARGET_CPU_US and traced_cpu <= TARGET_CPU_US
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
