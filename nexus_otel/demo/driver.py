"""``nexus-otel demo``: serve the example app, send it traffic, and show what telemetry recorded.

The summary is computed from the telemetry, not from the client: counts come
from the app's own ``/metrics`` scrape; latencies from the workflow spans in
the local store when it is on, else (OTLP only) from the scraped duration
histogram. They are checked against what the driver sent, in every exporter
mode and under any ``OTEL_SERVICE_NAME``.
"""

from __future__ import annotations

import os
import random
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..exporters.local import read_spans
from ..serving import BackgroundServer
from ..telemetry import contract as c
from ..terminal import inert_markup
from ..traceview import find_trace, render_tree
from .app import create_app


@dataclass
class Sent:
    """What the driver sent and got back."""

    by_workflow: Counter = field(default_factory=Counter)
    failed_by_workflow: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    continued_traces: int = 0
    caller_traces: int = 0
    sample_trace: str | None = None


def _plan(n: int, rng: random.Random) -> list[tuple[str, dict[str, Any], bool]]:
    """``n`` requests: (workflow, inputs, expected to fail)."""
    plan: list[tuple[str, dict[str, Any], bool]] = []
    for i in range(n):
        kind = rng.choices(["greet", "checkout", "report", "enrich"], weights=[4, 3, 2, 2])[0]
        if kind == "greet":
            plan.append(("greet", {"name": rng.choice(["ada", "grace", "linus", "barbara"])}, False))
        elif kind == "checkout":
            out_of_stock = rng.random() < 0.15
            items = [{"sku": f"SKU-{rng.randint(100, 999)}", "price": rng.randint(1, 90),
                      "qty": rng.randint(1, 3), "stock": 0 if (out_of_stock and j == 0) else 5}
                     for j in range(rng.randint(1, 4))]
            plan.append(("checkout", {"items": items, "card_token": "tok_" + secrets.token_hex(6)}, out_of_stock))
        elif kind == "report":
            plan.append(("report", {"pages": rng.randint(1, 6)}, False))
        else:
            down = rng.random() < 0.2
            plan.append(("enrich", {"user": f"u{i}", "upstream_down": down}, down))
    return plan


def _drive(url: str, plan: list[tuple[str, dict[str, Any], bool]], rng: random.Random,
           advance: Callable[[], None]) -> Sent:
    sent = Sent()
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for i, (workflow, inputs, should_fail) in enumerate(plan):
            headers = {"x-session-id": f"demo-session-{i % 7}"}
            caller_trace = None
            if i % 5 == 0:  # a caller that is itself traced
                caller_trace = secrets.token_hex(16)  # fresh ids every run, whatever the random seed
                headers["traceparent"] = f"00-{caller_trace}-{secrets.token_hex(8)}-01"
                sent.caller_traces += 1
            response = client.post(f"/workflows/{workflow}", json=inputs, headers=headers)
            sent.by_workflow[workflow] += 1
            sent.statuses[response.status_code] += 1
            if response.status_code >= 500:
                sent.failed_by_workflow[workflow] += 1
            if (response.status_code >= 500) != should_fail:
                raise RuntimeError(f"request {i} to {workflow} returned {response.status_code} unexpectedly")
            trace_id = response.headers.get("x-trace-id")
            if caller_trace is not None and trace_id == caller_trace:
                sent.continued_traces += 1
                if workflow == "checkout" and not should_fail and sent.sample_trace is None:
                    sent.sample_trace = trace_id
            advance()
        # One request for a workflow that does not exist: a 404, and no execution.
        sent.statuses[client.post("/workflows/no-such-workflow", json={}).status_code] += 1
    return sent


