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

Cases (to add one, append a ``Case`` to ``CASES``: a ``build()`` returning fresh
baseline and candidate ``Side``s, a target ratio or None (reported only), an optional
``check``):

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
import base64
import gc
import json
import logging
import os
import platform
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk import version as otel_sdk_version
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import nexus_otel
from nexus_otel import ExecutionRecord, Nexus, NexusPlugin, RecordProcessor, WorkflowEvent
from nexus_otel.caller import Caller
from nexus_otel.errors import AuthenticationError, NexusOtelError
from nexus_otel.outbox import Outbox
from nexus_otel.plugins import (
    AuthPlugin,
    DatabasePlugin,
    MetricsPlugin,
    RateLimitPlugin,
    RequestLoggerPlugin,
    WebhookPlugin,
)
from nexus_otel.telemetry import contract as c

perf_counter = time.perf_counter
log = logging.getLogger("benchmarks.overhead")

WORKFLOW = "bench"
CHANNEL = "python"
PLUGIN = "bench-plugin"
PLUGIN_VERSION = "1.0.0"
INPUTS: dict[str, Any] = {"name": "ada", "count": 3, "tags": ["x", "y"]}
HOST = "127.0.0.1"


# --------------------------------------------------------------------------------------
# Shared pieces: identical telemetry configuration for both sides of case (a)
# --------------------------------------------------------------------------------------
class DiscardingExporter(SpanExporter):
    """Drops spans (counting them); keeps them only while ``keep`` is set (for checks)."""

    def __init__(self) -> None:
        self.count = 0
        self.keep = False
        self.kept: list[Any] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.count += len(spans)
        if self.keep:
            self.kept.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class DiscardingLogExporter(LogRecordExporter):
    """Drops log records, counting them."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.count += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Providers:
    """A fresh TracerProvider (SimpleSpanProcessor -> discard), MeterProvider (in-memory reader) and
    LoggerProvider (a batch processor -> discard: log records are exported, as with OTEL_LOGS_EXPORTER set)."""

    exporter: DiscardingExporter
    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider
    log_exporter: DiscardingLogExporter
    logger_provider: LoggerProvider

    @classmethod
    def fresh(cls) -> Providers:
        resource = Resource.create({c.SERVICE_NAME: "bench"})
        exporter = DiscardingExporter()
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        log_exporter = DiscardingLogExporter()
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        return cls(exporter, tracer_provider, reader, meter_provider, log_exporter, logger_provider)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


# The hooks: trivial, shared by every side of every case.
def hook_started(event: Any) -> None:
    return None


def hook_completed_1(event: Any) -> None:
    return None


def hook_completed_2(event: Any) -> None:
    return None


class BenchPlugin(NexusPlugin):
    """Registers the three hooks (started, completed, completed) in its setup."""

    name = PLUGIN  # type: ignore[assignment]
    version = PLUGIN_VERSION  # type: ignore[assignment]

    def setup(self, nexus_app: Nexus) -> None:
        nexus_app.on_workflow_started(hook_started)
        nexus_app.on_workflow_completed(hook_completed_1)
        nexus_app.on_workflow_completed(hook_completed_2)


def trivial_workflow(inputs: Mapping[str, Any]) -> Any:
    return inputs


# The clock the 100 us workflow busy-waits on: the benchmark's measuring clock (set by
# main), so that on a loaded machine a preempted workflow still costs 100 us of it.
BUSY_CLOCK: list[Callable[[], float]] = [perf_counter]


def busy_100us(inputs: Mapping[str, Any]) -> Any:
    clock = BUSY_CLOCK[0]
    end = clock() + 100e-6
    while clock() < end:
        pass
    return inputs


# --------------------------------------------------------------------------------------
# Case (a) reference: the same spans and metrics with the raw OpenTelemetry SDK, no host
# --------------------------------------------------------------------------------------
class RawSdkReference:
    """What a hand-instrumented caller would write to get the host's spans and metrics."""

    def __init__(self, providers: Providers, fn: Callable[[Mapping[str, Any]], Any]) -> None:
        version = nexus_otel.__version__
        self.tracer = providers.tracer_provider.get_tracer(c.INSTRUMENTATION_NAME, version)
        meter = providers.meter_provider.get_meter(c.INSTRUMENTATION_NAME, version)
        d, e, a, h = c.WORKFLOW_DURATION, c.WORKFLOW_EXECUTIONS, c.WORKFLOW_ACTIVE, c.HOOK_DURATION
        self.duration = meter.create_histogram(
            d.name, unit=d.unit, description=d.description,
            explicit_bucket_boundaries_advisory=list(d.buckets or ()),
        )
        self.executions = meter.create_counter(e.name, unit=e.unit, description=e.description)
        self.active = meter.create_up_down_counter(a.name, unit=a.unit, description=a.description)
        self.hook_duration = meter.create_histogram(
            h.name, unit=h.unit, description=h.description,
            explicit_bucket_boundaries_advisory=list(h.buckets or ()),
        )
        self.fn = fn
        self.span_name = c.WORKFLOW_SPAN.format(workflow=WORKFLOW)
        self.active_attrs = {c.M_WORKFLOW: WORKFLOW}
        self.metric_attrs = {c.M_WORKFLOW: WORKFLOW, c.M_CHANNEL: CHANNEL, c.M_STATUS: c.STATUS_COMPLETED}

        def hook(event: str, fn: Callable[[Any], Any]) -> tuple[Any, ...]:
            return (
                fn, c.HOOK_SPAN.format(event=event, plugin=PLUGIN),
                {c.PLUGIN_NAME: PLUGIN, c.PLUGIN_VERSION: PLUGIN_VERSION, c.HOOK_EVENT: event},
                {c.M_PLUGIN: PLUGIN, c.M_EVENT: event},
            )

        self.started = (hook(c.WORKFLOW_STARTED, hook_started),)
        self.completed = (
            hook(c.WORKFLOW_COMPLETED, hook_completed_1),
            hook(c.WORKFLOW_COMPLETED, hook_completed_2),
        )
        # Set-up only, as the host does when a hook is registered: the error series exist from
        # the start, at 0 (nothing is recorded on them per execution while no hook fails).
        pe = c.PLUGIN_ERRORS
        errors = meter.create_counter(pe.name, unit=pe.unit, description=pe.description)
        for *_, metric_attrs in (*self.started, *self.completed):
            errors.add(0, metric_attrs)

    def _hooks(self, hooks: tuple[tuple[Any, ...], ...], arg: Any) -> None:
        tracer, record = self.tracer, self.hook_duration.record
        for fn, span_name, span_attrs, metric_attrs in hooks:
            start = perf_counter()
            with tracer.start_as_current_span(span_name, attributes=span_attrs):
                fn(arg)
            record(perf_counter() - start, metric_attrs)

    def execute(self, inputs: Mapping[str, Any]) -> Any:
        attributes = {
            c.WORKFLOW_NAME: WORKFLOW,
            c.WORKFLOW_ID: uuid.uuid4().hex,
            c.CHANNEL: CHANNEL,
            c.WORKFLOW_INPUTS: json.dumps(inputs, sort_keys=True),
        }
        with self.tracer.start_as_current_span(self.span_name, attributes=attributes):
            self.active.add(1, self.active_attrs)
            self._hooks(self.started, inputs)
            start = perf_counter()
            result = self.fn(inputs)
            elapsed = perf_counter() - start
            self.executions.add(1, self.metric_attrs)
            self.duration.record(elapsed, self.metric_attrs)
            self._hooks(self.completed, inputs)
            self.active.add(-1, self.active_attrs)
        return result


