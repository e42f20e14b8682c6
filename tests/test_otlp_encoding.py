"""The fast OTLP span encoder decodes to exactly what the SDK's encoder builds, and the exporters deliver it."""

from __future__ import annotations

import http.server
import logging
import math
import random
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as stock_encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as StockGrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as StockHttpSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from nexus_otel import Nexus
from nexus_otel.errors import ConfigurationError
from nexus_otel.exporters.otlp_encoding import SpanEncoder, encode_spans
from nexus_otel.exporters.otlp_exporters import OTLPGrpcSpanExporter, OTLPHttpSpanExporter
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.telemetry.sinks import otlp_span_exporter

try:  # tests/ may or may not become a package
    from .otlp_receivers import GRPCReceiver, HTTPReceiver, receiver_for
except ImportError:
    from otlp_receivers import GRPCReceiver, HTTPReceiver, receiver_for

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def same_as_stock(spans: Sequence[ReadableSpan], encoder: SpanEncoder | None = None) -> bool:
    """Assert our bytes decode to the stock encoder's message; return whether the bytes are identical too."""
    ours = (encoder or SpanEncoder()).encode(spans)
    stock = stock_encode_spans(spans)
    decoded = ExportTraceServiceRequest.FromString(ours)
    assert decoded == stock, _first_difference(decoded, stock)
    return ours == stock.SerializeToString()


def _first_difference(ours: ExportTraceServiceRequest, stock: ExportTraceServiceRequest) -> str:
    """A short description of where two requests differ, for assertion messages."""
    if len(ours.resource_spans) != len(stock.resource_spans):
        return f"{len(ours.resource_spans)} resource_spans, stock {len(stock.resource_spans)}"
    for i, (a, b) in enumerate(zip(ours.resource_spans, stock.resource_spans)):
        if a.resource != b.resource or a.schema_url != b.schema_url:
            return f"resource_spans[{i}] resource: {a.resource} / stock {b.resource}"
        for j, (sa, sb) in enumerate(zip(a.scope_spans, b.scope_spans)):
            if sa.scope != sb.scope or sa.schema_url != sb.schema_url or len(sa.spans) != len(sb.spans):
                return f"resource_spans[{i}].scope_spans[{j}]: {sa.scope} / stock {sb.scope}"
            for k, (x, y) in enumerate(zip(sa.spans, sb.spans)):
                if x != y:
                    return f"span [{i}][{j}][{k}]:\n{x}\nstock:\n{y}"
        if len(a.scope_spans) != len(b.scope_spans):
            return f"resource_spans[{i}]: {len(a.scope_spans)} scope_spans, stock {len(b.scope_spans)}"
    return "differs"


