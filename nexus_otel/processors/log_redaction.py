"""Redaction in front of every log sink: the processors behind it only ever see scrubbed log records.

The logs twin of :mod:`nexus_otel.processors.span_redaction`. A log record is
written by any code (a workflow's ``logger.info(f"... {url}")``, an ``extra=``
dict holding a token), so the same rules apply before any sink sees it: values
under sensitive keys are masked whole, secrets inside the body and inside every
string attribute are masked by their shape (:mod:`nexus_otel.secret_patterns`),
structured bodies and attribute values go through the :class:`~nexus_otel.redaction.Redactor`
as inputs do, and long strings are cut.

The cut is made here, after the scan, not by the SDK: the SDK's attribute limit
would cut a secret in two before anything looked at it, and leave half of it
readable. So with ``OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT`` (or
``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``) set, the body and every string attribute
are cut to exactly that many characters once scrubbed; unset, the redactor's
own bounds apply (``max_attribute_length`` for the body and exception text,
``max_value_length`` for other attributes).

The SDK hands one mutable record to every processor of a provider, the user's
own too when the provider is borrowed. The record is never changed in place:
children get a copy when something needed changing, the record itself otherwise.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from ..redaction import KEY_ALLOWED, KEY_AWS, KEY_MASKED, MASK, Redactor
from ..secret_patterns import card_number
from .children import Wrapping
from .span_redaction import OWN_ATTRIBUTES, PRE_REDACTED

# Free text (as a span's exception event): bounded like a body, not like a short attribute.
_TEXT = frozenset({"exception.message", "exception.stacktrace"})
BODY = "body"
"""The path the redactor's callback sees for a record's body."""


class RedactingLogRecordProcessor(Wrapping[LogRecordProcessor], LogRecordProcessor):
    """Wraps the sink processors: ``RedactingLogRecordProcessor(redactor, [BatchLogRecordProcessor(exporter)])``.

    ``max_length`` is the configured value length limit (None: the redactor's own bounds).
    """

    def __init__(self, redactor: Redactor | None = None, children: Iterable[LogRecordProcessor] = (),
                 *, max_length: int | None = None) -> None:
        super().__init__(children)
        self.redactor = redactor or Redactor()
        self.max_length = max_length
        self._shutdown = False

    # -- LogRecordProcessor ------------------------------------------------------------------
    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        children = self._children.items
        if not children or self._shutdown:
            return
        clean = self.redact(log_record)
        for child in children:
            try:
                child.on_emit(clean)
            except Exception as exc:  # a broken sink of a user's must not fail the code that logged
                self.child_failed(child, "on_emit", exc)

    def enabled(self, **_: Any) -> bool:
        """Whether a record would reach a sink here: a logger may skip building one otherwise."""
        return bool(self._children.items) and not self._shutdown

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._children.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush every child within one shared deadline; a failing or late child does not stop the others."""
        return self._children.force_flush(timeout_millis)

    # -- redaction ---------------------------------------------------------------------------
    def redact(self, record: ReadWriteLogRecord) -> ReadWriteLogRecord:
        """The record as sinks may see it (the same object when nothing needed changing)."""
        inner = record.log_record
        body = self._body(inner.body)
        attributes, changed = self._attributes(inner.attributes)
        if body is inner.body and not changed:
            return record
        clean = copy.copy(inner)
        clean.body = body
        clean.attributes = dict(attributes) if attributes else None
        out = ReadWriteLogRecord(log_record=clean, resource=record.resource,
                                 instrumentation_scope=record.instrumentation_scope, limits=record.limits)
        if isinstance(inner.attributes, BoundedAttributes) and isinstance(clean.attributes, BoundedAttributes):
            clean.attributes.dropped = inner.attributes.dropped  # what the limits dropped stays counted
        return out

    def _cut(self, text: str) -> str:
        limit = self.max_length
        return text if limit is None or len(text) <= limit else text[:limit]

    def _body(self, body: Any) -> Any:
        """A string body scrubbed and bounded as free text; a structured one redacted as inputs are."""
        r = self.redactor
        if type(body) is str:
            new = self._cut(r.scrub_text(BODY, body, self.max_length or r.max_attribute_length))
            return body if new == body else new
        if isinstance(body, (Mapping, list, tuple)):
            return r(body)
        return body

    def _attributes(self, attrs: Any) -> tuple[Any, bool]:
        """The attributes to pass on, and whether any changed (the same mapping when none did)."""
        if not attrs:
            return attrs, False
        r = self.redactor
        callback = r.has_callback
        scrub = r.scrub_credentials
        kind_of = r.key_kind
        configured = self.max_length
        cut = self._cut
        changes: dict[str, Any] | None = None
        new: Any
        for key in attrs:
            value = attrs[key]
            limit = configured or (r.max_attribute_length if key in _TEXT else r.max_value_length)
            if key in PRE_REDACTED or key in OWN_ATTRIBUTES:
                if type(value) is not str:
                    continue
                new = cut(r.scrub_text(key, value) if callback else value)
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
                    new = cut(new)
                elif isinstance(value, (tuple, list)):
                    new = tuple(cut(r.bound_text(key, v, limit) if kind == KEY_ALLOWED else r.scrub_text(key, v, limit))
                                if isinstance(v, str) else v for v in value)
                elif isinstance(value, Mapping):
                    new = value if kind == KEY_ALLOWED and not callback else r(dict(value))
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
