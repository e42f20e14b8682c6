"""CPU time per span (and per log record) of encoding an OTLP batch: the SDK's encoders against nexus-otel's.

Run::

    python benchmarks/otlp_encoding.py            # full run (about 50 s)
    python benchmarks/otlp_encoding.py --quick    # shorter, noisier run (about 12 s)
    python benchmarks/otlp_encoding.py --profile  # also a cProfile of our span encoder (top functions)

The batch is what this project's batch span processor hands the OTLP exporter:
512 spans from one resource and the ``nexus_otel`` scope, made with the real SDK,
shaped like its spans: per request an HTTP server span (method, path, scheme,
protocol, server and client address, user agent, status code, route), a
``workflow <name>`` span (``nexus.workflow.name``, ``nexus.workflow.id``,
``nexus.channel``, ``session.id``) and two or three ``hook <event> <plugin>``
spans (``nexus.plugin.name``, ``nexus.hook.event``). Eight such batches with
fresh ids (trace, span, workflow and session ids all differ) are encoded in turn,
so what our encoder keeps between batches is only what really repeats.

Sides: **stock** is ``encode_spans(batch).SerializeToString()``
(``opentelemetry.exporter.otlp.proto.common.trace_encoder``, protobuf's upb
backend); **ours** is ``SpanEncoder.encode(batch)`` with one encoder kept across
batches, as an exporter keeps it. Before timing, every batch must decode to the
stock message. The two sides run in alternating rounds (the order flips each
round), each round encoding every batch ``reps`` times with the garbage collector
paused, timed with ``time.process_time``. Per side: the median over rounds of
µs per span. The judged ratio is the median over rounds of that round's
ours / stock (target <= 0.33); the ratio of the medians is printed beside it.

A third line, **floor**, times the least any Python encoder must do: read every
field an encoder reads from each span (context, parent, name, kind, times,
status, events, links, dropped counts) and iterate its attributes, building
nothing. It shows how much of our time is the reading itself.

**Logs**, the same way: 8 batches of 512 log records as this project's batch log
record processor hands them to the OTLP log exporter: per request the request
log's ``nexus.workflow.started`` and ``nexus.workflow.completed`` (or ``failed``)
records (workflow name and id, channel, session, redacted inputs as JSON,
status, duration; ``exception.*`` on failure) and, every other request, a user's
``logging`` record as the contrib handler makes it (formatted message,
``code.*`` attributes), all in the request's trace. **stock** is
``encode_logs(batch).SerializeToString()``
(``opentelemetry.exporter.otlp.proto.common._log_encoder``), **ours**
``LogEncoder.encode(batch)``; every batch must decode equal first; µs per record.

The script always exits 0: it reports, it does not gate (``--smoke``, a run that only shows the script works,
exits 1 when an equality check fails).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import __version__ as protobuf_version
from google.protobuf.internal import api_implementation
from harness import add_smoke_option, paired_ratio, ratio_of_medians, rotated, smoke_verdict
from opentelemetry import trace as trace_api
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk import version as otel_sdk_version
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import nexus_otel
from nexus_otel.exporters.otlp_encoding import LogEncoder, SpanEncoder
from nexus_otel.telemetry import contract as c

BATCH_SIZE = 512
BATCHES = 8
TARGET = 0.33
WORKFLOWS = ("greet", "summarize", "classify", "translate", "ingest")
PLUGINS = ("auditor", "metrics", "webhook")


class Collect(SpanExporter):
    """Keeps every finished span."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _resource() -> Resource:
    """The resource of every batch: a service as a deployment names it."""
    return Resource.create({c.SERVICE_NAME: "bench-service", "service.version": "1.4.2",
                            "deployment.environment.name": "production", "host.name": "worker-3"})


