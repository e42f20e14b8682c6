"""The lean tracer of delivery spans makes the spans the SDK's tracer makes, through the same sampler and pipeline."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from nexus_otel.redaction import Redactor
from nexus_otel.telemetry.lean_tracer import LeanSpan, LeanTracer
from nexus_otel.telemetry.telemetry import Telemetry

SECRET = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
LINKED = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _telemetry(environ: dict[str, str] | None = None, redactor: Redactor | None = None,
               ) -> tuple[Telemetry, InMemorySpanExporter]:
    env = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           **(environ or {})}
    telemetry = Telemetry("lean", environ=env, redactor=redactor)
    exported = InMemorySpanExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exported))
    return telemetry, exported


def _attempt(tracer: Any, status: int, *, event: bool = False, description: str | None = None) -> str:
    """One attempt as the delivery worker makes it: a root CLIENT span with a link, ended after an answer."""
    span = tracer.start_span("POST", context=Context(), kind=SpanKind.CLIENT, links=[Link(LINKED)],
                             attributes={"http.request.method": "POST", "url.full": "http://127.0.0.1:9/hook",
                                         "server.port": 9, "nexus.webhook.attempt": 1})
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR, description))
    if event:
        span.add_event("nexus.webhook.dead_letter", {"nexus.webhook.error": f"HTTP {status}"}, timestamp=1)
    context = span.get_span_context()
    span.end()
    return f"{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _shape(span: ReadableSpan) -> tuple[Any, ...]:
    """What an exporter sends of a span, but its ids and times."""
    return (span.name, span.kind, dict(span.attributes or {}),
            [(e.name, dict(e.attributes or {})) for e in span.events],
            [(link.context, dict(link.attributes or {})) for link in span.links], span.status.status_code,
            span.status.description, span.parent, span.resource, span.instrumentation_scope.name,
            span.context.trace_flags, span.context.is_remote)


def _both(telemetry: Telemetry, scrubbed: frozenset[str] = frozenset()) -> tuple[Any, Any]:
    lean = telemetry.delivery_tracer("nexus_otel.webhooks", scrubbed=scrubbed)
    assert isinstance(lean, LeanTracer)
    provider = telemetry.tracer_provider
    assert isinstance(provider, TracerProvider)
    return lean, provider.get_tracer("nexus_otel.webhooks", lean.scope.version)


@pytest.mark.parametrize("status,event", [(200, False), (500, True), (404, False)])
def test_a_lean_span_is_exported_as_the_sdk_would_export_it(status: int, event: bool) -> None:
    """Name, kind, attributes, events, links, status, parent, resource, scope and flags: the same as the SDK's span."""
    telemetry, exported = _telemetry()
    lean, sdk = _both(telemetry)
    _attempt(lean, status, event=event)
    _attempt(sdk, status, event=event)
    made_lean, made_sdk = exported.get_finished_spans()
    assert _shape(made_lean) == _shape(made_sdk)
    assert made_lean.context.trace_id != LINKED.trace_id and made_lean.parent is None
    assert made_lean.start_time <= made_lean.end_time
    telemetry.shutdown()


def test_the_providers_sampler_decides_and_a_dropped_span_still_has_a_context_to_send() -> None:
    """always_off: nothing exported, yet each attempt has fresh ids with the unsampled flag, as the SDK's."""
    telemetry, exported = _telemetry({"OTEL_TRACES_SAMPLER": "always_off"})
    lean, sdk = _both(telemetry)
    sent = {_attempt(lean, 200) for _ in range(5)}
    assert exported.get_finished_spans() == ()
    flags = {s.rpartition("-")[2] for s in sent}
    assert len(sent) == 5 and not any(s.startswith("0" * 32) for s in sent)
    assert flags == {_attempt(sdk, 200).rpartition("-")[2]} and not int(flags.pop(), 16) & 1
    telemetry.shutdown()


def test_with_tail_sampling_a_failed_attempt_the_head_dropped_is_kept() -> None:
    """The head's drop is recorded for the tail sampler (as for SDK spans): an error is kept, a success is not."""
    telemetry, exported = _telemetry({"OTEL_TRACES_SAMPLER": "always_off", "NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0"})
    lean, _ = _both(telemetry)
    _attempt(lean, 200)
    _attempt(lean, 503, description="HTTP 503")
    assert [s.attributes["http.response.status_code"] for s in exported.get_finished_spans()] == [503]
    telemetry.shutdown()