class Recorder:
    """A TracerProvider per resource, all finishing into one in-memory exporter, in end order."""

    def __init__(self, limits: SpanLimits | None = None) -> None:
        """Start with no providers."""
        self.exporter = InMemorySpanExporter()
        self.limits = limits
        self._providers: list[TracerProvider] = []

    def provider(self, resource: Resource) -> TracerProvider:
        """A new provider for ``resource`` sending to the shared exporter."""
        provider = TracerProvider(resource=resource, span_limits=self.limits)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._providers.append(provider)
        return provider

    def spans(self) -> tuple[ReadableSpan, ...]:
        """Every finished span so far."""
        return self.exporter.get_finished_spans()

    def shutdown(self) -> None:
        """Shut every provider down."""
        for provider in self._providers:
            provider.shutdown()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A fresh recorder with default limits."""
    rec = Recorder()
    yield rec
    rec.shutdown()


def remote_context(trace_state: TraceState | None = None) -> context_api.Context:
    """A context whose current span is a sampled remote parent (as a propagator would extract it)."""
    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x-y")]) if trace_state is None else trace_state,
    )
    return trace_api.set_span_in_context(NonRecordingSpan(parent))


def readable(name: str = "direct", **kwargs: Any) -> ReadableSpan:
    """A ReadableSpan built directly (values the SDK would clean up can be tried this way)."""
    kwargs.setdefault("context", SpanContext(0x1234, 0x5678, is_remote=False))
    kwargs.setdefault("start_time", 1_700_000_000_000_000_000)
    kwargs.setdefault("end_time", 1_700_000_000_500_000_000)
    kwargs.setdefault("resource", Resource({"service.name": "direct"}))
    kwargs.setdefault("instrumentation_scope", InstrumentationScope("direct-scope", "0.1"))
    return ReadableSpan(name=name, **kwargs)


EVERY_TYPE = {
    "str": "value",
    "empty.str": "",
    "unicode": "héllo wörld ✓ 日本語 🌍",
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.negative": -42,
    "int.min": -(2**63),
    "int.max": 2**63 - 1,
    "int.large": 10**15 + 7,
    "float": 3.25,
    "float.zero": 0.0,
    "float.negative.zero": -0.0,
    "float.negative": -1e-300,
    "float.huge": 1.7976931348623157e308,
    "float.inf": math.inf,
    "float.minus.inf": -math.inf,
    "list.str": ["a", "", "ü", "b"],
    "list.bool": [True, False, True],
    "list.int": [0, -1, 2**63 - 1, -(2**63), 300],
    "list.float": [0.5, -0.0, 1e10],
    "list.empty": [],
    "tuple.empty": (),
}


# --------------------------------------------------------------------------------------
# Equality with the stock encoder
# --------------------------------------------------------------------------------------
def test_every_attribute_type_matches_stock(recorder):
    """Every attribute type the SDK keeps (scalars, arrays, empty values, unicode, extreme ints) encodes as stock."""
    tracer = recorder.provider(Resource.create({"service.name": "types"})).get_tracer("types", "1.0")
    with tracer.start_as_current_span("all types", attributes=EVERY_TYPE):
        pass
    with tracer.start_as_current_span("no attributes"):
        pass
    spans = recorder.spans()
    assert len(spans[0].attributes) == len(EVERY_TYPE)
    assert same_as_stock(spans)


def test_values_the_sdk_would_not_keep_match_stock(caplog):
    """Bytes, None, nested and mapping values, and values stock cannot encode (dropped with a log) match stock."""
    attributes = {
        "bytes": b"\x00\x01\xff",
        "empty.bytes": b"",
        "none": None,
        "list.none": ["a", None, "b"],
        "nested": [[1, 2], ["x"], []],
        "mapping": {"a": 1, "b": [True], 3: "int key", "": None},
        "bytearray": bytearray(b"ab"),  # a Sequence of ints, as stock sees it
        "int.too.big": 2**64,  # out of int64: stock drops the attribute
        "int.too.small": -(2**63) - 1,
        "list.int.too.big": [1, 2**70],
        "object": object(),  # no encoding: dropped
        "surrogate": "\ud800",  # not UTF-8: dropped
        b"bytes.key": "utf-8 bytes key",  # protobuf takes UTF-8 bytes for a string
        7: "non-str key",  # dropped
        "": "empty key",  # the SDK refuses it; the key field is left out
        "last": "kept",
    }
    span = readable(attributes=attributes, events=[Event("e", {"object": object(), "ok": 1}, timestamp=5)],
                    links=[Link(SpanContext(1, 2, False), {"big": 2**64, "ok": "y"})])
    with caplog.at_level(logging.ERROR, logger="nexus_otel.exporters.otlp_encoding"):
        same_as_stock([span])
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode([span]))
    keys = [kv.key for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert "int.too.big" not in keys and "object" not in keys and "surrogate" not in keys
    assert keys[-1] == "last" and "bytes.key" in keys
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "nexus_otel.exporters.otlp_encoding")
    for key in ("int.too.big", "int.too.small", "list.int.too.big", "object", "surrogate", "7", "big"):
        assert f"Failed to encode key {key}:" in logged, key


def test_nan_matches_stock(recorder):
    """A NaN attribute encodes to the same double as stock."""
    tracer = recorder.provider(Resource.create({})).get_tracer("nan")
    with tracer.start_as_current_span("nan", attributes={"nan": math.nan, "list.nan": [math.nan, 1.0]}):
        pass
    assert same_as_stock(recorder.spans())


@pytest.mark.parametrize("kind", list(SpanKind), ids=lambda k: k.name)
def test_every_span_kind_matches_stock(recorder, kind):
    """Each span kind maps to the same OTLP kind as stock."""
    tracer = recorder.provider(Resource.create({})).get_tracer("kinds")
    with tracer.start_as_current_span(f"kind {kind.name}", kind=kind):
        pass
    assert same_as_stock(recorder.spans())


@pytest.mark.parametrize("status", [
    None, Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR),
    Status(StatusCode.ERROR, "boom: ✗ failed"), Status(StatusCode.ERROR, ""),
], ids=["never-set", "unset", "ok", "error", "error-message", "error-empty-message"])
def test_every_status_matches_stock(recorder, status):
    """Status unset, ok and error, with and without a message, encodes as stock."""
    tracer = recorder.provider(Resource.create({})).get_tracer("status")
    with tracer.start_as_current_span("status", record_exception=False, set_status_on_exception=False) as span:
        if status is not None:
            span.set_status(status)
    spans = recorder.spans()
    assert same_as_stock(spans)
    direct = [readable(status=Status(code)) for code in StatusCode]
    direct.append(readable(status=None))
    assert same_as_stock(direct)


def test_exception_events_match_stock(recorder):
    """A span that records an exception (event with exception.* attributes, error status) encodes as stock."""
    tracer = recorder.provider(Resource.create({})).get_tracer("errors")
    with pytest.raises(ValueError):
        with tracer.start_as_current_span("fails"):
            raise ValueError("nope ✗")
    assert same_as_stock(recorder.spans())


def test_events_and_links_match_stock(recorder):
    """Events with attributes and links with trace state, attributes and remote flags encode as stock."""
    tracer = recorder.provider(Resource.create({"service.name": "links"})).get_tracer("links", "2")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=TraceState([("k", "v"), ("k2", "v2")]))
    local = SpanContext(0x123, 0x456, is_remote=False)
    with tracer.start_as_current_span("first") as first:
        first.add_event("plain")
        first.add_event("with attributes", {"e.str": "x", "e.int": 7, "e.list": [1.5], "e.empty": ""})
        first.add_event("timestamped", timestamp=1_000)
    links = [Link(remote, {"link.attr": "a", "n": -3}), Link(local), Link(first.get_span_context(), {})]
    with tracer.start_as_current_span("linked", links=links):
        pass
    assert same_as_stock(recorder.spans())


def test_dropped_counts_match_stock():
    """Spans over the attribute, event and link limits carry the same dropped counts as stock."""
    rec = Recorder(SpanLimits(max_span_attributes=2, max_events=2, max_links=2,
                              max_event_attributes=1, max_link_attributes=1))
    try:
        tracer = rec.provider(Resource.create({})).get_tracer("limits")
        links = [Link(SpanContext(i + 1, i + 1, False), {"a": 1, "b": 2}) for i in range(4)]
        with tracer.start_as_current_span("over", links=links, attributes={f"a{i}": i for i in range(5)}) as span:
            for i in range(5):
                span.add_event(f"event {i}", {"x": 1, "y": 2, "z": 3})
            span.set_attribute("late", "dropped")
        spans = rec.spans()
        assert spans[0].dropped_attributes and spans[0].dropped_events and spans[0].dropped_links
        assert spans[0].events[0].dropped_attributes and spans[0].links[0].dropped_attributes
        assert same_as_stock(spans)
    finally:
        rec.shutdown()


def test_trace_state_flags_and_remote_parents_match_stock(recorder):
    """Trace state, parent ids and the is-remote flag bits (remote, local and no parent) encode as stock."""
    tracer = recorder.provider(Resource.create({})).get_tracer("parents")
    with tracer.start_as_current_span("remote child", context=remote_context()) as child:
        with tracer.start_as_current_span("local grandchild"):
            pass
        assert child.get_span_context().trace_state.get("vendor") == "v1"
    with tracer.start_as_current_span("empty trace state", context=remote_context(TraceState())):
        pass
    with tracer.start_as_current_span("root"):
        pass
    spans = recorder.spans()
    assert {s.name: (s.parent.is_remote if s.parent else None) for s in spans} == {
        "local grandchild": False, "remote child": True, "empty trace state": True, "root": None}
    assert same_as_stock(spans)
    # An invalid parent context still sends its (zero) span id, as stock does.
    assert same_as_stock([readable(parent=trace_api.INVALID_SPAN_CONTEXT)])


def test_many_resources_and_scopes_in_one_batch_match_stock(recorder):
    """Spans from several resources and scopes, interleaved, are grouped and ordered as stock groups them."""
    resources = [
        Resource.create({"service.name": "a", "deployment.environment": "test"}),
        Resource({"service.name": "b"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
        Resource({}),
        Resource({"service.name": "c", "host.arch": ["x86", "arm"], "pid": 1234}),
    ]
    tracers = []
    for resource in resources:
        provider = recorder.provider(resource)
        tracers += [
            provider.get_tracer("scope.one", "1.0.0"),
            provider.get_tracer("scope.two", schema_url="https://example.com/schema"),
            provider.get_tracer("scope.attrs", "3", attributes={"scope.attr": "x", "n": 2}),
            provider.get_tracer(""),
        ]
    rng = random.Random(7)
    for i in range(200):
        with rng.choice(tracers).start_as_current_span(f"span {i % 13}", attributes={"i": i}):
            pass
    spans = recorder.spans()
    assert len({id(s.resource) for s in spans}) == len(resources)
    assert same_as_stock(spans)


def test_equal_resources_and_scopes_that_are_different_objects_group_as_stock():
    """Equal but distinct Resource and scope objects (and a missing scope) fall into the same groups as stock."""
    spans = [
        readable("a", resource=Resource({"k": "v", "z": 1}), instrumentation_scope=InstrumentationScope("s", "1")),
        readable("b", resource=Resource({"z": 1, "k": "v"}), instrumentation_scope=InstrumentationScope("s", "1")),
        readable("c", resource=Resource({"k": "other"}), instrumentation_scope=None),
        readable("d", resource=Resource({"k": "v", "z": 1}), instrumentation_scope=None),
        readable("e", resource=None, instrumentation_scope=InstrumentationScope("s", "1", "https://s")),
        readable("f", resource=None, instrumentation_scope=InstrumentationScope("s", "1", "https://s")),
        readable("g", resource=Resource({"k": "v", "z": 1}), instrumentation_scope=InstrumentationScope("s", "1")),
    ]
    assert same_as_stock(spans)
    decoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert [len(rs.scope_spans) for rs in decoded.resource_spans] == [2, 1, 1]


def test_unfinished_and_odd_spans_match_stock():
    """Spans without an end or start time, with empty names, or with empty events encode as stock."""
    spans = [
        readable("no end", end_time=None),
        readable("no times", start_time=None, end_time=None),
        readable("", kind=SpanKind.CLIENT),
        readable("zero times", start_time=0, end_time=0),
        readable("empty event", events=[Event("", timestamp=0), Event("named", {}, timestamp=1)]),
        readable("trace state", context=SpanContext(1, 2, False, trace_state=TraceState([("a", "1")]))),
        readable("zero ids", context=SpanContext(0, 0, False)),
        readable("max ids", context=SpanContext(2**128 - 1, 2**64 - 1, True)),
    ]
    assert same_as_stock(spans)


def test_empty_batch_matches_stock():
    """No spans encode to an empty request, as stock."""
    assert SpanEncoder().encode([]) == b"" == stock_encode_spans([]).SerializeToString()


def test_module_function_matches_the_class(recorder):
    """encode_spans (a fresh encoder per call) gives the same bytes as a kept SpanEncoder."""
    tracer = recorder.provider(Resource.create({})).get_tracer("fn")
    with tracer.start_as_current_span("one", attributes={"a": "b"}):
        pass
    spans = recorder.spans()
    assert encode_spans(spans) == SpanEncoder().encode(spans)


# --------------------------------------------------------------------------------------
# Randomized: a seeded generator of a few hundred spans
# --------------------------------------------------------------------------------------
def _random_text(rng: random.Random) -> str:
    """Short text, sometimes empty, sometimes beyond ASCII."""
    alphabet = "abcxyz019 _-./:é✓日🌍"
    return "".join(rng.choice(alphabet) for _ in range(rng.choice((0, 1, 3, 8, 30))))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of any type the stock encoder handles (and, rarely, one it drops)."""
    choice = rng.randrange(14 if depth == 0 else 9)
    if choice == 0:
        return _random_text(rng)
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice((0, 1, -1, 127, 128, 2**31, -(2**31), 2**63 - 1, -(2**63), rng.randrange(-10**12, 10**12)))
    if choice == 3:
        return rng.choice((0.0, -0.0, 1.5, -2.25e-10, 1e300, math.inf, rng.uniform(-1e6, 1e6)))
    if choice == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    if choice == 5:
        return [_random_text(rng) for _ in range(rng.randrange(0, 4))]
    if choice == 6:
        return [rng.randrange(-1000, 1000) for _ in range(rng.randrange(0, 4))]
    if choice == 7:
        return tuple(rng.random() < 0.5 for _ in range(rng.randrange(0, 4)))
    if choice == 8:
        return [rng.uniform(-5, 5) for _ in range(rng.randrange(0, 4))]
    if choice == 9:
        return None
    if choice == 10:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))]
    if choice == 11:
        return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(0, 3))}
    if choice == 12:
        return rng.choice((2**64, -(2**63) - 1, object()))  # dropped by both
    return _random_text(rng)