def make_batches(seed: int = 1) -> list[tuple[ReadableSpan, ...]]:
    """``BATCHES`` batches of ``BATCH_SIZE`` project-shaped spans, from one provider (one resource, one scope)."""
    rng = random.Random(seed)
    collect = Collect()
    provider = TracerProvider(resource=_resource())
    provider.add_span_processor(SimpleSpanProcessor(collect))
    tracer = provider.get_tracer(c.INSTRUMENTATION_NAME, nexus_otel.__version__)
    while len(collect.spans) < BATCH_SIZE * BATCHES:
        workflow = rng.choice(WORKFLOWS)
        route = "/workflows/{name}"
        http_attributes = {
            "http.request.method": "POST", "url.path": f"/workflows/{workflow}", "url.scheme": "http",
            "network.protocol.version": "1.1", "server.address": "api.example.com", "server.port": 8000,
            "client.address": f"10.0.{rng.randrange(4)}.{rng.randrange(256)}",
            "user_agent.original": "python-httpx/0.27.0",
        }
        with tracer.start_as_current_span("POST", kind=SpanKind.SERVER, attributes=http_attributes) as http:
            with tracer.start_as_current_span(c.WORKFLOW_SPAN.format(workflow=workflow), attributes={
                    c.WORKFLOW_NAME: workflow, c.WORKFLOW_ID: uuid.UUID(int=rng.getrandbits(128)).hex,
                    c.CHANNEL: "http", c.SESSION_ID: f"session-{rng.randrange(100_000)}"}) as span:
                events = [c.WORKFLOW_STARTED, c.WORKFLOW_COMPLETED] + (
                    [c.WORKFLOW_COMPLETED] if rng.random() < 0.5 else [])
                for event in events:
                    plugin = rng.choice(PLUGINS)
                    with tracer.start_as_current_span(c.HOOK_SPAN.format(event=event, plugin=plugin), attributes={
                            c.PLUGIN_NAME: plugin, c.HOOK_EVENT: event}):
                        pass
                if rng.random() < 0.05:
                    span.set_status(Status(StatusCode.ERROR, "workflow failed"))
            http.update_name(f"POST {route}")
            http.set_attributes({"http.response.status_code": 200, "http.route": route})
    provider.shutdown()
    spans = collect.spans
    return [tuple(spans[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]) for i in range(BATCHES)]


def make_log_batches(seed: int = 1) -> list[tuple[ReadableLogRecord, ...]]:
    """``BATCHES`` batches of ``BATCH_SIZE`` project-shaped log records, from one provider (one resource)."""
    rng = random.Random(seed)
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=_resource())
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    requests = provider.get_logger("nexus_otel.requests", nexus_otel.__version__)
    user = provider.get_logger("orders.workflows")
    n = 0
    while n < BATCH_SIZE * BATCHES:
        workflow = rng.choice(WORKFLOWS)
        context = trace_api.set_span_in_context(NonRecordingSpan(SpanContext(
            rng.getrandbits(128), rng.getrandbits(64), False, trace_flags=TraceFlags(rng.random() < 0.9))))
        start = time.time_ns()
        attributes = {c.WORKFLOW_NAME: workflow, c.WORKFLOW_ID: uuid.UUID(int=rng.getrandbits(128)).hex,
                      c.CHANNEL: "http", c.SESSION_ID: f"session-{rng.randrange(100_000)}"}
        requests.emit(timestamp=start, context=context, severity_number=SeverityNumber.INFO, severity_text="INFO",
                      body="workflow started", event_name=c.LOG_WORKFLOW_STARTED, attributes={
                          **attributes, c.WORKFLOW_INPUTS: f'{{"name": "user-{rng.randrange(10**6)}", '
                                                          f'"password": "***", "items": {rng.randrange(9)}}}'})
        n += 1
        if n % 2:
            user.emit(timestamp=start + 1000, context=context, severity_number=SeverityNumber.WARN,
                      severity_text="WARN", body=f"order {rng.randrange(10**6)} is waiting for stock", attributes={
                          "code.file.path": "/srv/app/orders/workflows.py", "code.function.name": workflow,
                          "code.line.number": 42})
            n += 1
        failed = rng.random() < 0.05
        end = {**attributes, c.WORKFLOW_STATUS: "failed" if failed else "completed",
               c.WORKFLOW_DURATION_ATTR: rng.uniform(0.001, 0.2)}
        if failed:
            end.update({c.EXCEPTION_TYPE: "ValueError", c.EXCEPTION_MESSAGE: "no stock for item"})
        requests.emit(timestamp=start + 2_000_000, context=context,
                      severity_number=SeverityNumber.ERROR if failed else SeverityNumber.INFO,
                      severity_text="ERROR" if failed else "INFO", body=f"workflow {end[c.WORKFLOW_STATUS]}",
                      event_name=c.LOG_WORKFLOW_FAILED if failed else c.LOG_WORKFLOW_COMPLETED, attributes=end)
        n += 1
    provider.shutdown()
    records = memory.get_finished_logs()
    return [tuple(records[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]) for i in range(BATCHES)]


