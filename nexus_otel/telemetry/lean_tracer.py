"""The tracer of every span an app makes on a tracer provider it built: the SDK's spans, for less.

The SDK's tracer spends, per span, about as much on bookkeeping (each attribute
cleaned and bounded one by one under a lock, a bounded dict, list and link
attributes made whether used or not) as an HTTP request of a trivial workflow
spends on everything else (``benchmarks/http_throughput.py --peers``).
:class:`LeanTracer` makes the same spans, read by the same processors, with
the same parts of the app's own provider:

- the provider's sampler decides (``OTEL_TRACES_SAMPLER``, per-workflow ratios,
  the tail sampler's recording): a dropped span is a ``NonRecordingSpan`` whose
  context (ids, unsampled flag) still propagates;
- the provider's id generator and resource, the app's span limits (``OTEL_SPAN_*_LIMIT``
  from its configuration, read as the SDK reads them, and given to a provider it builds:
  the oldest attribute goes first when a span is full, and what was dropped is counted),
  and the span's own instrumentation scope;
- every processor of the provider (:class:`SpanProcessors`, given to the provider
  when it is built): each sees ``on_start`` with the live span and ``on_end`` with
  a ``ReadableSpan``, as from the SDK.

Attribute values are kept as given when they are valid scalars (the common case),
and cleaned by the SDK's own ``BoundedAttributes`` otherwise (sequences made tuples,
invalid values dropped with the SDK's warning, strings cut at the length limit);
events and links use the SDK's bounded types. Attributes whose values the caller
made from redacted text (``scrubbed``: a webhook destination's ``url.full``) are
not scanned by redaction again, unless the redactor has a callback. What differs:
the SDK's own span metrics (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) count
none of these spans, and an open span is not an instance of the SDK's
``ReadableSpan`` (it has all of its properties). A tracer provider the app
borrowed gets the SDK's tracer instead (:attr:`Telemetry.tracer`,
:meth:`Telemetry.delivery_tracer`).
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from ..errors import SpanAlreadyOpenError
from ..processors.span_redaction import RedactingSpanProcessor
from ..redaction import KEY_ALLOWED, KEY_PLAIN

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
"""W3C Trace Context level 2's flag for a random trace id (set by the SDK's tracer since 1.39)."""
_UNSET = Status(StatusCode.UNSET)
_SCALARS = frozenset({str, bool, int, float})


class SpanProcessors:
    """A tracer provider's active span processor: every processor added to the provider, called in order.

    Given to the SDK's ``TracerProvider`` when the app builds one, so that a :class:`LeanTracer` hands its
    spans to exactly the processors the SDK's tracer would (``provider.add_span_processor`` adds here).
    Like the SDK's synchronous multi-processor, an exception in one is not caught here.
    """

    def __init__(self) -> None:
        self.items: tuple[SpanProcessor, ...] = ()
        self._ending: tuple[Any, ...] = ()  # the processors' own _on_ending methods (the base class's does nothing)
        self._lock = threading.Lock()

    def add_span_processor(self, processor: SpanProcessor) -> None:
        with self._lock:
            self.items = (*self.items, processor)
            if getattr(type(processor), "_on_ending", None) not in (None, SpanProcessor._on_ending):
                self._ending = (*self._ending, processor._on_ending)

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        for processor in self.items:
            processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span: Any) -> None:
        """The SDK's hook, under its own name, for a span that is ending (spec: ``OnEnding``)."""
        for on_ending in self._ending:
            on_ending(span)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self.items:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self.items:
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        for processor in self.items:
            left = int((deadline - time.monotonic()) * 1000)
            if left <= 0 or not processor.force_flush(left):
                return False
        return True