def _random_attributes(rng: random.Random, keys: Sequence[str]) -> dict[str, Any]:
    """Up to eight attributes with keys from a small pool (so values repeat, as in real spans)."""
    return {rng.choice(keys): _random_value(rng) for _ in range(rng.randrange(0, 9))}


def _random_spans(seed: int, count: int) -> list[ReadableSpan]:
    """``count`` ReadableSpans with random everything, over a few resources and scopes."""
    rng = random.Random(seed)
    keys = [f"key.{i}" for i in range(12)] + ["", "ü.key"]
    resources = [Resource({"service.name": f"svc-{i}", "i": i}, schema_url=rng.choice(("", "https://s")))
                 for i in range(4)] + [Resource({})]
    scopes: list[InstrumentationScope | None] = [
        InstrumentationScope(f"scope-{i}", rng.choice((None, "", "1.2.3")), rng.choice((None, "", "https://sc")),
                             rng.choice((None, {"sa": i}))) for i in range(5)] + [None]
    kinds = list(SpanKind)
    spans = []
    for n in range(count):
        trace_id, span_id = rng.getrandbits(128), rng.getrandbits(64)
        state = TraceState([("v", _random_text(rng).replace(" ", "") or "x")]) if rng.random() < 0.2 else TraceState()
        parent = rng.choice((None, SpanContext(trace_id, rng.getrandbits(64), rng.random() < 0.5)))
        events = [Event(_random_text(rng), _random_attributes(rng, keys) or None, timestamp=rng.getrandbits(63))
                  for _ in range(rng.choice((0, 0, 1, 3)))]
        links = [Link(SpanContext(rng.getrandbits(128), rng.getrandbits(64), rng.random() < 0.5,
                                  trace_state=TraceState([("l", "1")])),
                      _random_attributes(rng, keys) or None) for _ in range(rng.choice((0, 0, 1, 2)))]
        code = rng.choice(list(StatusCode))
        status = Status(code, _random_text(rng) if code is StatusCode.ERROR else None)
        start = rng.getrandbits(62)
        spans.append(ReadableSpan(
            name=_random_text(rng) or f"span {n}",
            context=SpanContext(trace_id, span_id, False, trace_flags=TraceFlags(rng.choice((0, 1))),
                                trace_state=state),
            parent=parent, resource=rng.choice(resources), attributes=_random_attributes(rng, keys),
            events=events, links=links, kind=rng.choice(kinds), status=status,
            start_time=start, end_time=start + rng.getrandbits(30),
            instrumentation_scope=rng.choice(scopes),
        ))
    return spans


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_spans_match_stock(seed, caplog):
    """A few hundred randomly generated spans (every value type, events, links, statuses) encode as stock."""
    spans = _random_spans(seed, 300)
    encoder = SpanEncoder()
    with caplog.at_level(logging.CRITICAL):  # the rare unencodable values are logged by both encoders
        same_as_stock(spans, encoder)
        for size in (1, 7, 64):  # the same encoder, reused over batches of several sizes
            for start in range(0, len(spans), size):
                same_as_stock(spans[start:start + size], encoder)