def floor(batch: Sequence[ReadableSpan]) -> int:
    """Read what an encoder must read from every span, and build nothing."""
    n = 0
    for span in batch:
        _ = span.resource, span.instrumentation_scope
        context = span.get_span_context()
        _ = context.trace_id, context.span_id, context.trace_state
        parent = span.parent
        if parent:
            _ = parent.span_id, parent.is_remote
        _ = span.name, span.kind, span.start_time, span.end_time, span.status
        _ = span.dropped_attributes, span.dropped_events, span.dropped_links
        _ = span.events, span.links
        attributes = span.attributes
        for key in attributes:  # as our encoder reads them (cheaper than .items() on the SDK's Mapping)
            attributes[key]
            n += 1
    return n


def time_side(run: Callable[[Sequence[Any]], Any], batches: Sequence[Sequence[Any]], reps: int) -> float:
    """CPU seconds per item for ``reps`` passes over ``batches``, the garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(reps):
            for batch in batches:
                run(batch)
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    return elapsed / (reps * sum(len(b) for b in batches))


def identical_encodings(batches: Sequence[Sequence[Any]], stock: Callable[[Sequence[Any]], Any],
                        ours: Callable[[Sequence[Any]], bytes], decode: Callable[[bytes], Any]) -> int | None:
    """How many batches ``ours`` encodes byte for byte as ``stock`` does; None when one decodes to another
    message than the stock encoder's (then no figure means anything)."""
    identical = 0
    for batch in batches:
        stock_message = stock(batch)
        ours_bytes = ours(batch)
        if decode(ours_bytes) != stock_message:
            return None
        identical += ours_bytes == stock_message.SerializeToString()
    return identical


def paired_rounds(sides: Sequence[tuple[str, Callable[[Sequence[Any]], Any]]], batches: Sequence[Sequence[Any]],
                  rounds: int, reps: int, also: Sequence[tuple[str, Callable[[Sequence[Any]], Any]]] = ()
                  ) -> dict[str, list[float]]:
    """Each side's CPU seconds per item, one figure a round: the sides back to back in an order that turns every
    round (``harness.rotated``), then each of ``also`` (timed after them, not alternated)."""
    figures: dict[str, list[float]] = {label: [] for label, _ in [*sides, *also]}
    for round_no in range(rounds):
        for label, run in [*rotated(sides, round_no), *also]:
            figures[label].append(time_side(run, batches, reps))
    return figures


