"""The fast OTLP log record encoder decodes to exactly what the SDK's encoder builds, and the exporters deliver it."""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as stock_encode_logs
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as StockGrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as StockHttpLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from nexus_otel import Nexus
from nexus_otel.errors import ConfigurationError
from nexus_otel.exporters.otlp_encoding import LogEncoder, encode_logs
from nexus_otel.exporters.otlp_exporters import OTLPGrpcLogExporter, OTLPHttpLogExporter
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.telemetry.sinks import otlp_log_exporter

try:  # tests/ may or may not become a package
    from .otlp_receivers import GRPCReceiver, HTTPReceiver, receiver_for
except ImportError:
    from otlp_receivers import GRPCReceiver, HTTPReceiver, receiver_for

pytestmark = pytest.mark.timeout(60)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def same_as_stock(batch: Sequence[Any], encoder: LogEncoder | None = None) -> bool:
    """Assert our bytes decode to the stock encoder's message; return whether the bytes are identical too."""
    ours = (encoder or LogEncoder()).encode(batch)
    stock = stock_encode_logs(batch)
    decoded = ExportLogsServiceRequest.FromString(ours)
    assert decoded == stock, _first_difference(decoded, stock)
    return ours == stock.SerializeToString()


def _first_difference(ours: ExportLogsServiceRequest, stock: ExportLogsServiceRequest) -> str:
    """A short description of where two requests differ, for assertion messages."""
    if len(ours.resource_logs) != len(stock.resource_logs):
        return f"{len(ours.resource_logs)} resource_logs, stock {len(stock.resource_logs)}"
    for i, (a, b) in enumerate(zip(ours.resource_logs, stock.resource_logs)):
        if a.resource != b.resource or a.schema_url != b.schema_url or len(a.scope_logs) != len(b.scope_logs):
            return f"resource_logs[{i}]: {a.resource} / stock {b.resource}"
        for j, (sa, sb) in enumerate(zip(a.scope_logs, b.scope_logs)):
            if sa.scope != sb.scope or sa.schema_url != sb.schema_url or len(sa.log_records) != len(sb.log_records):
                return f"resource_logs[{i}].scope_logs[{j}]: {sa.scope} / stock {sb.scope}"
            for k, (x, y) in enumerate(zip(sa.log_records, sb.log_records)):
                if x != y:
                    return f"log record [{i}][{j}][{k}]:\n{x}\nstock:\n{y}"
    return "differs"


class Recorder:
    """A LoggerProvider per resource, all emitting into one in-memory exporter, in emit order."""

    def __init__(self, limits: LogRecordLimits | None = None) -> None:
        """Start with no providers."""
        self.exporter = InMemoryLogRecordExporter()
        self.limits = limits
        self._providers: list[LoggerProvider] = []

    def provider(self, resource: Resource) -> LoggerProvider:
        """A new provider for ``resource`` sending to the shared exporter."""
        provider = LoggerProvider(resource=resource, log_record_limits=self.limits)
        provider.add_log_record_processor(SimpleLogRecordProcessor(self.exporter))
        self._providers.append(provider)
        return provider

    def records(self) -> tuple[ReadableLogRecord, ...]:
        """Every emitted record so far."""
        return self.exporter.get_finished_logs()

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