def test_bytes_are_identical_to_stock(recorder, caplog):
    """Beyond message equality, our bytes are the very bytes the SDK serializes, on every generated batch."""
    tracer = recorder.provider(Resource.create({"service.name": "bytes"})).get_tracer("bytes", "1")
    with tracer.start_as_current_span("typed", attributes=EVERY_TYPE, context=remote_context()) as span:
        span.add_event("e", {"k": [1, 2]})
    with caplog.at_level(logging.CRITICAL):
        batches = [recorder.spans(), *(_random_spans(seed, 100) for seed in (11, 12))]
        assert all(same_as_stock(batch) for batch in batches)


# --------------------------------------------------------------------------------------
# What the encoder keeps between batches
# --------------------------------------------------------------------------------------
def test_kept_encodings_stay_correct_across_batches_and_bounds(caplog):
    """An encoder with tiny bounds, reused over many batches (tables emptied, keys stop being kept), matches stock."""
    encoder = SpanEncoder(max_kept=2, max_keys=3, max_values_per_key=4)
    with caplog.at_level(logging.CRITICAL):
        for seed in range(20):
            same_as_stock(_random_spans(100 + seed, 40), encoder)
    # A key with many different values, then a repeated one: still right.
    spans = [readable(attributes={"id": f"value-{i}", "n": i % 3, "flag": bool(i % 2), "one": 1}) for i in range(50)]
    same_as_stock(spans, encoder)
    same_as_stock(spans, encoder)
    # True == 1 and 0.0 == -0.0 as dict keys: never confused.
    mixed = [readable(attributes={"v": value}) for value in (1, True, 1.0, 0, False, 0.0, -0.0, "1")]
    same_as_stock(mixed + mixed, encoder)


