"""A tracer for the spans of work done after an execution returned: webhook attempts, audit batches.

Those spans are made by a delivery worker, one per request or batch, and a
payload's CPU is what the worker spends on it (``benchmarks/throughput.py``).
The SDK's tracer spends about as much on a span's bookkeeping (attributes
cleaned and bounded one by one, a lock per change, a link's own bounded
attributes) as the worker spends on the request itself. :class:`LeanTracer`
makes the same spans with the same parts of the app's own provider, and little
else:

- the provider's sampler decides (``OTEL_TRACES_SAMPLER``, per-workflow ratios,
  the tail sampler's recording): a dropped span is a ``NonRecordingSpan`` whose
  context (ids, unsampled flag) still goes to the receiver;
- the provider's id generator and resource, and the span's own instrumentation scope;
- the app's span pipeline (:attr:`Telemetry.sinks`: redaction, the tail sampler,
  every exporter and every processor added with ``Telemetry.add_span_processor``).

Attributes whose values the caller made from redacted text (``scrubbed``: a
destination's ``url.full``, worked out once) are not scanned again, unless the
redactor has a callback; events and status descriptions always are. What it
leaves out: processors added to the SDK provider directly (``provider.add_span_processor``)
do not see these spans, and the SDK's attribute value length limit is not applied
(redaction cuts long values). A tracer provider the app borrowed gets the SDK's own
tracer instead (:meth:`Telemetry.delivery_tracer`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes, AttributeValue

from ..processors.span_redaction import RedactingSpanProcessor
from ..redaction import KEY_ALLOWED, KEY_PLAIN
from .contract import error_type

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
"""W3C Trace Context level 2's flag for a random trace id (set by the SDK's tracer since 1.39)."""
_UNSET = Status(StatusCode.UNSET)


class LeanSpan(trace_api.Span):
    """A recording span of a :class:`LeanTracer`: values kept as given until :meth:`end` hands it on.

    Used from one thread (the worker that made it), as delivery spans are.
    """

    __slots__ = ("_tracer", "_name", "_context", "_parent", "_kind", "_attributes", "_links", "_events",
                 "_status", "_start", "_ended")

    def __init__(self, tracer: LeanTracer, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: dict[str, Any], links: tuple[Link, ...], start: int) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._links = links
        self._events: list[Event] = []
        self._status = _UNSET
        self._start = start
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if not self._ended:
            self._attributes.update(attributes)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        if not self._ended:
            self._events.append(Event(name, dict(attributes or {}), timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not self._ended and context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if not self._ended:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK's: an OK status is final; an UNSET one changes nothing."""
        if self._ended or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self._status = status

    def record_exception(self, exception: BaseException, attributes: Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        """An ``exception`` event with the conventions' type and message (no stack trace: delivery failures
        are known errors, not crashes)."""
        event: dict[str, AttributeValue] = {"exception.type": error_type(exception),
                                            "exception.message": str(exception)}
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        tracer = self._tracer
        tracer.finish(self._attributes.keys() <= tracer.scrubbed, ReadableSpan(
            name=self._name, context=self._context, parent=self._parent, resource=self._tracer.resource,
            attributes=self._attributes, events=tuple(self._events), links=self._links, kind=self._kind,
            status=self._status, start_time=self._start, end_time=end_time or time.time_ns(),
            instrumentation_scope=self._tracer.scope))


class LeanTracer(trace_api.Tracer):
    """Makes :class:`LeanSpan` s with ``provider``'s sampler, ids and resource, and hands each finished one to
    ``pipeline`` (the app's redacting span pipeline). ``scrubbed``: attribute keys whose values the caller
    made from text its redactor already scrubbed (not scanned again without a redaction callback)."""

    def __init__(self, provider: TracerProvider, pipeline: RedactingSpanProcessor, scope: InstrumentationScope,
                 *, scrubbed: frozenset[str] = frozenset()) -> None:
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        self.pipeline = pipeline
        self.scope = scope
        # A key the app's redactor masks (its sensitive keys) is never taken as scrubbed: the pipeline masks it.
        kind = pipeline.redactor.key_kind
        self.scrubbed = frozenset(k for k in scrubbed if kind(k) in (KEY_PLAIN, KEY_ALLOWED)) | pipeline.unscanned
        random_ids = getattr(self.ids, "is_trace_id_random", None)
        self._root_flags = _RANDOM if random_ids is not None and random_ids() else 0

    def start_span(self, name: str, context: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
                   attributes: Attributes = None, links: Sequence[Link] | None = None,
                   start_time: int | None = None, record_exception: bool = True,
                   set_status_on_exception: bool = True) -> trace_api.Span:
        parent = trace_api.get_current_span(context).get_span_context()
        parent_context = parent if parent.is_valid else None
        trace_id = parent.trace_id if parent_context is not None else self.ids.generate_trace_id()
        links = tuple(link for link in links or () if link.context.is_valid)
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        flags = _SAMPLED if result.decision.is_sampled() else _UNSAMPLED
        random_id = self._root_flags if parent_context is None else parent_context.trace_flags & _RANDOM
        if random_id:
            flags = TraceFlags(flags | random_id)
        span_context = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=flags,
                                   trace_state=result.trace_state)
        if not result.decision.is_recording():
            return trace_api.NonRecordingSpan(span_context)
        values = dict(result.attributes) if result.attributes else dict(attributes or {})
        return LeanSpan(self, name, span_context, parent_context, kind, values, links,
                        start_time or time.time_ns())

    @contextmanager
    def start_as_current_span(  # type: ignore[override]  # the API's own decorator for this is private
            self, name: str, context: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
            attributes: Attributes = None, links: Sequence[Link] | None = None, start_time: int | None = None,
            record_exception: bool = True, set_status_on_exception: bool = True,
            end_on_exit: bool = True) -> Iterator[trace_api.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time)
        with trace_api.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                                set_status_on_exception=set_status_on_exception) as current:
            yield current

    def finish(self, scrubbed: bool, span: ReadableSpan) -> None:
        """Hand a finished span to the pipeline; if all its attributes are ``scrubbed``, not scanned again."""
        if scrubbed:
            self.pipeline.on_end_scrubbed(span)
        else:
            self.pipeline.on_end(span)