def span_context(trace_id: int, span_id: int, sampled: bool = True) -> Any:
    """A context whose current span has these ids (as a request's span would)."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return trace_api.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, False, trace_flags=flags)))


EVERY_TYPE: dict[str, Any] = {
    "str": "value",
    "empty.str": "",
    "unicode": "héllo wörld ✓ 日本語 🌍",
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.negative": -42,
    "int.min": -(2**63),
    "int.max": 2**63 - 1,
    "float": 3.25,
    "float.negative.zero": -0.0,
    "float.inf": math.inf,
    "float.nan": math.nan,
    "bytes": b"\x00\x01\xff",
    "empty.bytes": b"",
    "list.str": ["a", "", "ü"],
    "list.int": [0, -1, 2**63 - 1],
    "list.float": [0.5, -0.0],
    "list.bool": [True, False],
    "list.empty": [],
    "tuple": ("x", "y"),
    "map": {"a": 1, "b": [True, "x"], "nested": {"deep": {"deeper": b"\x02"}}, "empty": {}},
    "list.of.maps": [{"k": "v"}, {"n": 2.5}],
    "list.mixed": ["a", 1, None, [2, [3]]],
    "none.in.map": {"none": None},
}

BODIES: list[Any] = [
    "a message", "", "ünïcödé ✓ 日本語 🌍", "x" * 200, "y" * 5000,
    True, False, 0, 1, -1, 2**63 - 1, -(2**63), 3.5, -0.0, math.inf, math.nan,
    b"", b"\x00\xffbytes", None,
    [], ["a", 1, 2.5, True, None, b"b"], ("t", "u"), [[1, [2, [3]]], {"in": "list"}],
    {}, {"message": "hi", "n": 1, "list": [1, 2], "map": {"x": {"y": None}}, 7: "int key", "": "empty key"},
]


# --------------------------------------------------------------------------------------
# Equality with the stock encoder
# --------------------------------------------------------------------------------------
def test_every_body_type_matches_stock(recorder):
    """Bodies of every AnyValue type (text, bools, ints, floats, bytes, lists, maps, nested, None) encode as stock."""
    logger = recorder.provider(Resource.create({"service.name": "bodies"})).get_logger("bodies", "1.0")
    for body in BODIES:
        logger.emit(body=body, severity_number=SeverityNumber.INFO)
    records = recorder.records()
    assert len(records) == len(BODIES)
    assert same_as_stock(records)
    decoded = ExportLogsServiceRequest.FromString(LogEncoder().encode(records))
    bodies = decoded.resource_logs[0].scope_logs[0].log_records
    assert bodies[0].body.string_value == "a message" and bodies[BODIES.index(None)].HasField("body")


def test_every_attribute_type_matches_stock(recorder):
    """Attributes of every type a log record keeps (scalars, bytes, sequences, nested maps, unicode) encode as stock."""
    logger = recorder.provider(Resource.create({"service.name": "types"})).get_logger("types")
    logger.emit(body="all types", attributes=EVERY_TYPE)
    logger.emit(body="no attributes")
    logger.emit(body="empty attributes", attributes={})
    records = recorder.records()
    assert len(records[0].log_record.attributes) == len(EVERY_TYPE)
    assert same_as_stock(records)


def test_unencodable_attributes_are_dropped_as_stock_drops_them(caplog):
    """An attribute value stock cannot encode drops that attribute alone, with a log line naming its key."""
    attributes = {"ok": 1, "object": object(), "int.too.big": 2**64, "surrogate": "\ud800",
                  "map.bad": {"x": object()}, 7: "non-str key", "last": "kept"}
    record = ReadableLogRecord(LogRecord(body="b", attributes=attributes), resource=Resource({}))
    with caplog.at_level(logging.ERROR, logger="nexus_otel.exporters.otlp_encoding"):
        same_as_stock([record])
    decoded = ExportLogsServiceRequest.FromString(LogEncoder().encode([record]))
    keys = [kv.key for kv in decoded.resource_logs[0].scope_logs[0].log_records[0].attributes]
    assert keys == ["ok", "last"]
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "nexus_otel.exporters.otlp_encoding")
    for key in ("object", "int.too.big", "surrogate", "map.bad", "7"):
        assert f"Failed to encode key {key}:" in logged, key


@pytest.mark.parametrize("body", [object(), 2**64, {"x": object()}, "\ud800"], ids=["object", "int", "map", "utf8"])
def test_a_body_stock_cannot_encode_fails_the_batch_as_stock(body):
    """A body the SDK's encoder cannot encode raises, so the export fails as the SDK's does."""
    record = ReadableLogRecord(LogRecord(body=body), resource=Resource({}))
    try:
        stock_encode_logs([record]).SerializeToString()
    except Exception:  # the SDK raises a bare Exception for an unknown type
        pass
    else:
        pytest.fail("the SDK's encoder took the body")
    with pytest.raises((TypeError, ValueError)):
        LogEncoder().encode([record])


def test_trace_context_matches_stock(recorder):
    """Records in a sampled span, an unsampled one and outside any span carry the ids and flags stock sends."""
    logger = recorder.provider(Resource.create({})).get_logger("trace")
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    logger.emit(body="no span")
    logger.emit(body="sampled", context=span_context(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331))
    logger.emit(body="unsampled", context=span_context(2**128 - 1, 2**64 - 1, sampled=False))
    with tracer_provider.get_tracer("t").start_as_current_span("dropped by the sampler"):
        logger.emit(body="inside an unsampled span")
    records = recorder.records()
    assert same_as_stock(records)
    decoded = ExportLogsServiceRequest.FromString(LogEncoder().encode(records))
    by_body = {r.body.string_value: r for r in decoded.resource_logs[0].scope_logs[0].log_records}
    assert by_body["no span"].trace_id == b"" and by_body["no span"].span_id == b"" and by_body["no span"].flags == 0
    assert by_body["sampled"].trace_id.hex() == "0af7651916cd43dd8448eb211c80319c" and by_body["sampled"].flags == 1
    assert by_body["unsampled"].span_id == b"\xff" * 8 and by_body["unsampled"].flags == 0
    assert len(by_body["inside an unsampled span"].trace_id) == 16


def test_missing_trace_and_span_ids_are_left_out():
    """A record whose trace and span ids are None (the SDK's encoder fails on them) is sent without ids."""
    record = LogRecord(body="no ids")
    record.trace_id = record.span_id = None  # type: ignore[assignment]
    record.trace_flags = None  # type: ignore[assignment]
    decoded = ExportLogsServiceRequest.FromString(
        LogEncoder().encode([ReadableLogRecord(record, resource=Resource({}))]))
    sent = decoded.resource_logs[0].scope_logs[0].log_records[0]
    assert (sent.trace_id, sent.span_id, sent.flags, sent.body.string_value) == (b"", b"", 0, "no ids")


class OtherSeverity(enum.Enum):
    """A severity enum not the SDK's: stock sends its ``value``."""

    LOUD = 30


def test_every_severity_and_event_name_matches_stock(recorder):
    """Every SeverityNumber with and without text, an int severity (stock leaves it out), another enum's value and
    event names match stock."""
    logger = recorder.provider(Resource.create({})).get_logger("severity")
    for number in SeverityNumber:
        logger.emit(body=number.name, severity_number=number, severity_text=number.name.lower())
        logger.emit(body="no text", severity_number=number)
    logger.emit(body="text only", severity_text="WARN")
    logger.emit(body="empty text", severity_text="", event_name="")
    logger.emit(body="int severity", severity_number=9)  # type: ignore[arg-type]
    logger.emit(body="other enum", severity_number=OtherSeverity.LOUD)  # type: ignore[arg-type]
    for name in ("nexus.workflow.started", "nexus.workflow.failed", "ëvent ✓", "nexus.workflow.started"):
        logger.emit(body=None, event_name=name, severity_number=SeverityNumber.ERROR)
    records = recorder.records()
    assert same_as_stock(records)
    sent = ExportLogsServiceRequest.FromString(LogEncoder().encode(records)).resource_logs[0].scope_logs[0]
    int_severity = next(r for r in sent.log_records if r.body.string_value == "int severity")
    assert int_severity.severity_number == 0
    assert next(r for r in sent.log_records if r.body.string_value == "other enum").severity_number == 30
    assert [r.event_name for r in sent.log_records if r.event_name][-1] == "nexus.workflow.started"


def test_timestamps_match_stock(recorder):
    """Timestamps given, missing, zero and at the top of the range, and observed timestamps, encode as stock."""
    logger = recorder.provider(Resource.create({})).get_logger("times")
    logger.emit(body="given", timestamp=1_700_000_000_123_456_789, observed_timestamp=1_700_000_000_200_000_000)
    logger.emit(body="no timestamp")
    logger.emit(body="zero", timestamp=0, observed_timestamp=0)
    logger.emit(body="max", timestamp=2**64 - 1, observed_timestamp=2**63)
    records = recorder.records()
    assert records[1].log_record.timestamp is None
    assert same_as_stock(records)


def test_dropped_attributes_match_stock():
    """Records over the attribute count limit carry the same dropped_attributes_count as stock."""
    rec = Recorder(LogRecordLimits(max_log_record_attributes=2, max_log_record_attribute_length=4))
    try:
        logger = rec.provider(Resource.create({})).get_logger("limits")
        with pytest.warns(UserWarning):
            logger.emit(body="over", attributes={f"a{i}": f"value {i}" for i in range(6)})
        logger.emit(body="under", attributes={"long": "truncated"})
        records = rec.records()
        assert records[0].dropped_attributes == 4 and records[1].log_record.attributes["long"] == "trun"
        assert same_as_stock(records)
    finally:
        rec.shutdown()


def test_many_resources_and_scopes_in_one_batch_match_stock(recorder):
    """Records from several resources and scopes (versions, schema URLs, attributes), interleaved, group as stock."""
    resources = [
        Resource.create({"service.name": "a", "deployment.environment": "test"}),
        Resource({"service.name": "b"}, schema_url="https://opentelemetry.io/schemas/1.21.0"),
        Resource({}),
        Resource({"service.name": "c", "host.arch": ["x86", "arm"], "pid": 1234}),
    ]
    loggers = []
    for resource in resources:
        provider = recorder.provider(resource)
        loggers += [
            provider.get_logger("scope.one", "1.0.0"),
            provider.get_logger("scope.two", schema_url="https://example.com/schema"),
            provider.get_logger("scope.attrs", "3", attributes={"scope.attr": "x", "n": 2}),
            provider.get_logger(""),
        ]
    rng = random.Random(7)
    for i in range(200):
        rng.choice(loggers).emit(body=f"record {i % 13}", attributes={"i": i}, event_name=rng.choice((None, "e")))
    records = recorder.records()
    assert len({id(r.resource) for r in records}) == len(resources)
    assert same_as_stock(records)


def test_read_write_records_and_equal_but_distinct_groups_match_stock():
    """ReadWriteLogRecords (as processors hand them on), equal but distinct resources and scopes, and a missing
    scope fall into the same groups as stock."""
    def record(body: str, resource: Resource, scope: InstrumentationScope | None) -> ReadWriteLogRecord:
        return ReadWriteLogRecord(LogRecord(body=body, attributes={"b": body}), resource=resource,
                                  instrumentation_scope=scope)

    batch = [
        record("a", Resource({"k": "v", "z": 1}), InstrumentationScope("s", "1")),
        record("b", Resource({"z": 1, "k": "v"}), InstrumentationScope("s", "1")),
        record("c", Resource({"k": "other"}), None),
        record("d", Resource({"k": "v", "z": 1}), None),
        record("e", Resource({"k": "v", "z": 1}), InstrumentationScope("s", "1", "https://s")),
        record("f", Resource({"k": "v", "z": 1}), InstrumentationScope("s", "1")),
    ]
    assert same_as_stock(batch)
    decoded = ExportLogsServiceRequest.FromString(LogEncoder().encode(batch))
    assert [len(rl.scope_logs) for rl in decoded.resource_logs] == [3, 1]


def test_empty_batch_matches_stock():
    """No records encode to an empty request, as stock."""
    assert LogEncoder().encode([]) == b"" == stock_encode_logs([]).SerializeToString()


def test_module_function_matches_the_class(recorder):
    """encode_logs (a fresh encoder per call) gives the same bytes as a kept LogEncoder."""
    recorder.provider(Resource.create({})).get_logger("fn").emit(body="one", attributes={"a": "b"})
    records = recorder.records()
    assert encode_logs(records) == LogEncoder().encode(records)


# --------------------------------------------------------------------------------------
# Randomized: a seeded generator of a few hundred records
# --------------------------------------------------------------------------------------
def _random_text(rng: random.Random) -> str:
    """Short text, sometimes empty, sometimes beyond ASCII."""
    return "".join(rng.choice("abcxyz019 _-./:é✓日🌍") for _ in range(rng.choice((0, 1, 3, 8, 30, 140))))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    """A value of any AnyValue type, nested up to three levels."""
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return _random_text(rng)
    if choice == 1:
        return rng.random() < 0.5
    if choice == 2:
        return rng.choice((0, 1, -1, 127, 128, 2**31, 2**63 - 1, -(2**63), rng.randrange(-10**12, 10**12)))
    if choice == 3:
        return rng.choice((0.0, -0.0, 1.5, -2.25e-10, 1e300, math.inf, rng.uniform(-1e6, 1e6)))
    if choice == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 12)))
    if choice == 5:
        return None
    if choice == 6:
        return [_random_text(rng) for _ in range(rng.randrange(0, 4))]
    if choice == 7:
        return tuple(rng.randrange(-1000, 1000) for _ in range(rng.randrange(0, 4)))
    if choice in (8, 9):
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def _random_records(seed: int, count: int) -> list[ReadableLogRecord]:
    """``count`` records with random everything, over a few resources and scopes."""
    rng = random.Random(seed)
    keys = [f"key.{i}" for i in range(12)] + ["ü.key", "exception.type"]
    resources = [Resource({"service.name": f"svc-{i}", "i": i}, schema_url=rng.choice(("", "https://s")))
                 for i in range(4)] + [Resource({})]
    scopes: list[InstrumentationScope | None] = [
        InstrumentationScope(f"scope-{i}", rng.choice((None, "", "1.2.3")), rng.choice((None, "", "https://sc")),
                             rng.choice((None, {"sa": i}))) for i in range(5)] + [None]
    records = []
    for _ in range(count):
        has_trace = rng.random() < 0.7
        record = LogRecord(
            timestamp=rng.choice((None, rng.getrandbits(63))),
            observed_timestamp=rng.getrandbits(63),
            context=span_context(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, rng.random() < 0.5)
            if has_trace else None,
            severity_number=rng.choice((None, *SeverityNumber)),
            severity_text=rng.choice((None, "", "INFO", "ERROR", _random_text(rng))),
            body=_random_value(rng),
            attributes={rng.choice(keys): _random_value(rng) for _ in range(rng.randrange(0, 8))},
            event_name=rng.choice((None, "", "nexus.workflow.completed", _random_text(rng))),
        )
        records.append(ReadableLogRecord(record, resource=rng.choice(resources),
                                         instrumentation_scope=rng.choice(scopes)))
    return records


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_records_match_stock(seed):
    """A few hundred randomly generated records, whole and in batches of several sizes on one encoder, match stock."""
    records = _random_records(seed, 300)
    encoder = LogEncoder()
    same_as_stock(records, encoder)
    for size in (1, 7, 64):
        for start in range(0, len(records), size):
            same_as_stock(records[start:start + size], encoder)


