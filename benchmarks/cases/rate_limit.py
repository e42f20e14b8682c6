"""Case (e), rate limit: the host with core telemetry plus ``RateLimitPlugin(limit=10**9, burst=10**8, key="client")``
(in-memory moving windows), over the host with core telemetry alone, both called with
``Caller(client_address="127.0.0.1")``. Reported, no target. The limits are out of reach: after the rounds nothing
may have been rejected and the minute window must hold one hit per execution (the in-memory moving window keeps
one entry per hit, so its cost grows with the hits held)."""

from __future__ import annotations

import time
from collections.abc import Callable

from fixtures import AUXILIARY_BUDGET, INPUTS, WORKFLOW, core_baseline, core_host, counted, metric_total
from harness import Case, Side

from nexus_otel.caller import Caller
from nexus_otel.plugins import RateLimitPlugin

perf_counter = time.perf_counter

RATE_LIMIT = 10**9
RATE_BURST = 10**8


def build_rate_limit_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    def caller() -> Caller:
        return Caller(client_address="127.0.0.1")

    baseline = core_baseline(caller)
    plugin = RateLimitPlugin(limit=RATE_LIMIT, burst=RATE_BURST, key="client")
    try:
        app, providers, close = core_host([plugin])
    except BaseException:
        baseline.close()
        raise
    count = [0]
    candidate = Side("+ rate limit", counted(app.execute_workflow, caller, count), close, {
        "app": app, "providers": providers, "executions": count, "plugin": plugin, "started": perf_counter(),
    })
    return baseline, candidate


def _window_hits(plugin: RateLimitPlugin) -> list[int]:
    """Hits held now in the burst window and the minute window for the client 127.0.0.1."""
    middleware = plugin.middleware
    assert middleware is not None
    key_type, value = "client", "127.0.0.1"
    ids = [middleware.namespace, key_type, value]
    return [item.amount - middleware.limiter.get_window_stats(item, *ids).remaining for item in middleware.items]


def check_rate_limit_case(baseline: Side, candidate: Side) -> list[str]:
    st = candidate.state
    problems: list[str] = []
    probe = Caller(client_address="127.0.0.1")
    st["app"].execute_workflow(WORKFLOW, INPUTS, caller=probe)
    st["executions"][0] += 1
    if "RateLimit-Remaining" not in probe.response_headers:
        problems.append("the rate limiter left no RateLimit-* headers on the caller")
    if _window_hits(st["plugin"]) != [1, 1]:
        problems.append(f"one execution left {_window_hits(st['plugin'])} hits in the windows, expected [1, 1]")
    return problems


def final_check_rate_limit_case(baseline: Side, candidate: Side) -> list[str]:
    """Nothing was rejected, and the minute window counted every execution (the case lasts under a minute)."""
    st = candidate.state
    problems: list[str] = []
    executions = st["executions"][0]
    rejections = metric_total(st["providers"].reader, "nexus.ratelimit.rejections")
    if rejections:
        problems.append(f"{rejections:g} executions were rate limited")
    burst_hits, minute_hits = _window_hits(st["plugin"])
    elapsed = perf_counter() - st["started"]
    if elapsed < 55 and minute_hits != executions:
        problems.append(f"the minute window holds {minute_hits} hits for {executions} executions")
    st["notes"] = [(f"{executions} executions, {rejections:g} rejected; hits held at the end: burst window "
                    f"({_window_label(st['plugin'], 0)}) {burst_hits}, minute window {minute_hits}, "
                    f"after {elapsed:.0f} s (the in-memory moving window keeps one entry per hit)")]
    return problems


def _window_label(plugin: RateLimitPlugin, which: int) -> str:
    assert plugin.middleware is not None
    item = plugin.middleware.items[which]
    return f"{item.amount} per {item.multiples} s"


CASES = [
    Case(
        key="e", title=f"rate limit: host with RateLimitPlugin(limit={RATE_LIMIT:.0e}/min, burst={RATE_BURST:.0e}, "
                       f"key='api_key', memory storage; never rejects) vs host with core telemetry",
        baseline_label="core telemetry", candidate_label="+ rate limit",
        build=build_rate_limit_case, target=None, n=200, check=check_rate_limit_case,
        final_check=final_check_rate_limit_case, budget=AUXILIARY_BUDGET,
    ),
]