def _scraped_executions(text: str) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == c.WORKFLOW_EXECUTIONS.prometheus_name:
                key = (sample.labels["workflow"], sample.labels["status"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def _histogram_quantiles(text: str, q: float) -> dict[str, float]:
    """Per workflow, the ``q`` quantile (ms) of the scraped duration histogram, as PromQL's
    ``histogram_quantile`` estimates it (linear within the bucket)."""
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == c.WORKFLOW_DURATION.prometheus_name + "_bucket":
                per = buckets.setdefault(sample.labels["workflow"], {})
                bound = float(sample.labels["le"])
                per[bound] = per.get(bound, 0.0) + sample.value
    out: dict[str, float] = {}
    for workflow, per in buckets.items():
        bounds = sorted(per)
        total = per[bounds[-1]]
        if not total:
            continue
        rank, lower, below = q * total, 0.0, 0.0
        for bound in bounds:
            if per[bound] >= rank:
                upper = bound if bound != float("inf") else lower
                inside = per[bound] - below
                out[workflow] = 1000 * (lower + (upper - lower) * ((rank - below) / inside if inside else 0))
                break
            lower, below = bound, per[bound]
    return out


def _durations(data_dir: str, since_ns: int, service: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for span in read_spans(data_dir):
        if span.service == service and span.start_ns >= since_ns and c.WORKFLOW_NAME in span.attributes:
            out.setdefault(str(span.attributes[c.WORKFLOW_NAME]), []).append(span.duration_ms)
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def run_demo(requests: int = 300, plugins_dir: str | None = "plugins", seed: int = 7,
             console: Console | None = None) -> bool:
    """Run the demo; returns whether the telemetry matched what was sent."""
    console = console or Console(width=None if os.isatty(1) else 110)
    rng = random.Random(seed)
    app = create_app("nexus-demo")
    service = app.telemetry.service_name  # OTEL_SERVICE_NAME wins over the app's name
    config = app.telemetry.config
    data_dir = config.data_dir
    local = app.telemetry.enabled and "local" in config.traces_exporters
    if plugins_dir and Path(plugins_dir).is_dir():
        found = app.load_plugins(plugins_dir)
        for error in found.errors:
            console.print(f"[yellow]plugin not loaded:[/] {inert_markup(error)}")  # names a file, quotes its error
    plan = _plan(requests, rng)
    since = time.time_ns()
    started = time.perf_counter()
    server = BackgroundServer(app)
    url = server.start()
    console.print(f"[bold]nexus-otel demo[/]: serving {len(app.workflows)} workflows "
                  f"({', '.join(app.workflows.names())}) with plugins "
                  f"{inert_markup(app.plugins.list() or 'none')} at {url}")
    try:
        with Progress(TextColumn("sending requests"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            task = progress.add_task("requests", total=len(plan))
            sent = _drive(url, plan, rng, lambda: progress.advance(task))
        scrape = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        server.stop()  # stops the app: flushes every span to the local store
    if not app.telemetry.enabled:
        console.print(f"telemetry is off (OTEL_SDK_DISABLED=true): {sum(sent.by_workflow.values())} requests "
                      "were served, and there is nothing to compare them with. Unset it to see the telemetry.")
        return True
    executions = _scraped_executions(scrape)
    durations = _durations(data_dir, since, service) if local else {}
    p50s, p95s = _histogram_quantiles(scrape, 0.5), _histogram_quantiles(scrape, 0.95)

    source = "workflow spans in the local store" if local else "the duration histogram on /metrics"
    table = Table(title=f"{requests} requests in {time.perf_counter() - started:.1f}s, "
                        f"as the telemetry recorded them (latencies from {source})")
    for col in ("workflow", "executions", "errors", "p50 ms", "p95 ms", "sent", "failed as intended"):
        table.add_column(col, justify="left" if col == "workflow" else "right")
    ok = True
    for workflow in sorted(sent.by_workflow):
        done = executions.get((workflow, "completed"), 0) + executions.get((workflow, "failed"), 0)
        errors = executions.get((workflow, "failed"), 0)
        spans = durations.get(workflow, [])
        match = done == sent.by_workflow[workflow] and errors == sent.failed_by_workflow[workflow]
        if local:
            match = match and len(spans) == done
            p50, p95 = _pct(spans, 50), _pct(spans, 95)
        else:
            p50, p95 = p50s.get(workflow, float("nan")), p95s.get(workflow, float("nan"))
        ok = ok and match
        table.add_row(
            workflow, f"{done:.0f}", f"{errors:.0f}", f"{p50:.2f}", f"{p95:.2f}",
            str(sent.by_workflow[workflow]), str(sent.failed_by_workflow[workflow]),
        )
    console.print(table)
    ok = ok and sent.continued_traces == sent.caller_traces
    verdict = ("[green]✓ telemetry matches what was sent[/]" if ok
               else "[red]✗ telemetry does not match what was sent[/]")
    console.print(f"{verdict}: {sum(sent.by_workflow.values())} executions, "
                  f"{sum(sent.failed_by_workflow.values())} failed on purpose, "
                  f"{sent.continued_traces}/{sent.caller_traces} caller traces continued, "
                  f"HTTP statuses {dict(sorted(sent.statuses.items()))}")

    if sent.sample_trace and local:
        found_trace = find_trace(data_dir, sent.sample_trace)
        if found_trace:
            console.print(f"\n[bold]One trace[/] (a caller sent traceparent; the caller's own span is not here): "
                          f"{sent.sample_trace}")
            for line in render_tree(found_trace[1], header=True):
                console.print(line, highlight=False, markup=False)

    console.print("\n[bold]Where to look next[/]")
    if local:
        console.print(f"  traces      nexus-otel traces            (stored in {os.path.abspath(data_dir)})")
        console.print("              nexus-otel traces <TRACE_ID>  one trace as a tree")
    if "otlp" in config.traces_exporters:
        # Resolved as the exporter resolves it (the signal's own variable, else the general one + /v1/traces).
        endpoint = config.otlp_traces.endpoint or "the exporter's default, localhost:4318"
        console.print(f"  traces      sent by OTLP to {endpoint}: in Jaeger, service {service}")
        if not local:
            console.print("              (add OTEL_TRACES_EXPORTER=otlp,local to keep them on this machine too)")
    console.print("  metrics     nexus-otel serve nexus_otel.demo.app:create_app --plugins-dir plugins")
    console.print("              then open http://127.0.0.1:8000/metrics")
    if "otlp" not in config.traces_exporters:
        console.print("  OTLP        OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 nexus-otel demo")
        console.print("              (add OTEL_TRACES_EXPORTER=otlp,local to keep local traces too)")
        console.print("  Jaeger      run Jaeger with OTLP on 4318, point the endpoint above at it,")
        console.print(f"              and open http://127.0.0.1:16686 (service {service})")
    return ok