class LeanSpan(trace_api.Span):
    """A recording span of a :class:`LeanTracer`: valid values kept as given until :meth:`end` hands it on."""

    __slots__ = ("_tracer", "_name", "_context", "_parent", "_kind", "_attributes", "_links", "_events",
                 "_status", "_start", "_end", "_ended", "_lock", "_record_exception", "_set_status_on_exception")

    def __init__(self, tracer: LeanTracer, name: str, context: SpanContext, parent: SpanContext | None,
                 kind: SpanKind, attributes: dict[str, Any] | BoundedAttributes, links: BoundedList | tuple[Link, ...],
                 start: int, record_exception: bool = True, set_status_on_exception: bool = True) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._links = links
        self._events: list[Event] | BoundedList = []
        self._status = _UNSET
        self._start = start
        self._end: int | None = None
        self._ended = False
        self._lock = threading.Lock()
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    # What a processor reads of a live span (on_start, _on_ending), as of the SDK's: read-only views.
    @property
    def name(self) -> str:
        return self._name

    @property
    def resource(self) -> Any:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    @property
    def links(self) -> tuple[Link, ...]:
        return tuple(self._links)

    @property
    def status(self) -> Status:
        return self._status

    @property
    def end_time(self) -> int | None:
        return self._end

    @property
    def dropped_attributes(self) -> int:
        values = self._attributes
        return values.dropped if isinstance(values, BoundedAttributes) else 0

    @property
    def dropped_events(self) -> int:
        events = self._events
        return events.dropped if isinstance(events, BoundedList) else 0

    @property
    def dropped_links(self) -> int:
        links = self._links
        return links.dropped if isinstance(links, BoundedList) else 0

    def to_json(self, indent: int | None = 4) -> str:
        return self._readable().to_json(indent)

    @property
    def context(self) -> SpanContext:
        return self._context

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def kind(self) -> SpanKind:
        return self._kind

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self._attributes)

    @property
    def start_time(self) -> int:
        return self._start

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        with self._lock:
            if not self._ended:
                self._put(key, value)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        with self._lock:
            if not self._ended:
                for key, value in attributes.items():
                    self._put(key, value)

    def _put(self, key: str, value: Any) -> None:
        """Set one attribute (the lock held): an invalid value is cleaned or dropped, and a full span drops its
        oldest attribute, as the SDK's bounded attributes do."""
        values = self._attributes
        if isinstance(values, dict):
            tracer = self._tracer
            if type(key) is str and key and tracer.valid(value):
                if key in values:
                    del values[key]  # set again: it moves to the end, as in the SDK's bounded attributes
                    values[key] = value
                    return
                if tracer.max_attributes is None or len(values) < tracer.max_attributes:
                    values[key] = value
                    return
            values = self._attributes = BoundedAttributes(tracer.max_attributes, values, immutable=False,
                                                          max_value_len=tracer.max_length)
        values[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        limits = self._tracer.limits
        event = Event(name, BoundedAttributes(limits.max_event_attributes, attributes,
                                              max_value_len=limits.max_attribute_length, immutable=True),
                      timestamp or time.time_ns())
        with self._lock:
            if not self._ended:
                events = self._events
                maximum = self._tracer.limits.max_events
                if maximum is not None and len(events) >= maximum and not isinstance(events, BoundedList):
                    events = self._events = BoundedList.from_seq(maximum, events)  # the oldest go first from here
                events.append(event)

    def add_link(self, context: SpanContext, attributes: Attributes = None) -> None:
        if not (context.is_valid or attributes or context.trace_state):
            return
        link = self._tracer.link(Link(context, attributes))
        with self._lock:
            if not self._ended:
                links = self._links
                if not isinstance(links, BoundedList):
                    links = self._links = BoundedList.from_seq(self._tracer.limits.max_links, links)
                links.append(link)

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
        """An ``exception`` event as the SDK's (type, message, stack trace, escaped); a tracer made without
        stack traces (delivery spans: their failures are known errors, not crashes) leaves out the last two."""
        cls = type(exception)
        module = cls.__module__
        event: dict[str, Any] = {"exception.type": f"{module}.{cls.__qualname__}" if module and module != "builtins"
                                 else cls.__qualname__, "exception.message": str(exception)}
        if self._tracer.stack_traces:
            event["exception.stacktrace"] = "".join(traceback.format_exception(exception))
            event["exception.escaped"] = str(escaped)
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        """As the SDK's: an exception leaving ``with span:`` is recorded and sets the ERROR status."""
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._end = end_time or time.time_ns()
        tracer = self._tracer
        tracer.processors._on_ending(self)  # the SDK's name for this hook, called as the SDK does
        tracer.finish(self._attributes.keys() <= tracer.scrubbed, self._readable())

    def _readable(self) -> ReadableSpan:
        """What this span is now, as the SDK's ``ReadableSpan`` (what processors get at its end)."""
        tracer = self._tracer
        return ReadableSpan(
            name=self._name, context=self._context, parent=self._parent, resource=tracer.resource,
            attributes=self._attributes, events=self._events, links=self._links, kind=self._kind,
            status=self._status, start_time=self._start, end_time=self._end, instrumentation_scope=tracer.scope)


class CurrentSpan:
    """What :meth:`LeanTracer.start_as_current_span` gives: a context manager, and a decorator of sync and async
    functions alike, each call with a span of its own (as the API's own decorator does)."""

    def __init__(self, open_span: Callable[[], AbstractContextManager[trace_api.Span]]) -> None:
        self._open = open_span
        self._opened: AbstractContextManager[trace_api.Span] | None = None

    def __enter__(self) -> trace_api.Span:
        if self._opened is not None:  # the API's object refuses a second ``with`` too
            raise SpanAlreadyOpenError("a start_as_current_span(...) object is already open: call "
                                       "start_as_current_span again for a span nested in it or in another thread")
        self._opened = self._open()
        return self._opened.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool | None:
        opened, self._opened = self._opened, None
        assert opened is not None
        return opened.__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def traced_coroutine(*args: Any, **kwargs: Any) -> Any:
                with self._open():
                    return await fn(*args, **kwargs)

            return traced_coroutine

        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with self._open():
                return fn(*args, **kwargs)

        return traced


class LeanTracer(trace_api.Tracer):
    """Makes :class:`LeanSpan` s with ``provider``'s sampler, ids and resource and the span ``limits``, and hands
    each one to ``processors`` (the provider's active span processor; ``pipeline``, the app's redacting span
    pipeline, is among them). ``scrubbed``: attribute keys whose values the caller made from text its redactor
    already scrubbed (not scanned again without a redaction callback). ``stack_traces``: whether exception events
    carry one.
    ``follows_local_parents`` / ``records_unsampled``: what the provider's sampler is known to do with a local
    parent's children (see the attribute)."""

    def __init__(self, provider: TracerProvider, pipeline: RedactingSpanProcessor, scope: InstrumentationScope,
                 processors: SpanProcessors, limits: SpanLimits, *, scrubbed: frozenset[str] = frozenset(),
                 stack_traces: bool = True, follows_local_parents: bool = False,
                 records_unsampled: bool = False) -> None:
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        self.pipeline = pipeline
        self.processors = processors
        self.scope = scope
        self.stack_traces = stack_traces
        self.follows_local_parents = follows_local_parents
        """The provider's sampler gives a child of a local span its parent's decision (sampled: kept; else dropped,
        or recorded unsampled when ``records_unsampled``), with the given attributes and the parent's trace state:
        then such children are decided here without asking it (ParentBased with its default delegates does
        just that, and so do per-workflow ratios)."""
        self.records_unsampled = records_unsampled
        self.limits = limits
        self.max_attributes = self.limits.max_span_attributes
        self.max_length = self.limits.max_span_attribute_length
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
        links = tuple(links) if links else ()
        if parent_context is not None and self.follows_local_parents and not parent_context.is_remote:
            # What the head sampler would answer (see follows_local_parents), without asking it.
            decision = (Decision.RECORD_AND_SAMPLE if parent_context.trace_flags.sampled
                        else Decision.RECORD_ONLY if self.records_unsampled else Decision.DROP)
            given = attributes
            trace_state: TraceState | None = parent_context.trace_state
        else:
            result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision, given, trace_state = result.decision, result.attributes, result.trace_state
        flags = _SAMPLED if decision.is_sampled() else _UNSAMPLED
        random_id = self._root_flags if parent_context is None else parent_context.trace_flags & _RANDOM
        if random_id:
            flags = TraceFlags(flags | random_id)
        span_context = SpanContext(trace_id, self.ids.generate_span_id(), is_remote=False, trace_flags=flags,
                                   trace_state=trace_state)
        if not decision.is_recording():
            return trace_api.NonRecordingSpan(span_context)
        span = LeanSpan(self, name, span_context, parent_context, kind, self.initial_attributes(given),
                        self.initial_links(links), start_time or time.time_ns(), record_exception,
                        set_status_on_exception)
        self.processors.on_start(span, parent_context=context)
        return span

    def start_as_current_span(  # type: ignore[override]  # the API's own decorator for this is private
            self, name: str, context: Context | None = None, kind: SpanKind = SpanKind.INTERNAL,
            attributes: Attributes = None, links: Sequence[Link] | None = None, start_time: int | None = None,
            record_exception: bool = True, set_status_on_exception: bool = True,
            end_on_exit: bool = True) -> CurrentSpan:
        """As the SDK's: ``with tracer.start_as_current_span(...) as span:``, or a decorator of a function or a
        coroutine function (then its span ends when the coroutine does)."""
        return CurrentSpan(functools.partial(
            self._current_span, name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception, end_on_exit))

    @contextmanager
    def _current_span(self, name: str, context: Context | None, kind: SpanKind, attributes: Attributes,
                      links: Sequence[Link] | None, start_time: int | None, record_exception: bool,
                      set_status_on_exception: bool, end_on_exit: bool) -> Iterator[trace_api.Span]:
        span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                               set_status_on_exception)
        with trace_api.use_span(span, end_on_exit=end_on_exit, record_exception=record_exception,
                                set_status_on_exception=set_status_on_exception) as current:
            yield current

    # -- what a span's values become, as the SDK's bounded types would make them -------------------------
    def valid(self, value: Any) -> bool:
        """Whether ``value`` is kept as it is: a str, bool, int or float (a str within the length limit)."""
        return type(value) in _SCALARS and (self.max_length is None or type(value) is not str
                                            or len(value) <= self.max_length)

    def initial_attributes(self, given: Attributes) -> dict[str, Any] | BoundedAttributes:
        """A new span's attributes: as given when every value is :meth:`valid` and they are within the limit."""
        if not given:
            return {}
        if self.max_attributes is None or len(given) <= self.max_attributes:
            length = self.max_length
            for key, value in given.items():  # a loop, not all() over a generator: this runs for every span
                cls = type(value)
                if type(key) is not str or not key or cls not in _SCALARS or (
                        cls is str and length is not None and len(value) > length):  # type: ignore[arg-type]
                    break
            else:
                return dict(given)
        return BoundedAttributes(self.max_attributes, given, immutable=False, max_value_len=self.max_length)

    def initial_links(self, given: tuple[Link, ...]) -> tuple[Link, ...] | BoundedList:
        """A new span's links: the valid ones (as the SDK judges them), their attributes bounded as the SDK's."""
        if not given:
            return ()
        valid = [self.link(link) for link in given
                 if link and (link.context.is_valid or link.attributes or link.context.trace_state)]
        if self.limits.max_links is None or len(valid) <= self.limits.max_links:
            return tuple(valid)
        return BoundedList.from_seq(self.limits.max_links, valid)

    def link(self, link: Link) -> Link:
        return Link(link.context, BoundedAttributes(self.limits.max_link_attributes, link.attributes,
                                                    max_value_len=self.limits.max_attribute_length,
                                                    immutable=True))

    def finish(self, scrubbed: bool, span: ReadableSpan) -> None:
        """Hand a finished span to the processors; if all its attributes are ``scrubbed``, the redacting
        pipeline does not scan them again."""
        for processor in self.processors.items:
            if processor is self.pipeline and scrubbed:
                self.pipeline.on_end_scrubbed(span)
            else:
                processor.on_end(span)