def test_bytes_are_identical_to_stock(recorder):
    """Beyond message equality, our bytes are the very bytes the SDK serializes, on every generated batch."""
    logger = recorder.provider(Resource.create({"service.name": "bytes"})).get_logger("bytes", "1")
    for body in BODIES:
        logger.emit(body=body, attributes=EVERY_TYPE, event_name="e", severity_number=SeverityNumber.WARN,
                    severity_text="WARN", context=span_context(5, 6))
    batches = [recorder.records(), *(_random_records(seed, 100) for seed in (11, 12))]
    assert all(same_as_stock(batch) for batch in batches)


def test_kept_encodings_stay_correct_across_batches_and_bounds():
    """An encoder with tiny bounds, reused over many batches (tables emptied, keys stop being kept), matches stock."""
    encoder = LogEncoder(max_kept=2, max_keys=3, max_values_per_key=4)
    for seed in range(20):
        same_as_stock(_random_records(100 + seed, 40), encoder)
    records = [ReadableLogRecord(LogRecord(body=f"b{i % 3}", severity_text=f"t{i % 5}", event_name=f"e{i % 7}",
                                           attributes={"id": f"v-{i}", "n": i % 3, "v": (1, True, 1.0)[i % 3]}),
                                 resource=Resource({})) for i in range(50)]
    same_as_stock(records, encoder)
    same_as_stock(records, encoder)