def test_nexus_shaped_spans_match_stock():
    """The spans nexus-otel makes (HTTP server, workflow, hooks) encode as stock, batch after batch."""
    app = Nexus("bench-shape", environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})
    memory = InMemorySpanExporter()
    encoder = SpanEncoder()
    try:
        provider = app.telemetry.tracer_provider
        provider.add_span_processor(SimpleSpanProcessor(memory))
        app.register("greet", lambda inputs: {"hi": inputs.get("name")})
        app.on_workflow_started(lambda event: None)
        app.on_workflow_completed(lambda event: None)
        app.start()
        for i in range(30):
            app.execute_workflow("greet", {"name": f"n{i}"}, channel="api", session_id=f"s{i % 4}")
    finally:
        app.stop()
    spans = memory.get_finished_spans()
    assert len(spans) >= 90
    for start in range(0, len(spans), 16):
        assert same_as_stock(spans[start:start + 16], encoder)


# --------------------------------------------------------------------------------------
# The exporters: real OTLP receivers on 127.0.0.1
# --------------------------------------------------------------------------------------
def _sample_spans() -> tuple[ReadableSpan, ...]:
    """A realistic mixed batch: several resources and scopes, events, links, errors, remote parents."""
    rec = Recorder(SpanLimits(max_span_attributes=6))
    try:
        for r in range(2):
            provider = rec.provider(Resource.create({"service.name": f"svc-{r}"}))
            http, nexus = provider.get_tracer("http.server", "0.1"), provider.get_tracer("nexus_otel", "0.1.0")
            for i in range(5):
                with http.start_as_current_span("POST /workflows/greet", kind=SpanKind.SERVER,
                                                context=remote_context(), attributes={
                                                    "http.request.method": "POST", "url.path": "/workflows/greet",
                                                    "http.response.status_code": 200}):
                    with nexus.start_as_current_span("workflow greet", attributes={
                            "nexus.workflow.name": "greet", "nexus.workflow.id": f"id-{r}-{i}",
                            "nexus.channel": "http", "session.id": f"s{i}"}) as workflow:
                        workflow.add_event("checkpoint", {"step": i})
                        for event in ("workflow_started", "workflow_completed"):
                            with nexus.start_as_current_span(f"hook {event} plugin", attributes={
                                    "nexus.plugin.name": "plugin", "nexus.hook.event": event}):
                                pass
                        if i == 3:
                            workflow.set_status(Status(StatusCode.ERROR, "failed"))
                            for k in range(8):
                                workflow.set_attribute(f"extra.{k}", k)  # over the limit: dropped
        return rec.spans()
    finally:
        rec.shutdown()