# --------------------------------------------------------------------------------------
# Case (b) baseline: the host's per-execution work with the telemetry code removed
# --------------------------------------------------------------------------------------
class BareHost:
    """A minimal host: workflow dict, input check, WorkflowEvent, hooks with try/except, timing."""

    def __init__(self) -> None:
        self._workflows: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
        self._started: list[Callable[[Any], Any]] = []
        self._completed: list[Callable[[Any], Any]] = []
        self._failed: list[Callable[[Any], Any]] = []

    def register(self, name: str, fn: Callable[[Mapping[str, Any]], Any]) -> None:
        self._workflows[name] = fn

    @staticmethod
    def _run_hooks(hooks: list[Callable[[Any], Any]], event: WorkflowEvent) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception as exc:  # a failing hook never fails the workflow
                log.error("hook failed: %s", exc)

    def execute_workflow(self, name: str, inputs: Mapping[str, Any] | None = None, *,
                         session_id: str | None = None, channel: str = CHANNEL) -> Any:
        fn = self._workflows[name]
        if inputs is None:
            inputs = {}
        elif not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a dict, got {type(inputs).__name__}")
        event = WorkflowEvent(
            workflow_name=name, workflow_id=uuid.uuid4().hex, session_id=session_id,
            channel=channel, inputs=inputs, timestamp=time.time(),
        )
        self._run_hooks(self._started, event)
        start = perf_counter()
        try:
            result = fn(inputs)
        except BaseException as exc:
            event.duration = perf_counter() - start
            event.error = exc
            self._run_hooks(self._failed, event)
            raise
        event.duration = perf_counter() - start
        event.result = result
        self._run_hooks(self._completed, event)
        return result


# --------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------
@dataclass
class Side:
    """One side of a case: ``run()`` performs one execution; ``close()`` tears down.

    ``drain()``, when set, runs at the end of every timed round: it waits for the work
    the round left to background threads. It counts in a case's single figure, or, for
    a case with a ``total``, in the total only (the judged hot path stops before it).
    """

    label: str
    run: Callable[[], Any]
    close: Callable[[], None] = lambda: None
    state: dict[str, Any] = field(default_factory=dict)
    drain: Callable[[], Any] | None = None


@dataclass
class Case:
    key: str
    title: str
    baseline_label: str
    candidate_label: str
    build: Callable[[], tuple[Side, Side]]
    target: float | None  # None: the ratio is reported, not judged
    n: int  # executions per side per round (full run)
    check: Callable[[Side, Side], list[str]] | None = None  # before timing
    final_check: Callable[[Side, Side], list[str]] | None = None  # after timing, before close
    clock: str | None = None  # the clock this case needs in place of the default "cpu" (thread) clock
    budget: float | None = None  # wall seconds for this case (full run), in place of --budget's default
    max_rounds: int | None = None  # at most this many rounds (full run), in place of --rounds' default
    # Two figures per round: the judged one, this thread's CPU around the executions only (the
    # hot path), and a reported "total", the process's CPU around the executions plus the drain.
    total: bool = False


