"""An app on a tracer provider it built makes its spans with the lean tracer: the same spans, bytes and processors
as the SDK's tracer gives an app on a provider it was handed."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.serving import BackgroundServer
from nexus_otel.telemetry.lean_tracer import LeanSpan, LeanTracer
from nexus_otel.telemetry.telemetry import Telemetry

ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}


class Hooks(NexusPlugin):
    name = "shape"  # type: ignore[assignment]
    version = "1.0.0"  # type: ignore[assignment]

    def setup(self, nexus_app: Nexus) -> None:
        nexus_app.on_workflow_started(lambda event: None)
        nexus_app.on_workflow_completed(lambda event: None)
        nexus_app.on_workflow_failed(lambda event: None)


def _work(inputs: dict) -> dict:
    """Sets what user code sets on the current span: valid, cleaned, invalid and too many values."""
    span = trace.get_current_span()
    span.set_attribute("user.first", 1)
    span.set_attribute("user.second", 2)
    span.set_attribute("user.first", 3)  # set again: it moves to the end, as in the SDK's bounded attributes
    span.set_attribute("user.text", "x" * 40)
    span.set_attribute("user.numbers", [1, 2, 3])
    span.set_attribute("user.mapping", {"a": [1, "two"]})  # an AnyValue the SDK keeps as it is
    span.set_attribute("user.object", object())  # not a valid value: None, with the SDK's warning
    span.set_attributes({f"user.n{i}": i for i in range(inputs.get("many", 0))})
    for i in range(inputs.get("events", 0)):
        span.add_event(f"step {i}", {"i": i, "list": ("a", "b")})
    if inputs.get("fail"):
        raise ValueError("bad input")
    return {"ok": True}


def _app(name: str, provider: TracerProvider | None, env: dict[str, str] | None = None,
         ) -> tuple[Nexus, InMemorySpanExporter]:
    telemetry = Telemetry(name, tracer_provider=provider, environ={**ENV, **(env or {})})
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    app = Nexus(name, telemetry=telemetry)
    app.add_plugin(Hooks())
    app.register("work", _work)
    return app, exported


def _normalized(spans: tuple[ReadableSpan, ...]) -> list[bytes]:
    """Each span's OTLP bytes as the SDK's encoder writes them, with ids, times and the port made equal."""
    request = encode_spans(spans)
    out = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.trace_id = span.span_id = span.parent_span_id = b""
                span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    event.time_unix_nano = 0
                for kv in span.attributes:
                    if kv.key in ("server.port", "nexus.workflow.id"):
                        kv.value.Clear()
                out.append(scope_spans.scope.SerializeToString() + span.SerializeToString())
    return sorted(out)


def _requests(url: str) -> list[int]:
    bodies = [{}, {"fail": True}, {"many": 140}, {"events": 140}, {"events": 3, "fail": True}]
    with httpx.Client(timeout=30) as client:
        return [client.post(f"{url}/workflows/work", json=body).status_code for body in bodies]


@pytest.mark.parametrize("limits", [{}, {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "9", "OTEL_SPAN_EVENT_COUNT_LIMIT": "2",
                                         "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "12",
                                         "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1"}])
def test_served_requests_give_the_bytes_the_sdks_tracer_gives(monkeypatch, caplog, limits: dict[str, str]) -> None:
    """Server, workflow and hook spans, user attributes (cleaned, dropped, over the limits), events and exception
    events: encoded as OTLP, the lean spans are the SDK's spans byte for byte, ids and times aside."""
    for name, value in limits.items():
        monkeypatch.setenv(name, value)  # the SDK's provider reads the process environment
    lean_app, lean_spans = _app("shape", None, limits)  # the app's, its configuration's
    assert isinstance(lean_app.telemetry.tracer, LeanTracer)
    sdk_app, sdk_spans = _app("shape", TracerProvider(resource=lean_app.telemetry.resource))
    assert not isinstance(sdk_app.telemetry.tracer, LeanTracer)
    with caplog.at_level(logging.WARNING, logger="opentelemetry.attributes"):
        with BackgroundServer(lean_app) as url:
            lean_codes = _requests(url)
        lean_warnings = sorted(r.getMessage() for r in caplog.records)
        caplog.clear()
        with BackgroundServer(sdk_app) as url:
            sdk_codes = _requests(url)
        sdk_warnings = sorted(r.getMessage() for r in caplog.records)
    assert lean_codes == sdk_codes == [200, 500, 200, 200, 500]
    made = lean_spans.get_finished_spans()
    assert len(made) == len(sdk_spans.get_finished_spans()) == 5 * 4 + 4  # and start, setup, teardown, stop
    assert _normalized(made) == _normalized(sdk_spans.get_finished_spans())
    assert lean_warnings == sdk_warnings and lean_warnings, "invalid values are dropped with the SDK's warnings"
    workflow = [s for s in made if s.name == "workflow work"]
    assert workflow[0].attributes.get("user.object") is None and workflow[0].attributes["user.numbers"] == (1, 2, 3)
    assert workflow[0].attributes["user.mapping"] == {"a": (1, "two")}
    failed = [e for s in workflow for e in s.events if e.name == "exception"]
    assert failed
    if not limits:
        assert all("Traceback" in e.attributes["exception.stacktrace"] for e in failed)
    else:
        assert max(s.dropped_attributes for s in workflow) > 0 and max(s.dropped_events for s in workflow) > 0
    lean_app.stop()
    sdk_app.stop()