def _received(receiver: HTTPReceiver | GRPCReceiver, count: int) -> list[ExportTraceServiceRequest]:
    """The trace requests ``receiver`` has once ``count`` arrived."""
    assert receiver.wait_for(lambda: len(receiver.trace_requests) >= count, timeout=10), receiver.errors
    assert not receiver.errors
    return list(receiver.trace_requests)


def _export_both(ours: Any, stock: Any, spans: Sequence[ReadableSpan],
                 receiver: HTTPReceiver | GRPCReceiver) -> list[ExportTraceServiceRequest]:
    """Export ``spans`` with our exporter, then the stock one, to ``receiver``: the two requests it got."""
    try:
        assert ours.export(spans) is SpanExportResult.SUCCESS
        assert stock.export(spans) is SpanExportResult.SUCCESS
        return _received(receiver, 2)
    finally:
        ours.shutdown()
        stock.shutdown()


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_http_exporter_delivers_what_stock_delivers(compression):
    """Over http/protobuf, our request decodes equal to the stock exporter's, with its headers and compression."""
    from opentelemetry.exporter.otlp.proto.http import Compression

    spans = _sample_spans()
    options: dict[str, Any] = {"headers": {"x-tenant": "t1"}, "timeout": 5}
    if compression:
        options["compression"] = Compression(compression)
    with HTTPReceiver() as receiver:
        endpoint = f"{receiver.endpoint}/v1/traces"
        ours = OTLPHttpSpanExporter(endpoint=endpoint, **options)
        ours_request, stock_request = _export_both(ours, StockHttpSpanExporter(endpoint=endpoint, **options),
                                                   spans, receiver)
        assert ours.export(spans) is SpanExportResult.FAILURE  # shut down, as the SDK's
    assert ours_request == stock_request == stock_encode_spans(spans)
    assert len(ours_request.resource_spans) == 2
    assert receiver.content_encodings == [compression or ""] * 2
    assert [h.get("x-tenant") for h in receiver.request_headers] == ["t1", "t1"]


def test_http_exporter_keeps_the_request_size_limit():
    """A batch over max_request_size fails without being sent, as with the SDK's exporter."""
    with HTTPReceiver() as receiver:
        exporter = OTLPHttpSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", max_request_size=100)
        try:
            assert exporter.export(_sample_spans()) is SpanExportResult.FAILURE
        finally:
            exporter.shutdown()
        assert receiver.trace_requests == []