def build_telemetry_case() -> tuple[Side, Side]:
    ref_providers = Providers.fresh()
    reference = RawSdkReference(ref_providers, trivial_workflow)
    baseline = Side(
        "raw SDK", lambda: reference.execute(INPUTS), ref_providers.shutdown,
        {"providers": ref_providers},
    )

    app, host_providers, close_host = core_host()
    execute = app.execute_workflow
    candidate = Side(
        "Nexus", lambda: execute(WORKFLOW, INPUTS), close_host, {"providers": host_providers},
    )
    return baseline, candidate


def build_lean_case() -> tuple[Side, Side]:
    """(a-lean): the raw SDK reference of (a) against the host on a tracer and meter provider it built itself,
    as most apps run (its lean tracer, its pre-aggregated metrics), spans to the same discarding exporter."""
    ref_providers = Providers.fresh()
    reference = RawSdkReference(ref_providers, trivial_workflow)
    baseline = Side("raw SDK", lambda: reference.execute(INPUTS), ref_providers.shutdown,
                    {"exporter": ref_providers.exporter})
    from nexus_otel.telemetry.telemetry import Telemetry

    telemetry = Telemetry("bench", environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                            "OTEL_LOGS_EXPORTER": "none"})
    exporter = DiscardingExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    app = Nexus("bench", telemetry=telemetry)
    app.add_plugin(BenchPlugin())
    app.register(WORKFLOW, trivial_workflow)
    app.start()
    candidate = Side("Nexus (own providers)", lambda: app.execute_workflow(WORKFLOW, INPUTS), app.stop,
                     {"exporter": exporter})
    return baseline, candidate


def check_lean_case(baseline: Side, candidate: Side) -> list[str]:
    """After one execution each, both sides must have exported the same spans (names, attribute keys, nesting)."""
    shapes = []
    for side in (baseline, candidate):
        exporter: DiscardingExporter = side.state["exporter"]
        exporter.kept.clear()
        exporter.keep = True
        side.run()
        exporter.keep = False
        shapes.append(sorted(_span_shape(s) for s in exporter.kept))
    if len(shapes[1]) != 4 or shapes[0] != shapes[1]:
        return [f"span shapes differ:\n  raw SDK {shapes[0]}\n  Nexus   {shapes[1]}"]
    return []


def core_host(plugins: Sequence[NexusPlugin] = ()) -> tuple[Nexus, Providers, Callable[[], None]]:
    """The host with core telemetry (fresh SDK providers, as in (a)), the 3-hook plugin, ``plugins``."""
    providers = Providers.fresh()
    app = Nexus("bench", tracer_provider=providers.tracer_provider, meter_provider=providers.meter_provider,
                logger_provider=providers.logger_provider)
    app.add_plugin(BenchPlugin())
    for plugin in plugins:
        app.add_plugin(plugin)
    app.register(WORKFLOW, trivial_workflow)
    app.start()

    def close() -> None:
        app.stop()
        providers.shutdown()

    return app, providers, close


def _span_shape(span: Any) -> tuple[str, tuple[str, ...], str | None]:
    return span.name, tuple(sorted(span.attributes or {})), None if span.parent is None else "child"


OBSERVED_HEALTH = frozenset({"nexus.records.unavailable", "nexus.records.outbox.unwritable"})
"""The host's own health, observed when metrics are collected (nothing recorded per execution): not part of the
spans and metrics a hand-instrumented caller would make."""


def _metric_shape(reader: InMemoryMetricReader) -> dict[str, Any]:
    """{name: (unit, bucket bounds, [(attributes, count, value)])} recorded so far (setup and health excluded)."""
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name in OBSERVED_HEALTH:
                    continue
                points = [p for p in metric.data.data_points if p.attributes.get(c.M_EVENT) != c.SETUP]
                if not points:
                    continue
                bounds = tuple(getattr(points[0], "explicit_bounds", None) or ())
                # attribute set and how much was recorded under it (count or sum)
                attrs = sorted(
                    (tuple(sorted(p.attributes.items())), getattr(p, "count", None), getattr(p, "value", None))
                    for p in points
                )
                out[metric.name] = (metric.unit, bounds, attrs)
    return out


def check_telemetry_case(baseline: Side, candidate: Side) -> list[str]:
    """After one execution each, both sides must have emitted the same spans and metrics.

    Spans: names, attribute keys, nesting. Metrics: names, units, bucket
    boundaries, attribute sets and the number of recordings under each.
    """
    problems: list[str] = []
    shapes = []
    for side in (baseline, candidate):
        providers: Providers = side.state["providers"]
        providers.exporter.kept.clear()
        providers.exporter.keep = True
        side.run()
        providers.exporter.keep = False
        spans = sorted(_span_shape(s) for s in providers.exporter.kept)
        shapes.append((spans, _metric_shape(providers.reader)))
    (ref_spans, ref_metrics), (host_spans, host_metrics) = shapes
    if len(host_spans) != 4:
        problems.append(f"host made {len(host_spans)} spans per execution, expected 4")
    if ref_spans != host_spans:
        problems.append(f"span shapes differ:\n  raw SDK {ref_spans}\n  Nexus   {host_spans}")
    if ref_metrics != host_metrics:
        problems.append(f"metric shapes differ:\n  raw SDK {ref_metrics}\n  Nexus   {host_metrics}")
    return problems


