"""Per-execution overhead of the nexus-otel host, each case measured against a baseline.

Run::

    python benchmarks/overhead.py            # full run (about 60 s idle; at most ~140 s loaded)
    python benchmarks/overhead.py --quick    # shorter, noisier run (about 15 s)
    python benchmarks/overhead.py --case a   # only some cases (repeatable; ``d`` runs d, d-jwt, d-key)

Every case builds a *baseline* and a *candidate*, both fresh, in this process.
They run in alternating rounds (the order flips each round, so drift and
frequency changes hit both sides alike), each round timing ``n`` executions
with the garbage collector paused. The figure per side is the median over
rounds of the per-execution time. The ratio judged against the target is the
median over rounds of that round's candidate / baseline (the two ran back to
back, so a slow spell of the machine mostly cancels out); the ratio of the two
medians is printed beside it.

The method (rounds, alternation, clocks, medians) is ``harness.py``'s, the hosts and servers the
cases share are ``fixtures.py``'s, and each case is a module of ``cases/``. To add one, write a
module there whose ``CASES`` lists ``harness.Case``s (a ``build(clock)`` returning fresh baseline
and candidate ``Side``s, a target ratio or None (reported only), optional checks) and add it to
``CASES`` below. The cases:

(a) full telemetry: the host with full telemetry (workflow span, three hook
    spans, the contract metrics) over a reference doing the same spans and
    metrics with the raw OpenTelemetry SDK and no host. Target <= 1.25.
(a-lean) the same reference against the host as most apps run it: on a tracer and meter
    provider it built itself (its lean tracer, its pre-aggregated metrics), spans going through
    its redaction to the same discarding exporter. Reported, no target: how far below the raw
    SDK the host's own path is. (``--case a`` runs both.)
(b) telemetry disabled: the host under ``OTEL_SDK_DISABLED=true`` over the same host
    with the telemetry code removed (``BareHost`` below), on a workflow that
    busy-waits 100 microseconds (of the measuring clock). Target <= 1.05.
(c) full pipeline: the host with core telemetry (as (a)'s candidate) plus
    RequestLoggerPlugin (JSON, to a handler that writes to /dev/null, and each record
    exported as an OTel log record: every host has a LoggerProvider whose batch
    processor feeds a discarding exporter, as with ``OTEL_LOGS_EXPORTER`` set),
    MetricsPlugin, WebhookPlugin (signed, posting to a receiver on 127.0.0.1 that
    answers 200 at once, run as a subprocess) and DatabasePlugin (SQLite audit
    table), all four record processors (every execution, never sampled), over the
    host with core telemetry alone. Records are durable on return: each
    execution's webhook payload and audit row are written to their
    outboxes on the executing thread before ``execute_workflow`` returns, so
    those writes are on the hot path. Log formatting and writing, webhook
    delivery and audit writes run on background threads (log listener, outbox
    workers), so every round yields two figures per side:
      - hot path (judged, target <= 1.5): the CPU time of the thread that runs the
        executions, around the execution loop only; this is what a workflow pays;
      - total CPU incl. background delivery (reported, not judged): the process's
        CPU time around the loop plus a drain that ends the round (``force_flush``,
        a wait until both outboxes are empty, the request logger's ``flush()``), so
        a round's total includes delivering everything it produced.
    The breakdown line gives the background threads' CPU per execution (webhook
    worker, audit worker), with the POSTs (our HTTP/1.1 client, concurrent) measured on
    its own. After the rounds the receiver must have received, and the audit table
    must hold, exactly one payload / row per execution, and the request log must
    have written two records per execution.
(c-pg) the shared outbox: (c)'s candidate with ``Nexus(outbox=<PostgreSQL URL>)`` and DatabasePlugin on the
    same database (the audit row joins the enqueue's transaction), against a PostgreSQL the case starts with its
    defaults (fsync and synchronous_commit on); (c-pg-fast) the same with both off. Reported beside (c), no
    target; the note gives the wall time and the database's CPU per execution (``cases/shared_outbox.py``).
(d) auth: the host with core telemetry plus ``AuthPlugin(strategy="oidc", issuer=<a key
    server on 127.0.0.1, a thread of this process>, audience="bench", jwks_url=<its
    /jwks.json>)``, every execution called with ``Caller(bearer_token=<a valid RS256 token
    signed with the server's key: sub, scope, a day's expiry>)``, over the host with core
    telemetry alone, called with the same ``Caller``. No target: the ratio and the extra
    microseconds per execution are reported. PyJWKClient caches the key set after the first
    fetch; the server must have served exactly one JWKS fetch after the check, warm-up and
    rounds. Before timing, one execution must carry ``enduser.id`` on its workflow span and a
    token with a forged signature must be turned away (the one counted auth failure). Two
    variant lines, same baseline and checks: (d-jwt) ``strategy="jwt"`` with an HS256 shared
    secret (same issuer and audience checks), (d-key) ``strategy="api_key"`` with one stored key.
(e) rate limit: the host with core telemetry plus ``RateLimitPlugin(limit=10**9, burst=10**8,
    key="client")`` (in-memory moving windows), called with ``Caller(client_address="127.0.0.1")``, over the
    host with core telemetry alone, called the same way. Reported, no target. It never
    rejects: after the rounds ``nexus.ratelimit.rejections`` must be empty and the minute
    window must hold one hit per execution. The in-memory moving window keeps one entry per
    hit, so its cost grows with the hits held (the note under the case gives the count).

Time is CPU time by default (``--clock cpu``): on a shared, loaded machine,
time spent descheduled would otherwise land on whichever side happened to be
running. For (a), (b), (c)'s hot path, (d) and (e) it is this thread's; for (c)'s total
the process's (every thread). ``--clock process`` uses the process's CPU time for
(a), (b), (d) and (e) ((c) keeps its two clocks). ``--clock wall`` uses ``perf_counter``
instead, for both of (c)'s figures too (its total then also counts the drain's
waiting: network round trips and the receiver's time).

The script always exits 0: it reports, it does not gate.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

from cases import auth, disabled, floor, lean, pipeline, rate_limit, shared_outbox, tail, telemetry
from fixtures import AUXILIARY_BUDGET
from harness import (
    CLOCK_NAMES,
    CLOCKS,
    MIN_ROUNDS,
    Case,
    Result,
    add_smoke_option,
    format_ratio,
    measure,
    smoke_verdict,
)
from opentelemetry.sdk import version as otel_sdk_version

from nexus_otel.errors import NexusOtelError

perf_counter = time.perf_counter
SMOKE_ROUNDS = 2
SMOKE_EXECUTIONS = 5  # per side, per round and for the warm-up

# In the order they run and print.
CASES: list[Case] = [
    *telemetry.CASES, *lean.CASES, *disabled.CASES, *pipeline.CASES, *shared_outbox.CASES, *floor.CASES,
    *tail.CASES,
    *auth.CASES, *rate_limit.CASES,
]


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:8.2f}"


def _spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return f"{q[0] * 1e6:.1f}-{q[-1] * 1e6:.1f}"


def report(results: list[Result]) -> None:
    print()
    print("per-execution time: median over rounds, microseconds")
    header = (f"{'case':<5} {'baseline':<17} {'base us':>9} {'candidate':<16} {'cand us':>9} "
              f"{'+us':>7} {'ratio':>6} {'r.o.m.':>6} {'target':>7}  verdict")
    print(header)
    print("-" * len(header))
    for r in results:
        if r.problems:
            verdict = "FAIL (check)"
        elif r.case.target is None:
            verdict = "reported"
        else:
            verdict = "PASS" if r.passed else "FAIL"
        target = "-" if r.case.target is None else "<= " + format(r.case.target, ".2f")
        print(
            f"{r.case.key:<5} {r.case.baseline_label:<17} {_us(r.base_median):>9} "
            f"{r.case.candidate_label:<16} {_us(r.cand_median):>9} "
            f"{(r.cand_median - r.base_median) * 1e6:>7.2f} {format_ratio(r.ratio, r.case.target):>6} "
            f"{r.ratio_of_medians:>6.3f} "
            f"{target:>7}  {verdict}"
        )
    for r in results:
        if not r.base_total:
            continue
        print()
        whose = "" if r.clock == "wall" else " of the thread running the executions"
        print(f"({r.case.key}) hot path, judged above: {CLOCK_NAMES[r.clock]}{whose}, execution loop only")
        base, cand = statistics.median(r.base_total), statistics.median(r.cand_total)
        total = "total" if r.total_clock == "wall" else "total CPU"
        print(f"({r.case.key}) {total} incl. background delivery, informational ({CLOCK_NAMES[r.total_clock]}, "
              f"executions + drain every round): {r.case.baseline_label} {base * 1e6:.2f} us, "
              f"{r.case.candidate_label} {cand * 1e6:.2f} us, +{(cand - base) * 1e6:.2f} us, "
              f"ratio {r.total_ratio:.3f}, r.o.m. {r.total_ratio_of_medians:.3f}")
    print()
    for r in results:
        print(f"({r.case.key}) {r.case.title}")
        cut = f" (of {r.rounds_planned}: time budget reached)" if len(r.baseline) < r.rounds_planned else ""
        what = "hot path, " if r.base_total else ""
        print(f"    rounds={len(r.baseline)}{cut}  {what}{CLOCK_NAMES[r.clock]}  "
              f"baseline IQR [{_spread(r.baseline)}] us  candidate IQR [{_spread(r.candidate)}] us")
        if r.base_total:
            print(f"    total, {CLOCK_NAMES[r.total_clock]}  baseline IQR [{_spread(r.base_total)}] us  "
                  f"candidate IQR [{_spread(r.cand_total)}] us")
        if r.case.target is None:
            print(f"    extra per execution: {r.paired_extra * 1e6:.2f} us (median over rounds of candidate - "
                  f"baseline); ratio {r.ratio:.3f} (reported, no target)")
        for note in r.notes:
            print(f"    {note}")
        for p in r.problems:
            print(f"    CHECK FAILED: {p}")
    print()
    print("ratio = median over rounds of candidate/baseline (judged against the target, for (c) the hot "
          "path's; (d) and (e) are reported, without a target); r.o.m. = median(candidate) / median(baseline)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisier)")
    add_smoke_option(parser, "every case, 2 rounds of 5 executions per side")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default 60, (c) 40; quick 30; smoke 2)")
    parser.add_argument("--budget", type=float, default=None,
                        help=f"wall seconds per case before rounds stop early (never under "
                             f"{MIN_ROUNDS} rounds; default 35, (c) 25, (d), (d-jwt), (d-key) and (e) "
                             f"{AUXILIARY_BUDGET:g}; quick 8)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: CPU time (default; robust on a loaded machine): this thread's for (a), (b) "
                             "and (c)'s hot path, the whole process's for (c)'s total; process: the "
                             "process's for (a) and (b); wall: perf_counter for every figure")
    groups = sorted({c.key.split("-")[0] for c in CASES} | {c.key for c in CASES})
    parser.add_argument("--case", action="append", choices=groups,
                        help="run only this case (repeatable); d runs d, d-jwt and d-key")
    args = parser.parse_args(argv)

    t0 = perf_counter()
    scale = 0.3 if args.quick else 1.0
    selected = [case for case in CASES
                if not args.case or case.key in args.case or case.key.split("-")[0] in args.case]
    print(f"nexus-otel overhead benchmark  python {platform.python_version()}  "
          f"opentelemetry-sdk {otel_sdk_version.__version__}  nproc {os.cpu_count()}  "
          f"{'smoke' if args.smoke else 'quick' if args.quick else 'full'} run, {args.clock} clock")
    results = []
    broken = []
    for case in selected:
        default_rounds = SMOKE_ROUNDS if args.smoke else 30 if args.quick else 60
        if case.max_rounds:
            default_rounds = min(default_rounds, case.max_rounds)
        rounds = max(1, args.rounds or default_rounds)
        budget = args.budget or (8.0 if args.quick else (case.budget or 35.0))
        clock = case.clock if (args.clock == "cpu" and case.clock) else args.clock
        total_clock = None
        if case.total:  # hot path on this thread's CPU clock, total on the process's (or both wall)
            clock = "wall" if args.clock == "wall" else "cpu"
            total_clock = "wall" if args.clock == "wall" else "process"
        n = max(20, int(case.n * scale))
        warmup = max(50, n // 2)
        if args.smoke:
            n = warmup = SMOKE_EXECUTIONS
        clocks = (f"hot path {CLOCK_NAMES[clock]}, total {CLOCK_NAMES[total_clock]}" if total_clock
                  else CLOCK_NAMES[clock])
        print(f"  ({case.key}) {case.title}: {rounds} rounds x {n} executions per side, "
              f"{clocks}, budget {budget:g} s ...", flush=True)
        try:
            result = measure(case, rounds, n, warmup, CLOCKS[clock], budget,
                             CLOCKS[total_clock] if total_clock else None)
        except (RuntimeError, OSError, NexusOtelError) as exc:
            print(f"  ({case.key}) could not be measured: {exc}", flush=True)
            broken.append(case.key)
            continue
        result.clock = clock
        if total_clock:
            result.total_clock = total_clock
        results.append(result)
    if results:
        report(results)
    for key in broken:
        print(f"({key}) NOT MEASURED (see above)")
    met = not broken and all(r.passed for r in results)
    print(f"verdict: {'all targets met' if met else 'TARGET(S) MISSED'}")
    print(f"total elapsed: {perf_counter() - t0:.1f} s")
    if args.smoke:
        return smoke_verdict([f"({key}) not measured" for key in broken]
                             + [f"({r.case.key}) {p}" for r in results for p in r.problems])
    return 0


if __name__ == "__main__":
    sys.exit(main())
