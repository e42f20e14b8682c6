"""What exporting logs costs a served app: HTTP throughput with logs exported over the same app without.

Run::

    python benchmarks/logs_cost.py            # about 3 minutes
    python benchmarks/logs_cost.py --quick    # about 1.5 minutes, noisier

Every server serves the throughput benchmark's app (``benchmarks/http_app.py``: one
workflow, three trivial hooks) with full telemetry (spans to the local store, metrics on
``/metrics``). They differ in the request log and in ``OTEL_LOGS_EXPORTER``:

* ``lines-off``: ``RequestLoggerPlugin()`` writing its lines (to stderr, a file here: the
  plugin's default output) and logs not exported (``none``): the baseline of the first figure;
* ``lines-otlp``: the same, the logs signal exported over OTLP/HTTP to a loopback sink in a
  process of its own (``benchmarks/loopback_receiver.py``, answering 200 at once). Its ratio
  over ``lines-off`` is what exporting logs costs an app with request logging on: the
  acceptance figure (target >= 0.9);
* ``no-log``: no request log at all, logs not exported: the baseline of the figures below;
* ``otlp-only``: ``RequestLoggerPlugin(output=None)``, no lines, its records exported over
  OTLP/HTTP to the sink: the whole request log, exported, over an app with none;
* ``local-only``: the same to the local log store (the default with no endpoint);
* ``sdk-logs``: no request log; instead the raw OpenTelemetry SDK makes the same two log
  records a request on a worker thread and exports them with its own OTLP/HTTP exporter
  (``benchmarks/sdk_log_floor.py``): a ceiling for ``otlp-only`` while log records go
  through the SDK's pipeline. (Not named ``sdk-floor``: ``http_throughput.py`` gives that
  name its own server, the span floor, with telemetry disabled.)

Each round measures every server once, the order rotating each round, with the load
generator of ``http_throughput.py`` (``wrk`` if on PATH, else its asyncio client). The
figure per server is the median requests/s over the rounds, with the median of the
per-round ratios beside it. Checks: the sink received log exports, the local store holds
about two records per request, every response was a 200. The script exits 0 whatever the
ratios; 1 only when it could not measure, or, with ``--smoke`` (one short round, figures meaningless), when a
check failed.
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

from harness import add_smoke_option, paired_ratio, ratio_of_medians, rotated, smoke_verdict  # noqa: E402
from http_throughput import Load, Server, metric_total, start_server, stop_server, wait_ready  # noqa: E402
from loopback_receiver import Receiver  # noqa: E402

TARGET = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisier)")
    add_smoke_option(parser, "1 round of 0.5 s, no warm-up")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 6, quick 3, smoke 1)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round and server (default 3)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--client-kind", choices=("auto", "wrk", "asyncio"), default="auto")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.smoke else 3 if args.quick else 6)
    seconds = args.seconds or (0.5 if args.smoke else 2.0 if args.quick else 3.0)
    kind = args.client_kind if args.client_kind != "auto" else ("wrk" if shutil.which("wrk") else "asyncio")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="nexus-otel-logs-bench-"))
    sink = Receiver(0.0)
    servers: list[Server] = []
    try:
        common = {"OTEL_BSP_SCHEDULE_DELAY": "500"}
        otlp = {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": sink.base + "/v1/logs"}
        variants = {
            "lines-off": {"BENCH_REQUEST_LOG": "lines", "OTEL_LOGS_EXPORTER": "none"},
            "lines-otlp": {"BENCH_REQUEST_LOG": "lines", **otlp},
            "no-log": {"OTEL_LOGS_EXPORTER": "none"},
            "otlp-only": {"BENCH_REQUEST_LOG": "none", **otlp},
            "local-only": {"BENCH_REQUEST_LOG": "none", "OTEL_LOGS_EXPORTER": "local"},
            "sdk-logs": {"BENCH_REQUEST_LOG": "sdk-floor", "OTEL_LOGS_EXPORTER": "none",
                          "BENCH_SDK_LOG_ENDPOINT": sink.base + "/v1/logs"},
        }
        for name, env in variants.items():
            servers.append(start_server(name, workdir, False, 0.0, False, {**common, **env}))
        load = Load(kind, args.connections, workdir)
        print(f"logs cost: {load.describe()}; {rounds} rounds x {seconds:g} s per server; "
              f"python {sys.version.split()[0]}; {os.cpu_count()} cores")
        for server in servers:
            wait_ready(server)
            if not args.smoke:
                load.run(server, 2.0)  # warm-up, discarded
        for r in range(rounds):
            for server in rotated(servers, r):
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
        problems.append("the sink received no log export")
    by_name = {s.variant: s for s in servers}
    local = by_name["local-only"]
    records = sum(f.read_bytes().count(b'"nexus.workflow.name"') for f in local.data_dir.glob("logs*.jsonl"))
    if records < 1.9 * executions["local-only"]:
        problems.append(f"local-only: {records} request-log records in the store for "
                        f"{executions['local-only']:.0f} executions")
    for quiet in ("lines-off", "no-log", "sdk-logs"):
        if any(by_name[quiet].data_dir.glob("logs*.jsonl")):
            problems.append(f"{quiet}: log records were written to the local store")
    shutil.rmtree(workdir, ignore_errors=True)

    print()
    for server in servers:
        print(f"{server.variant:<11} median {statistics.median(server.rates):7.0f} req/s  "
              f"(min {min(server.rates):.0f}, max {max(server.rates):.0f})  "
              f"{executions[server.variant]:.0f} executions")

    def ratio(candidate: str, baseline: str, judged: bool, note: str) -> None:
        c, b = by_name[candidate], by_name[baseline]
        value, paired = ratio_of_medians(c.rates, b.rates), paired_ratio(c.rates, b.rates)
        verdict = ("PASS" if value >= TARGET and not problems else "FAIL") if judged else "reported"
        target = f"target >= {TARGET}  " if judged else ""
        print(f"ratio {candidate}/{baseline}: {value:.3f}  (paired {paired:.3f})  {target}{verdict}  [{note}]")

    ratio("lines-otlp", "lines-off", True, "exporting logs, request logging on: the acceptance figure")
    ratio("otlp-only", "no-log", False, "the whole request log, exported, over an app with none")
    ratio("local-only", "no-log", False, "the same to the local log store")
    ratio("sdk-logs", "no-log", False, "ceiling: the raw SDK making and exporting the same log records")
    print(f"the sink received {received} OTLP log exports; the local store holds {records} request-log records")
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    print(f"total elapsed: {time.monotonic() - started:.1f} s")
    return smoke_verdict(problems) if args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