def test_unscrubbed_attributes_events_and_descriptions_are_redacted() -> None:
    """A secret in an attribute not declared scrubbed, in an event and in a status description is masked."""
    telemetry, exported = _telemetry()
    lean, _ = _both(telemetry, scrubbed=frozenset({"url.full", "server.port", "nexus.webhook.attempt",
                                                  "http.response.status_code"}))
    span = lean.start_span("POST", context=Context(), attributes={"url.full": "http://127.0.0.1:9/hook",
                                                                   "note": f"token {SECRET}"})
    span.end()
    _attempt(lean, 500, event=True, description=f"connection error: {SECRET}")
    span = lean.start_span("POST", context=Context(), attributes={"url.full": "http://127.0.0.1:9/hook"})
    span.add_event("nexus.webhook.dead_letter", {"nexus.webhook.error": f"HTTP 500 {SECRET}"})
    span.end()
    spans = exported.get_finished_spans()
    assert len(spans) == 3
    for made in spans:
        text = repr(_shape(made))
        assert SECRET not in text
    assert "[REDACTED]" in repr(_shape(spans[0]))
    telemetry.shutdown()


def test_scrubbed_attributes_are_not_scanned_again_unless_a_callback_is_set() -> None:
    """Declared scrubbed: passed as they are; with a redaction callback the whole span is scanned anyway."""
    seen: list[str] = []

    def callback(key: str, value: str) -> str:
        seen.append(key)
        return value

    for redactor, scanned in ((Redactor(), False), (Redactor(callback=callback), True)):
        seen.clear()
        telemetry, exported = _telemetry(redactor=redactor)
        lean, _ = _both(telemetry, scrubbed=frozenset({"url.full"}))
        span = lean.start_span("POST", context=Context(), attributes={"url.full": "http://127.0.0.1:9/hook"})
        span.end()
        (made,) = exported.get_finished_spans()
        assert made.attributes["url.full"] == "http://127.0.0.1:9/hook"
        assert ("url.full" in seen) is scanned
        telemetry.shutdown()


def test_a_borrowed_provider_gets_its_own_sdk_tracer_and_disabled_spans_none() -> None:
    """Lean only on a provider the app built; NEXUS_OTEL_DELIVERY_SPANS=false or a disabled SDK gives None."""
    provider = TracerProvider()
    borrowed = Telemetry("lean", tracer_provider=provider, environ={"OTEL_METRICS_EXPORTER": "none",
                                                                     "OTEL_LOGS_EXPORTER": "none"})
    tracer = borrowed.delivery_tracer("nexus_otel.webhooks")
    assert tracer is not None and not isinstance(tracer, LeanTracer)
    assert Telemetry("lean", environ={"NEXUS_OTEL_DELIVERY_SPANS": "false"}).delivery_tracer("x") is None
    assert Telemetry("lean", environ={"OTEL_SDK_DISABLED": "true"}).delivery_tracer("x") is None


def test_an_ended_lean_span_takes_no_more_changes_and_ends_once() -> None:
    """After end(): attributes, events and status are ignored, and a second end() exports nothing more."""
    telemetry, exported = _telemetry()
    lean, _ = _both(telemetry)
    span = lean.start_span("POST", context=Context())
    assert isinstance(span, LeanSpan) and span.is_recording()
    span.set_status(StatusCode.OK)
    span.set_status(Status(StatusCode.ERROR, "late"))  # an OK status is final, as the SDK's
    span.end()
    span.set_attribute("late", 1)
    span.add_event("late")
    span.end()
    (made,) = exported.get_finished_spans()
    assert made.status.status_code is StatusCode.OK and "late" not in made.attributes and not made.events
    assert not span.is_recording()
    telemetry.shutdown()


def test_a_scrubbed_key_the_redactor_masks_is_masked_all_the_same() -> None:
    """A key declared scrubbed but sensitive to the app's redactor (its own sensitive keys) goes through redaction."""
    from nexus_otel.redaction import DEFAULT_SENSITIVE_KEYS

    redactor = Redactor(sensitive_keys=(*DEFAULT_SENSITIVE_KEYS, "url", "server"))
    telemetry, exported = _telemetry(redactor=redactor)
    lean, _ = _both(telemetry, scrubbed=frozenset({"url.full", "server.address", "server.port"}))
    span = lean.start_span("POST", context=Context(), attributes={"url.full": "http://127.0.0.1:9/hook",
                                                                   "server.address": "127.0.0.1",
                                                                   "server.port": 9})
    span.end()
    (made,) = exported.get_finished_spans()
    assert made.attributes["url.full"] != "http://127.0.0.1:9/hook"
    assert made.attributes["server.address"] != "127.0.0.1"
    telemetry.shutdown()