def test_request_log_records_of_an_app_match_stock(tmp_path):
    """The log records a Nexus app exports (request log records, captured logging) encode as stock."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": "shape"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    app = Nexus("shape", logger_provider=provider, environ={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "NEXUS_OTEL_DATA_DIR": str(tmp_path)})

    def greet(inputs: dict[str, Any]) -> dict[str, Any]:
        logging.getLogger("shape.greet").warning("greeting %s", inputs["name"])
        if inputs["name"] == "fail":
            raise ValueError("no ✗")
        return {"hi": inputs["name"]}

    try:
        from nexus_otel.plugins import RequestLoggerPlugin

        app.register("greet", greet)
        app.add_plugin(RequestLoggerPlugin())
        app.start()
        for name in ("ada", "fail", "bob", "password=hunter2"):
            try:
                app.execute_workflow("greet", {"name": name, "token": "secret"}, channel="api", session_id="s1")
            except Exception:
                pass
    finally:
        app.stop()
        provider.shutdown()
    records = memory.get_finished_logs()
    assert any(r.log_record.event_name == "nexus.workflow.failed" for r in records), [
        r.log_record.event_name for r in records]
    encoder = LogEncoder()
    for start in range(0, len(records), 3):
        assert same_as_stock(records[start:start + 3], encoder)


# --------------------------------------------------------------------------------------
# The exporters: real OTLP receivers on 127.0.0.1
# --------------------------------------------------------------------------------------
def _sample_records() -> tuple[ReadableLogRecord, ...]:
    """A realistic mixed batch: two resources, request-log and logging scopes, ids, failures, maps."""
    rec = Recorder(LogRecordLimits(max_log_record_attributes=6))
    try:
        for r in range(2):
            provider = rec.provider(Resource.create({"service.name": f"svc-{r}"}))
            requests, user = provider.get_logger("nexus_otel.requests", "0.1.0"), provider.get_logger("app.module")
            for i in range(5):
                context = span_context(0x1000 + i, 0x2000 + i, sampled=i != 2)
                attributes: dict[str, Any] = {"nexus.workflow.name": "greet", "nexus.workflow.id": f"id-{r}-{i}",
                                              "nexus.channel": "http", "session.id": f"s{i}"}
                requests.emit(body="workflow started", event_name="nexus.workflow.started", context=context,
                              severity_number=SeverityNumber.INFO, severity_text="INFO", attributes=attributes)
                user.emit(body={"message": f"step {i}", "values": [1, 2.5]}, context=context,
                          severity_number=SeverityNumber.WARN, severity_text="WARNING", attributes={"code.lineno": i})
                failed = i == 3
                end = {**attributes, "nexus.workflow.status": "failed" if failed else "completed",
                       "nexus.workflow.duration": 0.0125 * i}
                if failed:
                    end.update({"exception.type": "ValueError", "exception.message": "nope ✗"})
                with pytest.warns(UserWarning) if failed else _nothing():
                    requests.emit(body=f"workflow {'failed' if failed else 'completed'}", context=context,
                                  event_name=f"nexus.workflow.{'failed' if failed else 'completed'}",
                                  severity_number=SeverityNumber.ERROR if failed else SeverityNumber.INFO,
                                  attributes=end)
        return rec.records()
    finally:
        rec.shutdown()


class _nothing:
    """A context manager that does nothing (the records that stay under the limit warn about nothing)."""

    def __enter__(self) -> None:
        """Nothing."""

    def __exit__(self, *exc: object) -> None:
        """Nothing."""


def _received(receiver: HTTPReceiver | GRPCReceiver, count: int) -> list[ExportLogsServiceRequest]:
    """The logs requests ``receiver`` has once ``count`` arrived."""
    assert receiver.wait_for(lambda: len(receiver.log_requests) >= count, timeout=10), receiver.errors
    assert not receiver.errors
    return list(receiver.log_requests)


def _export_both(ours: Any, stock: Any, records: Sequence[ReadableLogRecord],
                 receiver: HTTPReceiver | GRPCReceiver) -> list[ExportLogsServiceRequest]:
    """Export ``records`` with our exporter, then the stock one, to ``receiver``: the two requests it got."""
    try:
        assert ours.export(records) is LogRecordExportResult.SUCCESS
        assert stock.export(records) is LogRecordExportResult.SUCCESS
        return _received(receiver, 2)
    finally:
        ours.shutdown()
        stock.shutdown()


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_http_exporter_delivers_what_stock_delivers(compression):
    """Over http/protobuf, our request decodes equal to the stock exporter's, with its headers and compression."""
    from opentelemetry.exporter.otlp.proto.http import Compression

    records = _sample_records()
    options: dict[str, Any] = {"headers": {"x-tenant": "t1"}, "timeout": 5}
    if compression:
        options["compression"] = Compression(compression)
    with HTTPReceiver() as receiver:
        endpoint = f"{receiver.endpoint}/v1/logs"
        ours = OTLPHttpLogExporter(endpoint=endpoint, **options)
        ours_request, stock_request = _export_both(ours, StockHttpLogExporter(endpoint=endpoint, **options),
                                                   records, receiver)
        assert ours.export(records) is LogRecordExportResult.FAILURE  # shut down, as the SDK's
        received = receiver.logs()
    assert ours_request == stock_request == stock_encode_logs(records)
    assert len(ours_request.resource_logs) == 2
    assert receiver.content_encodings == [compression or ""] * 2
    assert [h.get("x-tenant") for h in receiver.request_headers] == ["t1", "t1"]
    ours_logs = received[:len(records)]
    assert ours_logs == received[len(records):]
    failed = next(log for log in ours_logs if log.event_name == "nexus.workflow.failed")
    assert failed.attributes["exception.type"] == "ValueError" and failed.trace_id == f"{0x1003:032x}"
    assert {log.scope for log in ours_logs} == {"nexus_otel.requests", "app.module"}