def print_ratio(what: str, figures: dict[str, list[float]]) -> None:
    """The judged ratio ours / stock (median of the per-round ratios) beside the ratio of the medians."""
    ratios = [o / s for o, s in zip(figures["ours"], figures["stock"])]
    ratio = paired_ratio(figures["ours"], figures["stock"])
    print(f"  {what}ratio ours/stock: {ratio:.3f} (median of rounds; ratio of medians "
          f"{ratio_of_medians(figures['ours'], figures['stock']):.3f}; rounds {min(ratios):.3f}..{max(ratios):.3f}); "
          f"target <= {TARGET}: {'PASS' if ratio <= TARGET else 'FAIL'}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per side (default 15, quick 5)")
    parser.add_argument("--reps", type=int, default=None, help="passes over the batches per round (default 3)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of our encoder")
    add_smoke_option(parser, "one round of one pass")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.smoke else 5 if args.quick else 15)
    reps = args.reps or (1 if args.quick or args.smoke else 3)

    print(f"python {platform.python_version()}, opentelemetry-sdk {otel_sdk_version.__version__}, "
          f"protobuf {protobuf_version} ({api_implementation.Type()}), {os.cpu_count()} CPUs")
    batches = make_batches()
    encoder = SpanEncoder()
    identical = identical_encodings(batches, encode_spans, encoder.encode, ExportTraceServiceRequest.FromString)
    if identical is None:
        print("FAIL: our encoding differs from the stock encoder's")
        return smoke_verdict(["span encoding differs from the stock encoder's"]) if args.smoke else 0
    attributes = sum(len(s.attributes) for b in batches for s in b) / (BATCH_SIZE * BATCHES)
    print(f"{BATCHES} batches of {BATCH_SIZE} spans ({attributes:.1f} attributes per span), "
          f"{rounds} rounds x {reps} passes; decoded equal to stock: {BATCHES}/{BATCHES}, "
          f"byte-identical: {identical}/{BATCHES}")

    def stock(batch: Sequence[ReadableSpan]) -> bytes:
        return encode_spans(batch).SerializeToString()

    ours = encoder.encode
    for side in (stock, ours, floor):  # warm-up
        time_side(side, batches, 1)

    figures = paired_rounds([("stock", stock), ("ours", ours)], batches, rounds, reps, also=[("floor", floor)])
    med = {label: statistics.median(values) * 1e6 for label, values in figures.items()}
    print(f"  stock  encode_spans().SerializeToString()  {med['stock']:7.2f} µs/span")
    print(f"  ours   SpanEncoder.encode()                {med['ours']:7.2f} µs/span")
    print(f"  floor  read the spans, build nothing       {med['floor']:7.2f} µs/span")
    print_ratio("", figures)

    problems = logs_main(rounds, reps)

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(reps):
            for batch in batches:
                ours(batch)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return smoke_verdict(problems) if args.smoke else 0


def logs_main(rounds: int, reps: int) -> list[str]:
    """The logs line: stock ``encode_logs`` against ``LogEncoder``, after an equality check of every batch.
    Returns the check's problems."""
    batches = make_log_batches()
    encoder = LogEncoder()
    identical = identical_encodings(batches, encode_logs, encoder.encode, ExportLogsServiceRequest.FromString)
    if identical is None:
        print("FAIL: our log encoding differs from the stock encoder's")
        return ["log encoding differs from the stock encoder's"]
    attributes = sum(len(r.log_record.attributes or ()) for b in batches for r in b) / (BATCH_SIZE * BATCHES)
    print(f"logs: {BATCHES} batches of {BATCH_SIZE} log records ({attributes:.1f} attributes per record); "
          f"decoded equal to stock: {BATCHES}/{BATCHES}, byte-identical: {identical}/{BATCHES}")

    def stock(batch: Sequence[ReadableLogRecord]) -> bytes:
        return encode_logs(batch).SerializeToString()

    ours = encoder.encode
    for side in (stock, ours):  # warm-up
        time_side(side, batches, 1)
    figures = paired_rounds([("stock", stock), ("ours", ours)], batches, rounds, reps)
    med = {label: statistics.median(values) * 1e6 for label, values in figures.items()}
    print(f"  stock  encode_logs().SerializeToString()   {med['stock']:7.2f} µs/record")
    print(f"  ours   LogEncoder.encode()                 {med['ours']:7.2f} µs/record")
    print_ratio("logs ", figures)
    return []


if __name__ == "__main__":
    sys.exit(main())
