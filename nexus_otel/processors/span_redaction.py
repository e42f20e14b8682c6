"""Redaction in front of every sink: the processors behind it only ever see scrubbed spans.

The SDK hands the same finished span to every processor, and a finished span
cannot be changed. So redaction is not one processor among many: it *wraps*
the sinks. :class:`RedactingSpanProcessor` passes ``on_start`` through, and on
``on_end`` gives its children a copy in which values under sensitive keys are
masked, secrets inside every string attribute (a URL's password, a token, a card
number: :mod:`nexus_otel.secret_patterns`) masked, long strings cut, and
exception messages, stack traces and status descriptions passed through the same
scrubbing, limits and the user's callback. A span that needs no change is passed
on as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import Status

from ..redaction import KEY_ALLOWED, KEY_AWS, KEY_MASKED, MASK, Redactor
from ..secret_patterns import card_number
from .children import WrappingSpanProcessor

PRE_REDACTED = frozenset({"nexus.workflow.inputs"})
"""Already redacted by the host before it became an attribute: only the callback (and a limit) applies again."""
OWN_ATTRIBUTES = frozenset({
    "nexus.workflow.name", "nexus.workflow.id", "nexus.channel", "nexus.hook.event", "nexus.plugin.name",
    "nexus.plugin.version", "nexus.workflow.status", "http.request.method", "http.route", "error.type",
    "exception.type",
})
"""Attributes whose values nexus-otel sets from names it knows (never from user data): not scanned."""


class RedactingSpanProcessor(WrappingSpanProcessor):
    """Wraps the sink processors: ``RedactingSpanProcessor(redactor, [BatchSpanProcessor(exporter)])``."""

    unscanned = PRE_REDACTED | OWN_ATTRIBUTES
    """Attribute keys whose values are not scanned (unless the redactor has a callback)."""

    def __init__(self, redactor: Redactor | None = None, children: Iterable[SpanProcessor] = ()) -> None:
        super().__init__(children)
        self.redactor = redactor or Redactor()
        self._shutdown = False

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.start_children(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        children = self._children.items
        if not children or self._shutdown:
            return
        self.end_children(self.redact(span), children)

    def on_end_scrubbed(self, span: ReadableSpan) -> None:
        """:meth:`on_end` for a span whose attribute values its maker already scrubbed with :attr:`redactor`
        (a delivery span's ``url.full``, worked out once per destination): they are not scanned again unless
        the redactor has a callback; events and a status description still are."""
        if self.redactor.has_callback or span.events or span.status.description:
            self.on_end(span)
            return
        children = self._children.items
        if not children or self._shutdown:
            return
        self.end_children(span, children)

    def redact(self, span: ReadableSpan) -> ReadableSpan:
        """The span as sinks may see it (the same object when nothing needed changing)."""
        r = self.redactor
        attributes, changed = self._attributes(span.attributes)
        events: Any = span.events
        if events:
            events = list(events)
            for i, event in enumerate(events):
                event_attrs, event_changed = self._attributes(event.attributes, text=True)
                if event_changed:
                    events[i] = Event(event.name, event_attrs, event.timestamp)
                    changed = True
        status = span.status
        if status.description:
            description = r.scrub_text("status.description", status.description)
            if description != status.description:
                status = Status(status.status_code, description)
                changed = True
        if not changed:
            return span
        bounded = BoundedAttributes(attributes=dict(attributes), immutable=True, max_value_len=None)
        original = getattr(span, "_attributes", None)
        bounded.dropped = getattr(original, "dropped", 0)
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=bounded, events=events, links=span.links, kind=span.kind, status=status,
            start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def _attributes(self, attrs: Any, text: bool = False) -> tuple[Any, bool]:
        """The attributes to pass on, and whether any changed (the same mapping when none did)."""
        if not attrs:
            return attrs or {}, False
        r = self.redactor
        callback = r.has_callback
        limit = None if text else r.max_value_length
        scrub = r.scrub_credentials
        kind_of = r.key_kind
        changes: dict[str, Any] | None = None
        new: Any
        for key in attrs:
            value = attrs[key]
            if key in PRE_REDACTED or key in OWN_ATTRIBUTES:
                if not (callback and isinstance(value, str)):
                    continue
                new = r.scrub_text(key, value)
            else:
                kind = kind_of(key)
                if kind == KEY_MASKED:
                    new = MASK
                elif type(value) is str:
                    if kind == KEY_ALLOWED:
                        new = r.bound_text(key, value, limit)
                    else:
                        new = r.scrub_text(key, value, limit)
                        if kind == KEY_AWS and scrub:
                            new = r.scrub_aws_context(new)
                elif isinstance(value, (tuple, list)) and (callback or (scrub and kind != KEY_ALLOWED)):
                    new = tuple(r.scrub_text(key, v, limit) if isinstance(v, str) and kind != KEY_ALLOWED
                                else r.bound_text(key, v, limit) if isinstance(v, str) else v for v in value)
                elif type(value) is int and scrub and kind != KEY_ALLOWED and value >= 10**12 and card_number(value):
                    new = MASK
                else:
                    continue
            if new is not value and new != value:
                if changes is None:
                    changes = {}
                changes[key] = new
        if changes is None:
            return attrs, False
        out = dict(attrs)
        out.update(changes)
        return out, True

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._children.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._children.force_flush(timeout_millis)
