"""``nexus-otel demo``: serve the example app, send it traffic, and show what telemetry recorded.

The summary is computed from the telemetry, not from the client: counts come
from the app's own ``/metrics`` scrape; latencies from the workflow spans in
the local store when every execution's span was kept, else from the scraped
duration histogram. Then it checks, in every exporter mode, under any sampler
and any ``OTEL_SERVICE_NAME``, that the telemetry was delivered
(:mod:`~nexus_otel.demo.delivery`: after the first request, so that an
endpoint nobody listens on fails it in seconds, and after all the traffic) and
that it kept what it promises (:mod:`~nexus_otel.demo.checks`). It returns
false, and the command exits 1, naming the endpoint or the check, when not.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..errors import ServerError
from ..exporters.local import read_spans
from ..serving import BackgroundServer
from ..telemetry import contract as c
from ..telemetry.config import TelemetryConfig
from ..terminal import inert_markup
from ..traceview import find_trace_records, render_tree
from ..urls import mask_url
from . import delivery as dl
from .app import create_app
from .checks import Check, RecordCounter, Request, Sent, context_check, metrics_check, records_check, traces_check


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


def _send(client: httpx.Client, i: int, step: tuple[str, dict[str, Any], bool], sent: Sent) -> None:
    """Send request ``i`` of the plan and note what its response says (status, trace id, sampled flag)."""
    workflow, inputs, should_fail = step
    headers = {"x-session-id": f"demo-session-{i % 7}"}
    caller_trace = None
    if i % 5 == 0:  # a caller that is itself traced
        caller_trace = secrets.token_hex(16)  # fresh ids every run, whatever the random seed
        headers["traceparent"] = f"00-{caller_trace}-{secrets.token_hex(8)}-01"
    response = client.post(f"/workflows/{workflow}", json=inputs, headers=headers)
    sent.statuses[response.status_code] += 1
    failed = response.status_code >= 500
    if failed != should_fail:
        raise ServerError(f"request {i} to {workflow} returned {response.status_code} unexpectedly")
    trace_id = response.headers.get("x-trace-id", "")
    flags = response.headers.get("traceresponse", "").rsplit("-", 1)[-1]
    continued = caller_trace is not None and trace_id == caller_trace
    sent.requests.append(Request(workflow, failed, trace_id, head_sampled=_sampled(flags),
                                 caller_sampled=caller_trace is not None, continued=continued))
    if continued and workflow == "checkout" and not failed and sent.sample_trace is None:
        sent.sample_trace = trace_id


def _sampled(flags: str) -> bool:
    """Whether W3C trace flags (two hex digits) have the sampled bit."""
    try:
        return bool(int(flags, 16) & 1)
    except ValueError:
        return False


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


def invoked_as(argv0: str) -> str:
    """How to run nexus-otel again as this process was run, for the hints: ``nexus-otel`` when the PATH finds this
    one, else the path it was run by (``.venv/bin/nexus-otel``), else ``<python> -m nexus_otel.cli``."""
    if Path(argv0).name == "nexus-otel":
        found = shutil.which("nexus-otel")
        if found and Path(found).resolve() == Path(argv0).resolve():
            return "nexus-otel"
        return _short_path(argv0)
    return f"{_short_path(sys.executable)} -m nexus_otel.cli"


def _short_path(path: str) -> str:
    """``path`` relative to the working directory when it is under it (``.venv/bin/...``), else absolute."""
    relative = os.path.relpath(os.path.abspath(path))
    return os.path.abspath(path) if relative.startswith("..") else relative


def _stored_workflow_traces(data_dir: str, since_ns: int, service: str) -> Counter:
    """Workflow spans in the local store since ``since_ns``, by trace id."""
    return Counter(span.trace_id for span in read_spans(data_dir)
                   if span.service == service and span.start_ns >= since_ns and c.WORKFLOW_NAME in span.attributes)


def run_demo(requests: int = 300, plugins_dir: str | None = "plugins", seed: int = 7,
             console: Console | None = None, command: str | None = None) -> bool:
    """Run the demo; returns whether the telemetry was delivered and kept every promise checked.

    ``command`` is how the hints name nexus-otel (default: as this process was run).
    """
    console = console or Console(width=None if os.isatty(1) else 110)
    command = command or invoked_as(sys.argv[0])
    rng = random.Random(seed)
    app = create_app("nexus-demo", config=dl.with_demo_timeouts(TelemetryConfig.from_env()))
    service = app.telemetry.service_name  # OTEL_SERVICE_NAME wins over the app's name
    config = app.telemetry.config
    data_dir = config.data_dir
    enabled = app.telemetry.enabled
    local = enabled and "local" in config.traces_exporters
    tail_sampling = app.telemetry.tail_sampler is not None
    records = RecordCounter()
    app.records.add(records)
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
    sent = Sent()
    undelivered: list[str] = []
    delivery: dl.Delivery | None = None
    scrape = ""
    try:
        with httpx.Client(base_url=url, timeout=30.0) as client:
            with Progress(TextColumn("sending requests"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=False) as progress:
                task = progress.add_task("requests", total=len(plan))
                for i, step in enumerate(plan):
                    _send(client, i, step, sent)
                    progress.advance(task)
                    if i == 0 and enabled:  # is anyone taking the telemetry? Know in seconds, not at the end
                        delivery = dl.flush_and_count(app)
                        undelivered = dl.problems(app, delivery)
                        if undelivered:
                            break
            if not undelivered:
                # One more request, to a workflow that does not exist: a 404, and no execution.
                sent.statuses[client.post("/workflows/no-such-workflow", json={}).status_code] += 1
                if enabled:
                    delivery = dl.flush_and_count(app)
                    undelivered = dl.problems(app, delivery)
                scrape = client.get("/metrics").text
    finally:
        if undelivered:  # what is left would only fail again: do not wait the full stop timeout for it
            app.stop(timeout=UNDELIVERED_STOP_TIMEOUT)
        server.stop()  # stops the app: flushes every span to the local store
    if undelivered:
        _say_undelivered(console, config, undelivered, spans_ok=delivery is not None and dl.spans_delivered(delivery))
        return False
    if not enabled:
        console.print(f"telemetry is off (OTEL_SDK_DISABLED=true): {len(sent.requests)} requests "
                      "were served, and there is nothing to compare them with. Unset it to see the telemetry.")
        return True
    executions = _scraped_executions(scrape)
    stored = _stored_workflow_traces(data_dir, since, service) if local else Counter()
    # Spans give the latencies only when every execution's span was kept; else the (exact) histogram does.
    complete = local and not tail_sampling and all(r.head_sampled for r in sent.requests)
    durations = _durations(data_dir, since, service) if complete else {}
    p50s, p95s = _histogram_quantiles(scrape, 0.5), _histogram_quantiles(scrape, 0.95)

    source = "workflow spans in the local store" if complete else "the duration histogram on /metrics"
    table = Table(title=f"{len(sent.requests)} workflow requests in {time.perf_counter() - started:.1f}s, "
                        f"as the telemetry recorded them (latencies from {source})")
    for col in ("workflow", "executions", "errors", "p50 ms", "p95 ms", "sent", "failed as intended"):
        table.add_column(col, justify="left" if col == "workflow" else "right")
    by_workflow, failed_by_workflow = sent.by_workflow, sent.failed_by_workflow
    for workflow in sorted(by_workflow):
        done = executions.get((workflow, "completed"), 0) + executions.get((workflow, "failed"), 0)
        errors = executions.get((workflow, "failed"), 0)
        if complete:
            spans = durations.get(workflow, [])
            p50, p95 = _pct(spans, 50), _pct(spans, 95)
        else:
            p50, p95 = p50s.get(workflow, float("nan")), p95s.get(workflow, float("nan"))
        table.add_row(
            workflow, f"{done:.0f}", f"{errors:.0f}", f"{p50:.2f}", f"{p95:.2f}",
            str(by_workflow[workflow]), str(failed_by_workflow[workflow]),
        )
    console.print(table)

    checks = [metrics_check(sent, executions), records_check(sent, records), context_check(sent)]
    if local:
        checks.append(traces_check(sent, stored, tail_sampling))
    if delivery is not None:
        where = ", ".join(dl.delivered(app, delivery)) or "nothing was sent to an endpoint or the local store"
        checks.append(Check("telemetry delivered", True, where))
    for check in checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        console.print(f"  {mark} {check.name}: {inert_markup(check.detail)}")
    failed = [check.name for check in checks if not check.ok]
    executed = len(sent.requests)
    summary = (f"{executed} executions, {sum(failed_by_workflow.values())} failed on purpose, "
               f"{sent.continued_traces}/{sent.caller_traces} caller traces continued, "
               f"HTTP statuses {dict(sorted(sent.statuses.items()))} (one more request than executions: "
               "the 404, sent on purpose to a workflow that does not exist)")
    if failed:
        console.print(f"[red]✗ telemetry does not match what was sent[/]: {', '.join(failed)} failed (above); "
                      f"{summary}")
    else:
        console.print(f"[green]✓ telemetry matches what was sent[/]: {summary}")

    if sent.sample_trace and local:
        found_trace = find_trace_records(data_dir, sent.sample_trace)
        if found_trace and found_trace.spans:
            console.print(f"\n[bold]One trace[/] (a caller sent traceparent; the caller's own span is not here): "
                          f"{sent.sample_trace}")
            for line in render_tree(found_trace.spans, header=True, logs=found_trace.logs):
                console.print(line, highlight=False, markup=False)

    _say_where_next(console, config, command, service, local)
    return not failed


UNDELIVERED_STOP_TIMEOUT = 1.0
"""Seconds the app may take to stop once its telemetry could not be delivered (the default is 10)."""


def _say_undelivered(console: Console, config: TelemetryConfig, undelivered: list[str], spans_ok: bool) -> None:
    console.print(f"[red]✗ telemetry was not delivered[/]: {inert_markup('; '.join(undelivered))}.")
    if spans_ok:  # the spans went through, the metrics did not: a receiver for traces alone
        console.print("  The spans were delivered. A receiver that takes traces only (Jaeger's own OTLP port) "
                      "refuses metrics: OTEL_METRICS_EXPORTER=none stops pushing them (Prometheus still scrapes "
                      "/metrics).", highlight=False)
        return
    if "otlp" in config.traces_exporters or "otlp" in config.metrics_exporters:
        console.print(f"  Is an OTLP receiver listening there, speaking {config.traces_protocol} "
                      "(by convention port 4318 for http/protobuf, 4317 for grpc)? From the repository root, "
                      "[bold]bash scripts/stack.sh up[/] starts our Collector and Jaeger on those ports; "
                      "or unset OTEL_EXPORTER_OTLP_ENDPOINT to keep the traces on this machine.",
                      highlight=False)


def _say_where_next(console: Console, config: TelemetryConfig, command: str, service: str, local: bool) -> None:
    def hint(label: str, text: str) -> None:
        console.print(f"  {label:<11} {text}", highlight=False, markup=False, soft_wrap=True)

    console.print("\n[bold]Where to look next[/]")
    if local:
        hint("traces", f"{command} traces                (stored in {os.path.abspath(config.data_dir)})")
        hint("", f"{command} traces <TRACE_ID>     one trace as a tree")
    if "otlp" in config.traces_exporters:
        # Resolved as the exporter resolves it (the signal's own variable, else the general one + /v1/traces).
        endpoint = mask_url(config.otlp_traces.endpoint or "") or "the exporter's default, localhost:4318"
        hint("traces", f"sent by OTLP to {endpoint}: in Jaeger, service {service}")
        if not local:
            hint("", "(add OTEL_TRACES_EXPORTER=otlp,local to keep them on this machine too)")
    if "local" in config.logs_exporters:
        hint("logs", f"{command} logs                  the request log and the workflows' own log lines")
        hint("", f"{command} logs --workflow checkout --level WARN")
    if "otlp" in config.logs_exporters:
        endpoint = mask_url(config.otlp_logs.endpoint or "") or "the exporter's default, localhost:4318"
        hint("logs", f"sent by OTLP to {endpoint}")
    hint("metrics", f"{command} serve nexus_otel.demo.app:create_app --plugins-dir plugins")
    hint("", "then open http://127.0.0.1:8000/metrics")
    if "otlp" not in config.traces_exporters:
        hint("OTLP", "bash scripts/stack.sh up   (from the repository root: our Collector, Jaeger and Prometheus")
        hint("", "on loopback; Go 1.26+ builds them the first time), then")
        hint("", f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 {command} demo")
        hint("", f"and open Jaeger at http://127.0.0.1:16686 (service {service});")
        hint("", "add OTEL_TRACES_EXPORTER=otlp,local to keep local traces too")
