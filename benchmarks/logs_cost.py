"""What exporting logs costs a served app: HTTP throughput with logs exported over the same app without.

Run::

    python benchmarks/logs_cost.py            # about 2 minutes
    python benchmarks/logs_cost.py --quick    # about 1 minute, noisier

Every server serves the throughput benchmark's app (``benchmarks/http_app.py``: one
workflow, three trivial hooks) with full telemetry (spans to the local store, metrics
on ``/metrics``) and ``RequestLoggerPlugin(output=None)``: two request-log records per
request. They differ in ``OTEL_LOGS_EXPORTER`` alone:

* ``logs-off``: ``none``, the baseline;
* ``logs-otlp``: OTLP/HTTP to a loopback sink in a process of its own
  (``benchmarks/loopback_receiver.py``, answering 200 at once): what a user with an
  OTLP endpoint gets;
* ``logs-local``: the local log store (the default with no endpoint).

Each round measures every server once, the order rotating each round, with the load
generator of ``http_throughput.py`` (``wrk`` if on PATH, else its asyncio client).
The figure per server is the median requests/s over the rounds; the ratio is the
exporting server's median over ``logs-off``'s (target >= 0.9), with the median of the
per-round ratios beside it. Checks: the sink received log exports, the local store
holds about two records per request, and every response was a 200. The script exits
0 whatever the ratio; 1 only when it could not measure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

from http_throughput import Load, Server, metric_total, start_server, stop_server, wait_ready  # noqa: E402
from loopback_receiver import Receiver  # noqa: E402

TARGET = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisier)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 8, quick 4)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round and server (default 3)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--client-kind", choices=("auto", "wrk", "asyncio"), default="auto")
    args = parser.parse_args(argv)
    rounds = args.rounds or (4 if args.quick else 8)
    seconds = args.seconds or (2.0 if args.quick else 3.0)
    kind = args.client_kind if args.client_kind != "auto" else ("wrk" if shutil.which("wrk") else "asyncio")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="nexus-otel-logs-bench-"))
    sink = Receiver(0.0)
    servers: list[Server] = []
    try:
        common = {"BENCH_REQUEST_LOG": "1", "OTEL_BSP_SCHEDULE_DELAY": "500"}
        variants = {
            "logs-off": {"OTEL_LOGS_EXPORTER": "none"},
            "logs-otlp": {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_TRACES_EXPORTER": "local",
                          "OTEL_METRICS_EXPORTER": "none",
                          "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": sink.base + "/v1/logs"},
            "logs-local": {"OTEL_LOGS_EXPORTER": "local"},
        }
        for name, env in variants.items():
            servers.append(start_server(name, workdir, False, 0.0, False, {**common, **env}))
        load = Load(kind, args.connections, workdir)
        print(f"logs cost: {load.describe()}; {rounds} rounds x {seconds:g} s per server; "
              f"python {sys.version.split()[0]}; {os.cpu_count()} cores")
        for server in servers:
            wait_ready(server)
            load.run(server, 2.0)  # warm-up, discarded
        for r in range(rounds):
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            for server in order:
                rate, errors = load.run(server, seconds)
                server.rates.append(rate)
                server.errors += errors
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{s.variant} {s.rates[-1]:.0f} req/s" for s in servers),
                  flush=True)
        executions = {s.variant: metric_total(s, "nexus_workflow_executions_total") or 0.0 for s in servers}
    except (RuntimeError, OSError) as exc:
        print(f"benchmark could not run: {exc}")
        return 1
    finally:
        for server in servers:
            stop_server(server)
        received = sink.count()["received"]
        sink.stop()

    problems = [f"{s.variant}: {s.errors} non-200 responses or socket errors" for s in servers if s.errors]
    if received == 0:
        problems.append("logs-otlp: the sink received no log export")
    local = servers[2]
    lines = sum(len(f.read_bytes().splitlines()) for f in local.data_dir.glob("logs*.jsonl"))
    records = sum(f.read_bytes().count(b'"nexus.workflow.name"') for f in local.data_dir.glob("logs*.jsonl"))
    if records < 1.9 * executions["logs-local"]:
        problems.append(f"logs-local: {records} request-log records in the store for "
                        f"{executions['logs-local']:.0f} executions")
    if any(servers[0].data_dir.glob("logs*.jsonl")):
        problems.append("logs-off: log records were written")
    shutil.rmtree(workdir, ignore_errors=True)

    base = servers[0]
    print()
    for server in servers:
        print(f"{server.variant:<11} median {statistics.median(server.rates):7.0f} req/s  "
              f"(min {min(server.rates):.0f}, max {max(server.rates):.0f})  "
              f"{executions[server.variant]:.0f} executions")
    for server in servers[1:]:
        ratio = statistics.median(server.rates) / statistics.median(base.rates)
        paired = statistics.median(s / b for s, b in zip(server.rates, base.rates))
        verdict = "PASS" if ratio >= TARGET and not problems else "FAIL"
        print(f"ratio {server.variant}/logs-off: {ratio:.3f}  (paired {paired:.3f})  target >= {TARGET}  {verdict}")
    print(f"the sink received {received} OTLP log exports; the local store holds {records} request-log records "
          f"in {lines} lines")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    print(f"total elapsed: {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