def test_http_exporter_keeps_the_request_size_limit_and_fails_a_bad_body(caplog):
    """A batch over max_request_size, or one whose body cannot be encoded, fails without being sent, as the SDK's."""
    bad = ReadableLogRecord(LogRecord(body=object()), resource=Resource({}))
    with HTTPReceiver() as receiver:
        exporter = OTLPHttpLogExporter(endpoint=f"{receiver.endpoint}/v1/logs", max_request_size=100)
        try:
            with caplog.at_level(logging.WARNING, logger="nexus_otel.exporters.otlp_exporters"):
                assert exporter.export(_sample_records()) is LogRecordExportResult.FAILURE
                assert exporter.export([bad]) is LogRecordExportResult.FAILURE
        finally:
            exporter.shutdown()
        assert receiver.log_requests == []
    assert "Dropping logs batch: serialized size" in caplog.text
    assert "Failed to encode logs batch" in caplog.text


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_grpc_exporter_delivers_what_stock_delivers(compression):
    """Over gRPC, our pre-encoded request decodes equal to the stock exporter's message."""
    import grpc

    records = _sample_records()
    options: dict[str, Any] = {"insecure": True, "headers": {"x-tenant": "t1"}, "timeout": 5}
    if compression:
        options["compression"] = grpc.Compression.Gzip
    with GRPCReceiver() as receiver:
        ours_request, stock_request = _export_both(OTLPGrpcLogExporter(endpoint=receiver.endpoint, **options),
                                                   StockGrpcLogExporter(endpoint=receiver.endpoint, **options),
                                                   records, receiver)
    assert ours_request == stock_request == stock_encode_logs(records)