def build_disabled_case() -> tuple[Side, Side]:
    bare = BareHost()
    bare.register(WORKFLOW, busy_100us)
    for fn in (hook_started,):
        bare._started.append(fn)
    for fn in (hook_completed_1, hook_completed_2):
        bare._completed.append(fn)
    bare_execute = bare.execute_workflow
    baseline = Side("no-telemetry host", lambda: bare_execute(WORKFLOW, INPUTS))

    app = Nexus("bench", environ={"OTEL_SDK_DISABLED": "true"})
    app.add_plugin(BenchPlugin())
    app.register(WORKFLOW, busy_100us)
    app.start()
    execute = app.execute_workflow
    candidate = Side("Nexus disabled", lambda: execute(WORKFLOW, INPUTS), app.stop, {"app": app})
    return baseline, candidate


def check_disabled_case(baseline: Side, candidate: Side) -> list[str]:
    app: Nexus = candidate.state["app"]
    problems = []
    if app.telemetry.enabled:
        problems.append("OTEL_SDK_DISABLED=true did not disable the host's telemetry")
    if len(app.hooks.get(c.WORKFLOW_STARTED)) != 1 or len(app.hooks.get(c.WORKFLOW_COMPLETED)) != 2:
        problems.append("the disabled host does not have the three hooks")
    return problems


# --------------------------------------------------------------------------------------
# Case (c): the full pipeline (redaction, request log, metrics, webhook, audit) over core telemetry
# --------------------------------------------------------------------------------------
DRAIN_TIMEOUT = 60.0  # seconds a round's drain may take before the case is reported broken