READABLE = ("name", "context", "parent", "kind", "attributes", "events", "links", "status", "start_time",
            "end_time", "resource", "instrumentation_scope", "dropped_attributes", "dropped_events", "dropped_links")
"""What a processor may read of a span (the SDK's ReadableSpan properties)."""


class Seen(SpanProcessor):
    """Records what a processor added to the provider itself is given, reading every ReadableSpan property."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Any, bool]] = []
        self.ending: list[str] = []
        self.ended: list[ReadableSpan] = []
        self.read: list[dict[str, Any]] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append((span.name, span.parent, span.is_recording()))
        self.read.append({name: getattr(span, name) for name in READABLE})
        assert span.end_time is None and span.instrumentation_scope.name == "nexus_otel"
        span.set_attribute("added.on_start", "yes")
        json.loads(span.to_json())

    def _on_ending(self, span: Any) -> None:
        self.ending.append(span.name)
        self.read.append({name: getattr(span, name) for name in READABLE})
        assert span.end_time is not None and not span.is_recording()

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def test_a_processor_added_to_the_provider_itself_sees_every_lean_span_start_and_end() -> None:
    """provider.add_span_processor: on_start with the live span (parent, recording, writable), the SDK's
    _on_ending, and on_end, for the server, workflow and hook spans alike."""
    app, exported = _app("direct", None)
    seen = Seen()
    app.telemetry.tracer_provider.add_span_processor(seen)  # type: ignore[attr-defined]
    with BackgroundServer(app) as url:
        assert httpx.post(f"{url}/workflows/work", json={}, timeout=30).status_code == 200
    app.stop()
    names = ["POST", "workflow work", "hook workflow_started shape", "hook workflow_completed shape"]
    lifecycle = ["nexus start", "plugin teardown shape", "nexus stop"]  # set up before ``seen`` was added
    assert sorted(n for n, _, _ in seen.started) == sorted(names + lifecycle)
    assert all(recording for _, _, recording in seen.started)
    assert sorted(seen.ending) == sorted(s.name for s in seen.ended)
    assert [s.attributes["added.on_start"] for s in seen.ended] == ["yes"] * 7
    request = [s for s in seen.ended if s.name not in lifecycle]
    server = next(s for s in request if s.name.startswith("POST"))
    assert len(request) == 4 and server.parent is None
    assert all(s.parent is not None and s.context.trace_id == server.context.trace_id
               for s in request if s is not server)
    assert {s.context.span_id for s in seen.ended} == {s.context.span_id for s in exported.get_finished_spans()
                                                       if s.name != "plugin setup shape"}
    assert len(seen.read) == 14 and all(read["resource"] is app.telemetry.resource for read in seen.read)


def test_a_span_ended_from_two_threads_at_once_is_exported_once() -> None:
    """end() races: one ReadableSpan reaches the processors, as with the SDK's lock."""
    telemetry = Telemetry("race", environ=ENV)
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    for _ in range(200):
        span = telemetry.tracer.start_span("raced")
        assert isinstance(span, LeanSpan)
        barrier = threading.Barrier(2)

        def end(span: Any = span, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            span.end()

        threads = [threading.Thread(target=end) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(exported.get_finished_spans()) == 200
    telemetry.shutdown()


def test_with_span_as_a_context_manager_records_what_escapes_it_as_the_sdk() -> None:
    """``with tracer.start_span(...)``: the escaping exception is an event with a stack trace and an ERROR status."""
    telemetry = Telemetry("ctx", environ=ENV)
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    sdk = telemetry.tracer_provider.get_tracer("ctx")  # type: ignore[attr-defined]
    for tracer in (telemetry.tracer, sdk):
        with pytest.raises(KeyError), tracer.start_span("step"):
            raise KeyError("missing")
    lean_made, sdk_made = exported.get_finished_spans()
    assert _normalized((lean_made,))[0].split(b"step")[1] == _normalized((sdk_made,))[0].split(b"step")[1]
    assert lean_made.status.description == "KeyError: 'missing'" and lean_made.events[0].name == "exception"
    telemetry.shutdown()


def _local_parent(sampled: bool) -> Any:
    """A context whose current span is a local span, sampled or not, with a trace state."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0x00F067AA0BA902B7, is_remote=False,
                         trace_flags=flags, trace_state=TraceState([("vendor", "v1")]))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@pytest.mark.parametrize("env", [
    {}, {"OTEL_TRACES_SAMPLER": "parentbased_always_off"},
    {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
    {"OTEL_TRACES_SAMPLER": "always_on"}, {"OTEL_TRACES_SAMPLER": "always_off"},
    {"NEXUS_OTEL_WORKFLOW_SAMPLING": "work=0.5"}, {"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0"},
    {"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0", "OTEL_TRACES_SAMPLER": "always_off"},
])
def test_a_local_parents_children_are_decided_as_the_providers_sampler_decides(env: dict[str, str]) -> None:
    """Under a sampled and an unsampled local parent: the same flags, recording, trace state and attributes as the
    SDK's tracer asking the sampler, for every sampler setting (some are answered without asking it)."""
    telemetry = Telemetry("decide", environ={**ENV, **env})
    sdk = telemetry.tracer_provider.get_tracer("decide")  # type: ignore[attr-defined]
    for sampled in (True, False):
        made = []
        for tracer in (telemetry.tracer, sdk):
            span = tracer.start_span("child", context=_local_parent(sampled), attributes={"a": 1})
            ctx = span.get_span_context()
            made.append((ctx.trace_flags, span.is_recording(), ctx.trace_state,
                         dict(span.attributes) if span.is_recording() else None))  # type: ignore[attr-defined]
            span.end()
        assert made[0] == made[1], (sampled, made)
    telemetry.shutdown()


def test_a_parent_based_sampler_with_its_own_local_delegates_is_asked() -> None:
    """A ParentBased sampler given other delegates for local parents decides those children itself."""
    from dataclasses import replace

    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, StaticSampler

    from nexus_otel.telemetry.config import TelemetryConfig

    config = replace(TelemetryConfig.from_env(ENV), sampler=ParentBased(
        ALWAYS_ON, local_parent_sampled=ALWAYS_OFF, local_parent_not_sampled=ALWAYS_ON))
    telemetry = Telemetry("decide", config=config)
    assert isinstance(telemetry.tracer, LeanTracer) and not telemetry.tracer.follows_local_parents
    assert not telemetry.tracer.start_span("c", context=_local_parent(True)).get_span_context().trace_flags.sampled
    assert telemetry.tracer.start_span("c", context=_local_parent(False)).get_span_context().trace_flags.sampled
    telemetry.shutdown()
    # A delegate that describes itself as the default one, but records without sampling: still asked.
    recording = StaticSampler(Decision.RECORD_ONLY)
    config = replace(config, sampler=ParentBased(ALWAYS_ON, local_parent_sampled=recording))
    telemetry = Telemetry("decide", config=config)
    span = telemetry.tracer.start_span("c", context=_local_parent(True))
    assert span.is_recording() and not span.get_span_context().trace_flags.sampled
    telemetry.shutdown()


def test_start_as_current_span_decorates_coroutine_functions_and_functions_as_the_sdks() -> None:
    """As a decorator: a coroutine function's span lasts until its coroutine ends and parents what runs in it;
    each call gets a span of its own; a sync function too."""
    telemetry = Telemetry("deco", environ=ENV)
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    tracer = telemetry.tracer

    @tracer.start_as_current_span("outer")
    async def outer() -> None:
        await asyncio.sleep(0.05)
        with tracer.start_as_current_span("inner"):
            pass

    @tracer.start_as_current_span("plain")
    def plain() -> int:
        return trace.get_current_span().get_span_context().span_id

    asyncio.run(outer())
    asyncio.run(outer())
    ids = {plain(), plain()}
    spans = exported.get_finished_spans()
    outers = [s for s in spans if s.name == "outer"]
    inners = [s for s in spans if s.name == "inner"]
    assert len(outers) == len(inners) == 2 and len({s.context.span_id for s in outers}) == 2
    assert all(s.end_time - s.start_time >= 40_000_000 for s in outers), "the span lasts as long as the coroutine"
    assert {s.parent.span_id for s in inners} == {s.context.span_id for s in outers}
    assert ids == {s.context.span_id for s in spans if s.name == "plain"} and len(ids) == 2
    telemetry.shutdown()


def test_events_stay_bounded_while_a_span_is_open() -> None:
    """20,000 events on an open span: it holds at most the event limit (the newest), and counts the rest."""
    telemetry = Telemetry("events", environ=ENV)
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    span = telemetry.tracer.start_span("busy")
    for i in range(20_000):
        span.add_event(f"e{i}")
    assert len(span.events) == 128 and span.dropped_events == 20_000 - 128  # type: ignore[attr-defined]
    span.end()
    (made,) = exported.get_finished_spans()
    assert made.events[-1].name == "e19999" and made.dropped_events == 20_000 - 128
    telemetry.shutdown()


LIMIT_VARS = ("OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
              "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
              "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT")


@pytest.mark.parametrize("env", [
    {}, {"OTEL_ATTRIBUTE_COUNT_LIMIT": "7"}, {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "20"},
    {"OTEL_ATTRIBUTE_COUNT_LIMIT": "7", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3", "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "0",
     "OTEL_SPAN_EVENT_COUNT_LIMIT": "5", "OTEL_SPAN_LINK_COUNT_LIMIT": "6", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "9",
     "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "30", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "10"},
    {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": ""},  # set but empty: no limit, as the SDK reads it
    {"OTEL_ATTRIBUTE_COUNT_LIMIT": "7", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": " "},
    {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "9", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": ""},
    {"OTEL_SPAN_EVENT_COUNT_LIMIT": "", "OTEL_ATTRIBUTE_COUNT_LIMIT": ""},
])
def test_span_limits_come_from_the_configurations_environment_as_the_sdk_reads_them(monkeypatch, env) -> None:
    """``Telemetry(environ=...)``'s span limits equal what the SDK reads from a process environment holding the
    same variables, and the process's own variables do not leak in."""
    from opentelemetry.sdk.trace import SpanLimits

    for name in LIMIT_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    expected = SpanLimits()
    for name in LIMIT_VARS:
        monkeypatch.setenv(name, "1")  # the process says otherwise: not read
    telemetry = Telemetry("limits", environ={**ENV, **env})
    fields = ("max_attributes", "max_events", "max_links", "max_span_attributes", "max_event_attributes",
              "max_link_attributes", "max_attribute_length", "max_span_attribute_length")
    assert {f: getattr(telemetry.span_limits, f) for f in fields} == {f: getattr(expected, f) for f in fields}
    span = telemetry.tracer.start_span("limited", attributes={f"a{i}": "x" * 40 for i in range(12)})
    span.end()
    from nexus_otel.exporters.audit_spans import link_limit

    assert link_limit(telemetry.delivery_tracer("audit")) == expected.max_links  # an audit batch links as many
    telemetry.shutdown()


def test_a_given_provider_built_with_span_processors_gets_lean_spans_and_others_the_sdks() -> None:
    """A provider built with ``active_span_processor=SpanProcessors()`` and passed with it: lean spans, through
    its processors, decided by its own sampler; a provider given alone: its own SDK tracer. The testing tools
    (CapturedTelemetry) are of the first kind, so tests see the spans a served app makes."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    from nexus_otel.telemetry.lean_tracer import SpanProcessors
    from nexus_otel.testing import CapturedTelemetry

    processors = SpanProcessors()
    provider = TracerProvider(active_span_processor=processors)  # type: ignore[arg-type]
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    telemetry = Telemetry("given", tracer_provider=provider, span_processors=processors, environ=ENV)
    assert isinstance(telemetry.tracer, LeanTracer) and telemetry.tracer.follows_local_parents
    with telemetry.tracer.start_as_current_span("outer"), telemetry.tracer.start_as_current_span("inner"):
        pass
    assert [s.name for s in exported.get_finished_spans()] == ["inner", "outer"]
    others = SpanProcessors()
    off = TracerProvider(sampler=ALWAYS_OFF, active_span_processor=others)  # type: ignore[arg-type]
    quiet = Telemetry("given", tracer_provider=off, span_processors=others, environ=ENV)
    assert isinstance(quiet.tracer, LeanTracer) and not quiet.tracer.follows_local_parents
    assert not quiet.tracer.start_span("x").is_recording()
    assert not isinstance(Telemetry("given", tracer_provider=TracerProvider(), environ=ENV).tracer, LeanTracer)
    assert isinstance(CapturedTelemetry().app("captured").telemetry.tracer, LeanTracer)


def test_a_provider_given_with_other_processors_and_a_current_span_opened_twice_are_refused() -> None:
    """span_processors that are not the provider's: a ConfigurationError (every span would be lost); one
    start_as_current_span object entered while open: a RuntimeError (its first span would end early)."""
    from nexus_otel.errors import ConfigurationError
    from nexus_otel.telemetry.lean_tracer import SpanProcessors

    with pytest.raises(ConfigurationError, match="span_processors"):
        Telemetry("given", tracer_provider=TracerProvider(), span_processors=SpanProcessors(), environ=ENV)
    telemetry = Telemetry("twice", environ=ENV)
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    current = telemetry.tracer.start_as_current_span("once")
    with current:
        with pytest.raises(RuntimeError, match="already open"), current:
            pass
        assert trace.get_current_span().is_recording()
    with current:  # again, once closed: a new span
        pass
    assert [s.name for s in exported.get_finished_spans()] == ["once", "once"]
    telemetry.shutdown()