def test_grpc_exporter_reconnects_with_its_byte_stub():
    """After the SDK's reconnect on UNAVAILABLE, the exporter still sends our bytes and a later export arrives."""
    from .ports import free_port

    records = _sample_records()
    exporter = OTLPGrpcLogExporter(endpoint=f"http://127.0.0.1:{free_port()}", insecure=True, timeout=1)
    try:
        assert exporter.export(records) is LogRecordExportResult.FAILURE  # nothing there: channel rebuilt
    finally:
        exporter.shutdown()
    with GRPCReceiver() as receiver:
        exporter = OTLPGrpcLogExporter(endpoint=receiver.endpoint, insecure=True, timeout=5)
        try:
            assert exporter.export(records) is LogRecordExportResult.SUCCESS
            assert exporter.export(records[:3]) is LogRecordExportResult.SUCCESS
            first, second = _received(receiver, 2)
        finally:
            exporter.shutdown()
    assert first == stock_encode_logs(records) and second == stock_encode_logs(records[:3])


# --------------------------------------------------------------------------------------
# The setting
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_fast_is_the_default_and_stock_one_setting_away(protocol):
    """Both protocols use our log encoder by default; NEXUS_OTEL_OTLP_ENCODER=stock gives the SDK's exporter."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    fast_class, stock_class = ((OTLPGrpcLogExporter, StockGrpcLogExporter) if protocol == "grpc"
                               else (OTLPHttpLogExporter, StockHttpLogExporter))
    built = [
        otlp_log_exporter(TelemetryConfig.from_env(env)),
        otlp_log_exporter(TelemetryConfig.from_env({**env, "NEXUS_OTEL_OTLP_ENCODER": "FAST "})),
        otlp_log_exporter(TelemetryConfig.from_env({**env, "NEXUS_OTEL_OTLP_ENCODER": "stock"})),
        otlp_log_exporter(TelemetryConfig.from_env(env), "stock"),
    ]
    try:
        assert [type(e) for e in built] == [fast_class, fast_class, stock_class, stock_class]
    finally:
        for exporter in built:
            exporter.shutdown()
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_OTLP_ENCODER"):
        otlp_log_exporter(TelemetryConfig.from_env(env), "turbo")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_sdk_without_the_internals_we_use_falls_back_to_its_own_log_exporter(protocol, monkeypatch, caplog):
    """A future SDK release that moves what the fast log exporters rely on gives a warning, not a failed start."""
    from nexus_otel.exporters import otlp_exporters

    def missing(kind: str, names: list[str]) -> None:
        raise otlp_exporters.UnsupportedExporterVersion(
            "NEXUS_OTEL_OTLP_ENCODER", "fast", f"stock: this opentelemetry-exporter-otlp-proto-{kind} has no x")

    monkeypatch.setattr(otlp_exporters, "_require", missing)
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    with caplog.at_level(logging.WARNING, logger="nexus_otel.telemetry"):
        exporter = otlp_log_exporter(TelemetryConfig.from_env(env))
    assert type(exporter) is (StockGrpcLogExporter if protocol == "grpc" else StockHttpLogExporter)
    assert "sending log records with the SDK's OTLP exporter as it is" in caplog.text
    exporter.shutdown()


@pytest.mark.parametrize("encoder", ["fast", "stock"])
def test_an_app_delivers_its_log_records_with_either_encoder(tmp_path, encoder):
    """A Nexus app configured by environ sends its request log records over http/protobuf with either encoder."""
    with receiver_for("http/protobuf") as receiver:
        app = Nexus("log-encoders", environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_BLRP_SCHEDULE_DELAY": "50", "NEXUS_OTEL_OTLP_ENCODER": encoder,
            "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
        from nexus_otel.plugins import RequestLoggerPlugin

        app.register("greet", lambda inputs: {"hi": inputs["name"]})
        app.add_plugin(RequestLoggerPlugin())
        app.start()
        try:
            app.execute_workflow("greet", {"name": "ada"}, channel="api")
        finally:
            app.stop()
        assert receiver.wait_for(lambda: {"nexus.workflow.started", "nexus.workflow.completed"}
                                 <= {log.event_name for log in receiver.logs()}, timeout=10), receiver.errors
        logs = {log.event_name: log for log in receiver.logs()}
    completed = logs["nexus.workflow.completed"]
    assert completed.attributes["nexus.workflow.name"] == "greet" and len(completed.trace_id) == 32
    assert completed.trace_id == logs["nexus.workflow.started"].trace_id