def receiver_main(secret: str) -> int:
    """``--webhook-receiver`` mode (its own process): answers every POST 200 at once, counts them.

    It checks each payload's Standard Webhooks signature and keeps the ids it saw;
    ``GET /count`` returns the tallies as JSON. It runs until it is terminated.
    """
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks.webhooks import Webhook

    verifier = Webhook(secret)
    lock = threading.Lock()
    tally = {"received": 0, "valid": 0, "invalid": 0}
    ids: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the webhook client expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            try:
                verifier.verify(body, dict(self.headers.items()))
                valid = True
            except Exception:
                valid = False
            with lock:
                tally["received"] += 1
                tally["valid" if valid else "invalid"] += 1
                ids.add(self.headers.get("webhook-id") or "")

        def do_GET(self) -> None:
            with lock:
                body = json.dumps({**tally, "unique_ids": len(ids)}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # The webhook poster opens up to 64 connections at once: with socketserver's default
        # listen backlog of 5, the kernel drops SYNs, connections wait for a retransmit, and
        # requests time out and are retried (counted twice here, though delivered once each).
        request_queue_size = 128
        daemon_threads = True

    server = Server((HOST, 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server.serve_forever(poll_interval=0.5)
    return 0


class WebhookReceiver:
    """The webhook destination: ``receiver_main`` in a subprocess (its CPU is not the host's)."""

    def __init__(self, secret: str, timeout: float = 30.0) -> None:
        cmd = [sys.executable, os.path.abspath(__file__), "--webhook-receiver", "--secret", secret]
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: nobody reads it while it runs
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        deadline = perf_counter() + timeout
        line = ""
        assert self.proc.stdout is not None
        while perf_counter() < deadline and not line.startswith("PORT "):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:  # it exited
                    break
        if not line.startswith("PORT "):
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")
            self.stop()
            raise RuntimeError(f"webhook receiver did not start: {err.strip()[-500:]}")
        self.url = f"http://{HOST}:{int(line.split()[1])}/hook"

    def count(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url.rsplit("/", 1)[0] + "/count", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


class CountingStreamHandler(logging.StreamHandler):
    """A StreamHandler (the plugin's JSON formatter, a write per record) that also counts records."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        super().emit(record)


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


def build_pipeline_case() -> tuple[Side, Side]:
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


class DurableFloor(RecordProcessor):
    """The least a durable-on-return record can cost: one outbox put (a journal append) of its JSON, nothing else."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.count = 0

    def on_end(self, record: ExecutionRecord) -> None:
        self.outbox.put([(record.workflow_id, "floor", record.to_json())])
        self.count += 1


def build_floor_case() -> tuple[Side, Side]:
    """(c-floor): core telemetry + one bare outbox put per execution, over core telemetry."""
    base_app, base_providers, base_close = core_host()
    baseline = Side("core telemetry", lambda: base_app.execute_workflow(WORKFLOW, INPUTS), base_close)
    tmp = tempfile.mkdtemp(prefix="nexus-otel-floor-")
    app, providers, close_app = core_host()
    floor = DurableFloor(Outbox(os.path.join(tmp, "floor.sqlite")))
    app.records.add(floor)

    def close() -> None:
        try:
            close_app()
        finally:
            floor.outbox.close()
            shutil.rmtree(tmp, ignore_errors=True)

    candidate = Side("+ one outbox put", lambda: app.execute_workflow(WORKFLOW, INPUTS), close, {"floor": floor})
    return baseline, candidate


def check_floor_case(baseline: Side, candidate: Side) -> list[str]:
    candidate.run()
    floor = candidate.state["floor"]
    return [] if floor.count == 1 and floor.outbox.counts()["pending"] == 1 else ["the floor sink did not write"]


def _sampled_host(tmp: str, environ_extra: dict[str, str]) -> tuple[Nexus, Callable[[], None]]:
    """The host with its own providers built from the environment: traces to the local store (the real encoder)."""
    environ = {"NEXUS_OTEL_DATA_DIR": tmp, "OTEL_TRACES_EXPORTER": "local", "OTEL_METRICS_EXPORTER": "none",
               **environ_extra}
    app = Nexus("bench", environ=environ)
    app.add_plugin(BenchPlugin())
    app.register(WORKFLOW, trivial_workflow)
    app.start()
    return app, lambda: app.stop(timeout=10)


def build_tail_case() -> tuple[Side, Side]:
    """(f): tail sampling at 0.1 vs keep-all, both exporting to the local store; total CPU includes the export."""
    dirs = [tempfile.mkdtemp(prefix="nexus-otel-tail-") for _ in range(2)]
    base_app, base_close = _sampled_host(dirs[0], {})
    cand_app, cand_close = _sampled_host(dirs[1], {"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0.1"})

    def closer(close: Callable[[], None], tmp: str) -> Callable[[], None]:
        def run() -> None:
            try:
                close()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return run

    baseline = Side("keep all", lambda: base_app.execute_workflow(WORKFLOW, INPUTS), closer(base_close, dirs[0]),
                    {"app": base_app})
    candidate = Side("tail sampling 0.1", lambda: cand_app.execute_workflow(WORKFLOW, INPUTS),
                     closer(cand_close, dirs[1]), {"app": cand_app})
    baseline.drain = lambda: base_app.telemetry.force_flush()
    candidate.drain = lambda: cand_app.telemetry.force_flush()
    return baseline, candidate


def check_tail_case(baseline: Side, candidate: Side) -> list[str]:
    problems = []
    if baseline.state["app"].telemetry.tail_sampler is not None:
        problems.append("the keep-all side has a tail sampler")
    if candidate.state["app"].telemetry.tail_sampler is None:
        problems.append("the tail-sampling side has none")
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
    if not hasattr(time, "pthread_getcpuclockid"):
        return None
    cpu: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.name in BACKGROUND_THREADS and thread.ident is not None:
            try:
                clock = time.pthread_getcpuclockid(thread.ident)
                cpu[thread.name] = cpu.get(thread.name, 0.0) + time.clock_gettime(clock)
            except OSError:
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


# --------------------------------------------------------------------------------------
# Cases (d) and (e): auth and rate limiting per execution, over core telemetry (reported)
# --------------------------------------------------------------------------------------
AUDIENCE = "bench"
SUBJECT = "bench-user"
SCOPE = "bench:run bench:read"


class JwksIdp:
    """A minimal OIDC key server on 127.0.0.1 (a thread of this process): one RSA 2048 key.

    Serves ``/jwks.json`` (counted) and mints RS256 tokens with that key. A copy of the
    essentials of ``tests/jwks_server.py``, so the benchmark does not import the test tree.
    """

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self.kid = "bench-key-1"
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        body = json.dumps({"keys": [jwk]}).encode()
        self.counts: dict[str, int] = {}
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with lock:
                    owner.counts[path] = owner.counts.get(path, 0) + 1
                if path != "/jwks.json":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._jwt = jwt
        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}"
        self.jwks_url = self.url + "/jwks.json"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="bench-jwks", daemon=True)
        self._thread.start()

    def fetches(self, path: str = "/jwks.json") -> int:
        return self.counts.get(path, 0)

    def token(self, **overrides: Any) -> str:
        """A valid RS256 token for the plugin's issuer and audience, valid for a day."""
        return self._jwt.encode(_claims(self.url, **overrides), self.private, algorithm="RS256",
                                headers={"kid": self.kid})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def _claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "aud": AUDIENCE, "sub": SUBJECT, "scope": SCOPE, "iat": now, "nbf": now,
            "exp": now + 86400, **overrides}


def _forged(token: str, other: str) -> str:
    """``token``'s header and payload with ``other``'s signature: a signature that does not verify."""
    return token.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


def _metric_total(reader: InMemoryMetricReader, name: str) -> float:
    """Sum over the data points of the metric ``name`` (0 when nothing was recorded on it)."""
    data = reader.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    total += sum(getattr(p, "value", 0) for p in metric.data.data_points)
    return total


def _counted(execute: Callable[..., Any], caller: Callable[[], Caller], count: list[int]) -> Callable[[], Any]:
    """One execution with a fresh ``Caller`` (as a channel makes one per request), counted."""

    def run() -> Any:
        count[0] += 1
        return execute(WORKFLOW, INPUTS, caller=caller())

    return run


def _core_baseline(caller: Callable[[], Caller]) -> Side:
    """(a)'s candidate, the host with core telemetry, called with the same ``Caller`` as the candidate."""
    app, providers, close = core_host()
    count = [0]
    return Side("core telemetry", _counted(app.execute_workflow, caller, count), close,
                {"app": app, "providers": providers, "executions": count})


def _auth_case(strategy: str) -> Callable[[], tuple[Side, Side]]:
    """Builds (d)'s sides for ``strategy``: "oidc" (JWKS on 127.0.0.1), "jwt" (HS256) or "api_key"."""

    def build() -> tuple[Side, Side]:
        idp = JwksIdp() if strategy == "oidc" else None
        try:
            if strategy == "oidc":
                assert idp is not None
                plugin = AuthPlugin(strategy="oidc", issuer=idp.url, audience=AUDIENCE, jwks_url=idp.jwks_url)
                token = idp.token()
                bad = _forged(token, idp.token(sub="someone-else"))

                def caller() -> Caller:
                    return Caller(bearer_token=token)

                def bad_caller() -> Caller:
                    return Caller(bearer_token=bad)
            elif strategy == "jwt":
                import jwt

                secret = os.urandom(32).hex()
                issuer = "https://idp.bench.invalid"
                plugin = AuthPlugin(strategy="jwt", secret=secret, issuer=issuer, audience=AUDIENCE)
                token = jwt.encode(_claims(issuer), secret, algorithm="HS256")
                bad = jwt.encode(_claims(issuer), os.urandom(32).hex(), algorithm="HS256")

                def caller() -> Caller:
                    return Caller(bearer_token=token)

                def bad_caller() -> Caller:
                    return Caller(bearer_token=bad)
            else:
                key = "bench-" + os.urandom(16).hex()
                plugin = AuthPlugin(strategy="api_key", api_keys={SUBJECT: {"key": key, "scopes": SCOPE.split()}})

                def caller() -> Caller:
                    return Caller(api_key=key)

                def bad_caller() -> Caller:
                    return Caller(api_key=key + "x")

            baseline = _core_baseline(caller)
            try:
                app, providers, close_app = core_host([plugin])
            except BaseException:
                baseline.close()
                raise
        except BaseException:
            if idp is not None:
                idp.close()
            raise

        def close() -> None:
            try:
                close_app()
            finally:
                if idp is not None:
                    idp.close()

        count = [0]
        candidate = Side(f"+ auth {strategy}", _counted(app.execute_workflow, caller, count), close, {
            "app": app, "providers": providers, "executions": count, "idp": idp, "strategy": strategy,
            "bad_caller": bad_caller,
        })
        return baseline, candidate

    return build


def check_auth_case(baseline: Side, candidate: Side) -> list[str]:
    """One execution is let in as the token's subject; a bad credential is turned away."""
    st = candidate.state
    providers: Providers = st["providers"]
    problems: list[str] = []
    providers.exporter.kept.clear()
    providers.exporter.keep = True
    try:
        candidate.run()
    finally:
        providers.exporter.keep = False
    workflow_spans = [s for s in providers.exporter.kept if s.name == c.WORKFLOW_SPAN.format(workflow=WORKFLOW)]
    attrs = dict(workflow_spans[0].attributes or {}) if workflow_spans else {}
    if attrs.get("enduser.id") != SUBJECT or attrs.get("nexus.auth.method") != st["strategy"]:
        problems.append(f"the workflow span does not name the caller: enduser.id={attrs.get('enduser.id')!r}, "
                        f"nexus.auth.method={attrs.get('nexus.auth.method')!r}")
    try:
        st["app"].execute_workflow(WORKFLOW, INPUTS, caller=st["bad_caller"]())
        problems.append("a bad credential was let in")
    except AuthenticationError:
        pass
    if _metric_total(providers.reader, "nexus.auth.failures") != 1:
        problems.append("the rejected credential was not counted once in nexus.auth.failures")
    return problems


def final_check_auth_case(baseline: Side, candidate: Side) -> list[str]:
    """Every execution was let in (only the check's bad credential failed); the JWKS was fetched once."""
    st = candidate.state
    problems: list[str] = []
    failures = _metric_total(st["providers"].reader, "nexus.auth.failures")
    if failures != 1:
        problems.append(f"nexus.auth.failures is {failures:g}, expected 1 (the check's bad credential)")
    notes = [f"{st['executions'][0]} executions let in; nexus.auth.failures {failures:g} (the check's bad credential)"]
    idp: JwksIdp | None = st["idp"]
    if idp is not None:
        if idp.fetches() != 1 or idp.counts.keys() - {"/jwks.json"}:
            problems.append(f"key server requests {idp.counts}, expected exactly 1 JWKS fetch")
        notes.append(f"key server: {idp.fetches()} JWKS fetch(es) over the check, warm-up and rounds "
                     f"(keys cached by PyJWKClient)")
    st["notes"] = notes
    return problems


RATE_LIMIT = 10**9
AUXILIARY_BUDGET = 10.0  # wall seconds for each of (d), (d-jwt), (d-key) and (e) in a full run
RATE_BURST = 10**8


def build_rate_limit_case() -> tuple[Side, Side]:
    def caller() -> Caller:
        return Caller(client_address="127.0.0.1")

    baseline = _core_baseline(caller)
    plugin = RateLimitPlugin(limit=RATE_LIMIT, burst=RATE_BURST, key="client")
    try:
        app, providers, close = core_host([plugin])
    except BaseException:
        baseline.close()
        raise
    count = [0]
    candidate = Side("+ rate limit", _counted(app.execute_workflow, caller, count), close, {
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
    rejections = _metric_total(st["providers"].reader, "nexus.ratelimit.rejections")
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


# (key, what, baseline, candidate, target, executions per round). Later cases go here.
CASES: list[Case] = [
    Case(
        key="a", title="full telemetry: host vs raw OpenTelemetry SDK (trivial workflow, 3 hooks)",
        baseline_label="raw SDK", candidate_label="Nexus",
        build=build_telemetry_case, target=1.25, n=400, check=check_telemetry_case,
    ),
    Case(
        key="a-lean", title="full telemetry on the host's own providers (its lean tracer) vs raw OpenTelemetry SDK",
        baseline_label="raw SDK", candidate_label="Nexus own",
        build=build_lean_case, target=None, n=400, check=check_lean_case,
    ),
    Case(
        key="b", title="OTEL_SDK_DISABLED=true: host vs host without telemetry code (100 us workflow)",
        baseline_label="no-telemetry host", candidate_label="Nexus disabled",
        build=build_disabled_case, target=1.05, n=400, check=check_disabled_case,
    ),
    Case(
        key="c", title="full pipeline: host with redaction, request log, metrics, webhook and audit "
                       "vs host with core telemetry (trivial workflow, 3 hooks)",
        baseline_label="core telemetry", candidate_label="full pipeline",
        build=build_pipeline_case, target=1.5, n=100, check=check_pipeline_case,
        final_check=final_check_pipeline_case, budget=25.0, max_rounds=40, total=True,
    ),
    Case(
        key="c-floor", title="durable floor: host with one bare outbox put per execution (the record's JSON, "
                             "no payload, no worker) vs host with core telemetry (trivial workflow, 3 hooks)",
        baseline_label="core telemetry", candidate_label="+ one outbox put",
        build=build_floor_case, target=None, n=100, check=check_floor_case, budget=AUXILIARY_BUDGET,
    ),
    Case(
        key="f", title="tail sampling: NEXUS_OTEL_TAIL_SAMPLING_RATIO=0.1 vs keep-all, both exporting to the "
                       "local store (trivial workflow, 3 hooks); total includes the export",
        baseline_label="keep all", candidate_label="tail 0.1",
        build=build_tail_case, target=None, n=100, check=check_tail_case, budget=AUXILIARY_BUDGET, total=True,
    ),
    Case(
        key="d", title="auth, OIDC: host with AuthPlugin (RS256 bearer JWT, JWKS from 127.0.0.1, keys cached) "
                       "vs host with core telemetry (trivial workflow, 3 hooks)",
        baseline_label="core telemetry", candidate_label="+ auth oidc",
        build=_auth_case("oidc"), target=None, n=200, check=check_auth_case,
        final_check=final_check_auth_case, budget=AUXILIARY_BUDGET,
    ),
    Case(
        key="d-jwt", title="auth, variant: AuthPlugin strategy='jwt' (HS256 shared secret) vs core telemetry",
        baseline_label="core telemetry", candidate_label="+ auth jwt HS256",
        build=_auth_case("jwt"), target=None, n=200, check=check_auth_case,
        final_check=final_check_auth_case, budget=AUXILIARY_BUDGET,
    ),
    Case(
        key="d-key", title="auth, variant: AuthPlugin strategy='api_key' (one stored key) vs core telemetry",
        baseline_label="core telemetry", candidate_label="+ auth api_key",
        build=_auth_case("api_key"), target=None, n=200, check=check_auth_case,
        final_check=final_check_auth_case, budget=AUXILIARY_BUDGET,
    ),
    Case(
        key="e", title=f"rate limit: host with RateLimitPlugin(limit={RATE_LIMIT:.0e}/min, burst={RATE_BURST:.0e}, "
                       f"key='api_key', memory storage; never rejects) vs host with core telemetry",
        baseline_label="core telemetry", candidate_label="+ rate limit",
        build=build_rate_limit_case, target=None, n=200, check=check_rate_limit_case,
        final_check=final_check_rate_limit_case, budget=AUXILIARY_BUDGET,
    ),
]


# --------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------
@dataclass
class Result:
    case: Case
    baseline: list[float]  # per-execution seconds, one per round
    candidate: list[float]
    problems: list[str]
    rounds_planned: int = 0
    clock: str = "cpu"
    notes: list[str] = field(default_factory=list)
    # Cases with a total: per-execution seconds per round, loop plus drain (reported, not judged).
    base_total: list[float] = field(default_factory=list)
    cand_total: list[float] = field(default_factory=list)
    total_clock: str = "process"

    @property
    def base_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def cand_median(self) -> float:
        return statistics.median(self.candidate)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios (each round's two sides ran back to back): judged."""
        return statistics.median(c / b for b, c in zip(self.baseline, self.candidate))

    @property
    def ratio_of_medians(self) -> float:
        """median(candidate) / median(baseline): shown for comparison."""
        return self.cand_median / self.base_median

    @property
    def total_ratio(self) -> float:
        """Median of the per-round ratios of the totals (informational)."""
        return statistics.median(c / b for b, c in zip(self.base_total, self.cand_total))

    @property
    def total_ratio_of_medians(self) -> float:
        return statistics.median(self.cand_total) / statistics.median(self.base_total)

    @property
    def paired_extra(self) -> float:
        """Median over rounds of candidate - baseline (seconds per execution)."""
        return statistics.median(c - b for b, c in zip(self.baseline, self.candidate))

    @property
    def passed(self) -> bool:
        """Checks passed and, for a case with a target, the ratio met it."""
        return not self.problems and (self.case.target is None or self.ratio <= self.case.target)


CLOCKS: dict[str, Callable[[], float]] = {
    # CPU time of this thread: time the scheduler gives to other processes is not
    # counted, which is what makes a shared, loaded machine usable. Everything both
    # sides of (a) and (b) do (SimpleSpanProcessor exports included) runs in this thread.
    "cpu": time.thread_time,
    # CPU time of the whole process, every thread: for (c), whose batch processors and
    # outbox workers do their share on background threads.
    "process": time.process_time,
    "wall": time.perf_counter,
}
CLOCK_NAMES = {"cpu": "thread CPU time", "process": "process CPU time", "wall": "wall time"}


def _time_round(side: Side, n: int, clock: Callable[[], float] = time.thread_time,
                total_clock: Callable[[], float] | None = None) -> tuple[float, float | None]:
    """Per-execution seconds: (judged figure, total or None).

    Without ``total_clock`` the judged figure spans the executions and the drain. With
    it, the judged figure spans the executions only (the hot path), and the total, on
    ``total_clock``, spans the executions and the drain.
    """
    fn, drain = side.run, side.drain
    loop = range(n)
    gc.collect()
    gc.disable()
    try:
        total_start = total_clock() if total_clock is not None else 0.0
        start = clock()
        for _ in loop:
            fn()
        if total_clock is None:
            if drain is not None:
                drain()
            return (clock() - start) / n, None
        elapsed = clock() - start
        if drain is not None:
            drain()
        total = total_clock() - total_start
    finally:
        gc.enable()
    return elapsed / n, total / n


MIN_ROUNDS = 15


def measure(case: Case, rounds: int, n: int, warmup: int,
            clock: Callable[[], float] = time.thread_time, budget: float = float("inf"),
            total_clock: Callable[[], float] | None = None) -> Result:
    """Up to ``rounds`` rounds, fewer (but at least MIN_ROUNDS) if ``budget`` wall seconds run out."""
    deadline = perf_counter() + budget
    baseline, candidate = case.build()
    try:
        problems = case.check(baseline, candidate) if case.check else []
        for side in (baseline, candidate, baseline, candidate):
            for _ in range(warmup):
                side.run()
            if side.drain is not None:
                side.drain()
        base_times: list[float] = []
        cand_times: list[float] = []
        base_total: list[float] = []
        cand_total: list[float] = []

        def timed(side: Side, times: list[float], totals: list[float]) -> None:
            elapsed, total = _time_round(side, n, clock, total_clock)
            times.append(elapsed)
            if total is not None:
                totals.append(total)

        for i in range(rounds):
            if i >= MIN_ROUNDS and i % 2 == 0 and perf_counter() > deadline:
                break
            if i % 2 == 0:
                timed(baseline, base_times, base_total)
                timed(candidate, cand_times, cand_total)
            else:
                timed(candidate, cand_times, cand_total)
                timed(baseline, base_times, base_total)
        if case.final_check:
            problems += case.final_check(baseline, candidate)
        return Result(case, base_times, cand_times, problems, rounds,
                      notes=list(candidate.state.get("notes", ())), base_total=base_total, cand_total=cand_total)
    finally:
        baseline.close()
        candidate.close()


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:8.2f}"


def _spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return f"{q[0] * 1e6:.1f}-{q[-1] * 1e6:.1f}"


def _ratio(value: float, target: float | None) -> str:
    """Three decimals, or four when three would round across the target (1.0504 is not 1.050)."""
    if target is None:
        return f"{value:.3f}"
    for places in range(3, 7):
        text = f"{value:.{places}f}"
        if (float(text) <= target) == (value <= target):
            break
    return text


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
            f"{(r.cand_median - r.base_median) * 1e6:>7.2f} {_ratio(r.ratio, r.case.target):>6} "
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
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per case (default 60, (c) 40; quick 30)")
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
    # internal mode: the webhook receiver subprocess of case (c)
    parser.add_argument("--webhook-receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--secret", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.webhook_receiver:
        return receiver_main(args.secret)

    t0 = perf_counter()
    scale = 0.3 if args.quick else 1.0
    selected = [case for case in CASES
                if not args.case or case.key in args.case or case.key.split("-")[0] in args.case]
    print(f"nexus-otel overhead benchmark  python {platform.python_version()}  "
          f"opentelemetry-sdk {otel_sdk_version.__version__}  nproc {os.cpu_count()}  "
          f"{'quick' if args.quick else 'full'} run, {args.clock} clock")
    results = []
    broken = []
    for case in selected:
        default_rounds = 30 if args.quick else 60
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
        clocks = (f"hot path {CLOCK_NAMES[clock]}, total {CLOCK_NAMES[total_clock]}" if total_clock
                  else CLOCK_NAMES[clock])
        print(f"  ({case.key}) {case.title}: {rounds} rounds x {n} executions per side, "
              f"{clocks}, budget {budget:g} s ...", flush=True)
        BUSY_CLOCK[0] = CLOCKS[clock]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