class _AnsweringReceiver:
    """An OTLP/HTTP endpoint on 127.0.0.1 that answers the first ``failures`` requests with ``status`` (and
    ``Retry-After: 0``, so the SDK's client retries at once), then 200; it keeps every request body it got."""

    def __init__(self, status: int, failures: int) -> None:
        """Answer ``failures`` requests with ``status``; bind on ``__enter__``."""
        self.status, self.failures = status, failures
        self.bodies: list[bytes] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> _AnsweringReceiver:
        """Bind a free port and serve in a thread."""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                failing = len(receiver.bodies) <= receiver.failures
                body = b"" if failing else ExportTraceServiceResponse().SerializeToString()
                self.send_response(receiver.status if failing else 200)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving."""
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.parametrize(("status", "failures", "result", "attempts"), [
    (503, 2, SpanExportResult.SUCCESS, 3),  # retryable: sent again until it is taken
    (429, 99, SpanExportResult.FAILURE, 6),  # retryable, never taken: the SDK's six attempts
    (400, 99, SpanExportResult.FAILURE, 1),  # not retryable: one attempt
])
def test_http_exporter_retries_a_retryable_status_with_the_same_batch(status, failures, result, attempts):
    """The SDK's client sends the same bytes again after 503/429 (as often as it retries) and once after 400."""
    spans = _sample_spans()[:3]
    with _AnsweringReceiver(status, failures) as receiver:
        exporter = OTLPHttpSpanExporter(endpoint=receiver.endpoint, timeout=5)
        try:
            assert exporter.export(spans) is result
        finally:
            exporter.shutdown()
    assert len(receiver.bodies) == attempts
    assert len(set(receiver.bodies)) == 1, "every attempt sends the same bytes"
    assert ExportTraceServiceRequest.FromString(receiver.bodies[0]) == stock_encode_spans(spans)


def test_http_exporter_gives_up_on_a_receiver_that_is_not_there_within_its_timeout():
    """Nothing listening: the export gives FAILURE (no hang, no exception) once its timeout has passed."""
    from .ports import free_port

    exporter = OTLPHttpSpanExporter(endpoint=f"http://127.0.0.1:{free_port()}/v1/traces", timeout=1.5)
    try:
        assert exporter.export(_sample_spans()[:2]) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_grpc_exporter_delivers_what_stock_delivers(compression):
    """Over gRPC, our pre-encoded request decodes equal to the stock exporter's message, with its metadata."""
    import grpc

    spans = _sample_spans()
    options: dict[str, Any] = {"insecure": True, "headers": {"x-tenant": "t1"}, "timeout": 5}
    if compression:
        options["compression"] = grpc.Compression.Gzip
    with GRPCReceiver() as receiver:
        ours_request, stock_request = _export_both(OTLPGrpcSpanExporter(endpoint=receiver.endpoint, **options),
                                                   StockGrpcSpanExporter(endpoint=receiver.endpoint, **options),
                                                   spans, receiver)
    assert ours_request == stock_request == stock_encode_spans(spans)


class _TraceServiceOn:
    """An OTLP/gRPC trace service on 127.0.0.1:``port``, to stop and start again on the same port."""

    def __init__(self, port: int, received: list[ExportTraceServiceRequest]) -> None:
        """Serve on ``port``, appending each request to ``received``; bind on ``__enter__``."""
        self.port, self.received = port, received
        self._server: grpc.Server | None = None

    def __enter__(self) -> _TraceServiceOn:
        """Bind the port and start."""
        received = self.received

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                received.append(request)
                return ExportTraceServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._server)
        assert self._server.add_insecure_port(f"127.0.0.1:{self.port}") == self.port, f"port {self.port} is taken"
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop at once (open connections are closed) and wait, bounded, for the end."""
        assert self._server is not None
        self._server.stop(grace=None).wait(timeout=5)


def test_grpc_exporter_reconnects_with_its_byte_stub():
    """One exporter: its receiver stops (UNAVAILABLE: the SDK rebuilds the channel) and comes back on the same port;
    what is exported after that arrives, as our bytes."""
    from .ports import free_port

    spans = _sample_spans()
    port, received = free_port(), []
    exporter = OTLPGrpcSpanExporter(endpoint=f"http://127.0.0.1:{port}", insecure=True, timeout=3)
    try:
        with _TraceServiceOn(port, received):
            assert exporter.export(spans[:2]) is SpanExportResult.SUCCESS
        assert exporter.export(spans) is SpanExportResult.FAILURE  # nothing there: UNAVAILABLE, channel rebuilt
        with _TraceServiceOn(port, received):
            assert exporter.export(spans) is SpanExportResult.SUCCESS
            assert exporter.export(spans[:3]) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert received == [stock_encode_spans(s) for s in (spans[:2], spans, spans[:3])]


# --------------------------------------------------------------------------------------
# The setting
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_fast_is_the_default_and_stock_one_setting_away(protocol):
    """Both protocols use our encoder by default; NEXUS_OTEL_OTLP_ENCODER=stock gives the SDK's exporter as it is."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    fast_class, stock_class = ((OTLPGrpcSpanExporter, StockGrpcSpanExporter) if protocol == "grpc"
                               else (OTLPHttpSpanExporter, StockHttpSpanExporter))
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    built = [
        otlp_span_exporter(TelemetryConfig.from_env(env)),
        otlp_span_exporter(TelemetryConfig.from_env({**env, "NEXUS_OTEL_OTLP_ENCODER": "FAST "})),
        otlp_span_exporter(TelemetryConfig.from_env({**env, "NEXUS_OTEL_OTLP_ENCODER": "stock"})),
        otlp_span_exporter(TelemetryConfig.from_env(env), "stock"),
    ]
    try:
        assert [type(e) for e in built] == [fast_class, fast_class, stock_class, stock_class]
    finally:
        for exporter in built:
            exporter.shutdown()
    assert TelemetryConfig.from_env({}).otlp_encoder == "fast"
    assert TelemetryConfig.from_env({"NEXUS_OTEL_OTLP_ENCODER": "stock"}).otlp_encoder == "stock"


def test_a_bad_encoder_setting_is_a_configuration_error():
    """A bad NEXUS_OTEL_OTLP_ENCODER fails at start, naming the variable and the choices."""
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_OTLP_ENCODER") as info:
        TelemetryConfig.from_env({"NEXUS_OTEL_OTLP_ENCODER": "turbo"})
    assert info.value.setting == "NEXUS_OTEL_OTLP_ENCODER" and "fast, stock" in info.value.expected
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_OTLP_ENCODER"):
        otlp_span_exporter(TelemetryConfig(), "turbo")
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_OTLP_ENCODER"):
        Nexus("bad", environ={"NEXUS_OTEL_OTLP_ENCODER": "turbo", "OTEL_TRACES_EXPORTER": "none"})


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("encoder", ["fast", "stock"])
def test_an_app_delivers_the_same_spans_with_either_encoder(tmp_path, protocol, encoder):
    """A Nexus app configured by environ sends its workflow and hook spans to a real receiver with either encoder."""
    with receiver_for(protocol) as receiver:
        app = Nexus("encoders", environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none", "OTEL_BSP_SCHEDULE_DELAY": "50",
            "NEXUS_OTEL_OTLP_ENCODER": encoder, "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
        assert app.telemetry.config.otlp_encoder == encoder
        app.register("greet", lambda inputs: {"hi": inputs["name"]})
        app.on_workflow_completed(lambda event: None)
        app.start()
        try:
            app.execute_workflow("greet", {"name": "ada"}, channel="api")
        finally:
            app.stop()
        assert receiver.wait_for(lambda: {"workflow greet", "hook workflow_completed app"}
                                 <= {s.name for s in receiver.spans()}, timeout=10), receiver.errors
        spans = {s.name: s for s in receiver.spans()}
    assert spans["workflow greet"].attributes["nexus.workflow.name"] == "greet"
    assert spans["hook workflow_completed app"].parent_span_id == spans["workflow greet"].span_id


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_sdk_without_the_internals_we_use_falls_back_to_its_own_exporter(protocol, monkeypatch, caplog):
    """A future SDK release that moves what the fast exporters rely on gives a warning, not a failed start."""
    from nexus_otel.exporters import otlp_exporters

    def missing(kind: str, names: list[str]) -> None:
        raise otlp_exporters.UnsupportedExporterVersion(
            "NEXUS_OTEL_OTLP_ENCODER", "fast", f"stock: this opentelemetry-exporter-otlp-proto-{kind} has no x")

    monkeypatch.setattr(otlp_exporters, "_require", missing)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    with caplog.at_level(logging.WARNING, logger="nexus_otel.telemetry"):
        exporter = otlp_span_exporter(TelemetryConfig.from_env(env))
    stock = StockGrpcSpanExporter if protocol == "grpc" else StockHttpSpanExporter
    assert type(exporter) is stock
    assert "sending spans with the SDK's OTLP exporter as it is" in caplog.text
    exporter.shutdown()
