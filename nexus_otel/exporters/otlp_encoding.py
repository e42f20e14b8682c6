"""OTLP span and log record batches written straight to protobuf wire bytes.

The SDK's OTLP exporters build one protobuf message object per span or log
record, per attribute and per value, then serialize the tree; for a batch of
small items that costs far more CPU than the bytes themselves. :class:`SpanEncoder`
writes the same ``ExportTraceServiceRequest`` (``opentelemetry.proto.collector.trace.v1``)
and :class:`LogEncoder` the same ``ExportLogsServiceRequest``
(``opentelemetry.proto.collector.logs.v1``) directly: varints, length-delimited
fields and fixed64 timestamps, field by field in field-number order. The two
requests have one shape (resource, then scope, then items), so both encoders
share one base: what never changes is encoded once there: a Resource's and an
InstrumentationScope's bytes are kept, keyed by the object's identity (both are
immutable in the SDK), and so are the bytes of attribute keys and attribute
key/value pairs whose value is a ``str`` or an ``int`` (a key whose values turn
out to be all different, such as an id, stops keeping values); each encoder
also keeps its own repeating strings (span names and statuses; severities and
event names).

The result decodes to a message equal to the SDK encoders'
(``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`` and
``..._log_encoder.encode_logs``), including their choices: items are grouped by
resource, then by scope, in order of first appearance; a span's ``flags`` carry
only the "has is-remote" and "is remote" bits of the parent's (or a link's)
context; a link's trace state is not sent; an attribute value that cannot be
encoded (an unknown type, an int outside int64, text that is not UTF-8) drops
that attribute alone, with a log line; a log record's body is always sent (an
empty ``AnyValue`` for None), its trace and span ids only when not zero, its
severity number only when it is a ``SeverityNumber``.

The OTLP exporters that send these bytes are in :mod:`.otlp_exporters`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from ..errors import UnencodableValueError

__all__ = ["LogEncoder", "SpanEncoder", "encode_logs", "encode_spans"]

_logger = logging.getLogger(__name__)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MASK = (1 << 64) - 1


def _varint_slow(n: int) -> bytes:
    """Unsigned base-128 varint of ``n`` (>= 0)."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = tuple(_varint_slow(n) for n in range(1 << 12))
"""The varints below 4096 (every field length inside a span, as a rule): a length is one tuple index."""
_N_SMALL = len(_SMALL_VARINTS)


def _varint(n: int) -> bytes:
    """Unsigned varint of ``n`` (>= 0), from the table when small."""
    return _SMALL_VARINTS[n] if n < _N_SMALL else _varint_slow(n)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    n = len(body)
    return tag + (_SMALL_VARINTS[n] if n < _N_SMALL else _varint_slow(n)) + body


def _utf8(text: Any) -> bytes:
    """The UTF-8 bytes of a protobuf string value; like protobuf, also takes UTF-8 ``bytes``."""
    if isinstance(text, str):
        return text.encode("utf-8")
    if isinstance(text, bytes):
        text.decode("utf-8")  # protobuf refuses bytes that are not UTF-8
        return bytes(text)
    raise UnencodableValueError(f"{text!r} has type {type(text).__name__}, but expected one of: bytes, str")


# Tags (field number << 3 | wire type), from the opentelemetry-proto descriptors.
# AnyValue: string_value 1, bool_value 2, int_value 3 (int64), double_value 4, array_value 5,
# kvlist_value 6, bytes_value 7. KeyValue: key 1, value 2. ArrayValue / KeyValueList: values 1.
_DOUBLE = struct.Struct("<Bd")  # tag 0x21 (field 4, fixed64) and the value
_FIXED64 = struct.Struct("<Q")
_KIND_AND_TIMES = struct.Struct("<BBBQBQ")  # kind (6, varint), start (7, fixed64), end (8, fixed64)
_KIND_VALUES = {  # SDK SpanKind -> Span.SpanKind (SPAN_KIND_INTERNAL = 1 ...)
    SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4, SpanKind.CONSUMER: 5,
}
# Span.flags (16, fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK (0x100), | IS_REMOTE_MASK (0x200).
_SPAN_FLAGS_LOCAL = b"\x85\x01\x00\x01\x00\x00"
_SPAN_FLAGS_REMOTE = b"\x85\x01\x00\x03\x00\x00"
# Span.Link.flags (6, fixed32), the same bits.
_LINK_FLAGS_LOCAL = b"\x35\x00\x01\x00\x00"
_LINK_FLAGS_REMOTE = b"\x35\x00\x03\x00\x00"
# Span.status (15) with Status.code (3) and no message: UNSET, OK, ERROR.
_STATUS_UNSET = b"\x7a\x00"
_STATUS_OK = b"\x7a\x02\x18\x01"
_STATUS_ERROR = b"\x7a\x02\x18\x02"
_UNSET, _OK, _ERROR = StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR
_INTERNAL, _SERVER, _CLIENT = SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT
_PRODUCER, _CONSUMER = SpanKind.PRODUCER, SpanKind.CONSUMER
_EMPTY_SUBMESSAGE = b"\x0a\x00"  # field 1 set to an empty message (Resource / InstrumentationScope)

_SPAN_ATTRIBUTE = b"\x4a"  # Span.attributes (9)
_EVENT_ATTRIBUTE = b"\x1a"  # Span.Event.attributes (3)
_LINK_ATTRIBUTE = b"\x22"  # Span.Link.attributes (4)
_RESOURCE_ATTRIBUTE = b"\x0a"  # Resource.attributes (1)
_SCOPE_ATTRIBUTE = b"\x1a"  # InstrumentationScope.attributes (3)

# LogRecord: severity_number (2, varint) per SeverityNumber member, keyed by the member's identity (members
# live as long as their enum, and an Enum hashes in Python); UNSPECIFIED (0) is left out, as protobuf does.
_SEVERITY_NUMBERS = {id(member): bytes((0x10, member.value)) if member.value else b"" for member in SeverityNumber}
_LOG_FLAGS = tuple(b"\x45" + bytes((n, 0, 0, 0)) for n in range(256))  # flags (8, fixed32): the trace flags
_FIXED32 = struct.Struct("<I")
_LOG_ATTRIBUTE = b"\x32"  # LogRecord.attributes (6)
_EMPTY_BODY = b"\x2a\x00"  # LogRecord.body (5): an empty AnyValue, sent for a None body as the SDK does
_BODY_STRINGS = tuple(bytes((0x2A, n + 2, 0x0A, n)) for n in range(126))
"""``LogRecord.body`` (5) holding an ``AnyValue.string_value`` (1) of n bytes, up to the lengths of one-byte varints."""
_N_BODY_STRINGS = len(_BODY_STRINGS)

_STRING_VALUES = tuple(bytes((0x12, n + 2, 0x0A, n)) for n in range(126))
"""``KeyValue.value`` (2) holding an ``AnyValue.string_value`` (1) of n bytes, up to the lengths of one-byte varints."""
_N_STRING_VALUES = len(_STRING_VALUES)


def _any_value(value: Any) -> bytes:
    """The body of an ``AnyValue`` for ``value``, type by type in the SDK encoder's order."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise UnencodableValueError(f"Value out of range: {value}")
        return b"\x18" + _varint(value & _UINT64_MASK)
    if isinstance(value, float):
        return _DOUBLE.pack(0x21, value)
    if isinstance(value, bytes):
        return _field(b"\x3a", bytes(value))
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join([_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()]))
    raise UnencodableValueError(f"Invalid type {type(value)} of value {value}")


def _status(status: Any) -> bytes:
    """``Span.status`` (field 15): ``Status.message`` (2) and ``Status.code`` (3)."""
    code = status.status_code
    if status.description:
        value = code.value
        return _field(b"\x7a", _field(b"\x12", _utf8(status.description))
                      + (b"\x18" + _varint(value) if value else b""))
    if code is _UNSET:
        return _STATUS_UNSET
    if code is _OK:
        return _STATUS_OK
    if code is _ERROR:
        return _STATUS_ERROR
    return _field(b"\x7a", b"\x18" + _varint(code.value))


def _key_value(key: Any, value: Any) -> bytes:
    """The body of a ``KeyValue`` (an empty key is left out, as protobuf does; the value is always present)."""
    key_bytes = _utf8(key)
    head = _field(b"\x0a", key_bytes) if key_bytes else b""
    return head + _field(b"\x12", _any_value(value))


class _BatchEncoder:
    """What :class:`SpanEncoder` and :class:`LogEncoder` share: grouping, resources, scopes and attributes.

    Both requests are ``repeated Resource{Items}`` (field 1) of ``resource`` (1),
    ``repeated Scope{Items}`` (2) of ``scope`` (1), the items (2) and ``schema_url``
    (3), and the resource's ``schema_url`` (3). Everything kept is bounded:
    ``max_kept`` entries per table (a table is emptied when full), ``max_keys``
    attribute keys with at most ``max_values_per_key`` values each. Safe to share
    between threads: every change to a table is one dict operation, and a race
    costs at most an encoding done twice.
    """

    def __init__(self, *, max_kept: int = 256, max_keys: int = 256, max_values_per_key: int = 64) -> None:
        """Bound what is kept between batches."""
        self._max_kept = max_kept
        self._max_keys = max_keys
        self._max_values = max_values_per_key
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes, bytes]] = {}
        self._keys: dict[Any, list[Any]] = {}

    def _encode_batch(self, items: Sequence[Any], encode_item: Callable[[Any, dict[int, bytes]], bytes]) -> bytes:
        """The request for ``items``, grouped by resource, then scope; ``encode_item(item, trace_ids)`` gives
        one item's field (tag 2, length, body); ``trace_ids`` is its per-batch table of encoded trace ids."""
        # resource -> scope -> encoded items, by equality (as the SDK encoders group); the
        # identity pair -> list map skips the hashing (a Resource hashes its attributes as JSON).
        groups: dict[Any, dict[Any, list[bytes]]] = {}
        by_identity: dict[tuple[int, int], list[bytes]] = {}
        last_resource = last_scope = None
        target: list[bytes] = []
        trace_ids: dict[int, bytes] = {}
        for item in items:
            resource = item.resource
            scope = item.instrumentation_scope or None
            if resource is not last_resource or scope is not last_scope:
                key = (id(resource), id(scope))
                found = by_identity.get(key)
                if found is None:
                    scopes = groups.get(resource)
                    if scopes is None:
                        scopes = groups[resource] = {}
                    found = scopes.get(scope)
                    if found is None:
                        found = scopes[scope] = []
                    by_identity[key] = found
                target, last_resource, last_scope = found, resource, scope
            target.append(encode_item(item, trace_ids))

        out: list[bytes] = []
        for resource, scopes in groups.items():
            body = [self._resource(resource)]
            for scope, encoded in scopes.items():
                head, tail = self._scope(scope)
                body.append(_field(b"\x12", b"".join([head, *encoded, tail])))  # Resource{Items}.scope_{items} (2)
            schema_url = resource.schema_url
            if schema_url:
                body.append(_field(b"\x1a", _utf8(schema_url)))  # Resource{Items}.schema_url (3)
            out.append(_field(b"\x0a", b"".join(body)))  # Export{Signal}ServiceRequest.resource_{items} (1)
        return b"".join(out)

    def _resource(self, resource: Any) -> bytes:
        """``ResourceSpans.resource`` / ``ResourceLogs.resource`` (field 1), kept by identity."""
        kept = self._resources.get(id(resource))
        if kept is not None and kept[0] is resource:
            return kept[1]
        parts: list[bytes] = []
        self._attributes(parts.append, resource.attributes, _RESOURCE_ATTRIBUTE)
        encoded = _field(b"\x0a", b"".join(parts))
        self._keep(self._resources, id(resource), (resource, encoded))
        return encoded

    def _scope(self, scope: Any) -> tuple[bytes, bytes]:
        """``Scope{Spans,Logs}.scope`` (field 1) and ``.schema_url`` (field 3), kept by identity."""
        if scope is None:
            return _EMPTY_SUBMESSAGE, b""
        kept = self._scopes.get(id(scope))
        if kept is not None and kept[0] is scope:
            return kept[1], kept[2]
        parts: list[bytes] = []
        if scope.name:
            parts.append(_field(b"\x0a", _utf8(scope.name)))
        if scope.version:
            parts.append(_field(b"\x12", _utf8(scope.version)))
        self._attributes(parts.append, scope.attributes, _SCOPE_ATTRIBUTE)
        head = _field(b"\x0a", b"".join(parts))
        tail = _field(b"\x1a", _utf8(scope.schema_url)) if scope.schema_url else b""
        self._keep(self._scopes, id(scope), (scope, head, tail))
        return head, tail

    def _keep(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        """Add to a bounded table, emptying it first when full."""
        if len(table) >= self._max_kept:
            table.clear()
        table[key] = value

    def _attributes(self, add: Callable[[bytes], None], attributes: Any, tag: bytes) -> None:
        """Add ``tag`` + length + ``KeyValue`` per attribute; one that cannot be encoded is logged and left out.

        Per key, the key's own bytes are kept, and so are the length-prefixed ``KeyValue``
        bytes of values that are exactly a ``str`` or an ``int`` (not bools or floats:
        ``True == 1`` and ``0.0 == -0.0`` would collide as dict keys). A key that reaches
        ``max_values_per_key`` different values keeps no more values.
        """
        keys = self._keys
        # ``for key in`` + ``[key]`` rather than ``.items()``: the SDK's attributes are a Mapping
        # written in Python, whose ItemsView costs twice as much per span.
        for key in attributes:
            try:
                value = attributes[key]
                state = keys.get(key)
                if state is None:
                    state = self._key_state(key)
                cls = value.__class__
                values = state[1]
                if values is not None and (cls is str or cls is int):
                    encoded = values.get(value)
                    if encoded is not None:
                        add(tag)
                        add(encoded)
                        continue
                else:
                    values = None
                if cls is str:
                    value_bytes = value.encode("utf-8")
                    n = len(value_bytes)
                    body = state[0] + (_STRING_VALUES[n] + value_bytes if n < _N_STRING_VALUES
                                       else _field(b"\x12", _field(b"\x0a", value_bytes)))
                else:
                    body = state[0] + _field(b"\x12", _any_value(value))
            except Exception as error:
                _logger.exception("Failed to encode key %s: %s", key, error)
                continue
            n = len(body)
            encoded = (_SMALL_VARINTS[n] if n < _N_SMALL else _varint_slow(n)) + body
            add(tag)
            add(encoded)
            if values is not None:
                if len(values) < self._max_values:
                    values[value] = encoded
                else:
                    state[1] = None  # too many different values: keep none more for this key

    def _key_state(self, key: Any) -> list[Any]:
        """``[KeyValue.key field bytes, kept values or None]`` for ``key``, kept while under ``max_keys``."""
        key_bytes = _utf8(key)
        head = _field(b"\x0a", key_bytes) if key_bytes else b""
        if len(self._keys) >= self._max_keys:
            return [head, None]
        state = self._keys[key] = [head, {}]
        return state


class SpanEncoder(_BatchEncoder):
    """Encodes span batches to ``ExportTraceServiceRequest`` bytes, keeping what repeats between batches.

    Keep one per exporter: the kept bytes are what make it fast. Besides what
    :class:`_BatchEncoder` keeps, at most ``max_kept`` span names and statuses.
    Safe to share between threads.
    """

    def __init__(self, *, max_kept: int = 256, max_keys: int = 256, max_values_per_key: int = 64) -> None:
        """Bound what is kept between batches."""
        super().__init__(max_kept=max_kept, max_keys=max_keys, max_values_per_key=max_values_per_key)
        self._names: dict[Any, bytes] = {}
        self._statuses: dict[int, tuple[Any, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized ``ExportTraceServiceRequest`` for ``spans``, grouped by resource, then scope."""
        return self._encode_batch(spans, self._span)

    def _span(self, span: ReadableSpan, trace_ids: dict[int, bytes]) -> bytes:
        """``ScopeSpans.spans`` (field 2) for one span, its fields in field-number order.

        ``trace_ids`` holds this batch's encoded trace ids (a trace's spans share one).
        """
        context = span.context  # a ReadableSpan always has one: it was made from its SpanContext
        assert context is not None
        trace_id = context.trace_id
        head = trace_ids.get(trace_id)
        if head is None:  # trace_id (1)
            head = trace_ids[trace_id] = b"\x0a\x10" + trace_id.to_bytes(16, "big") + b"\x12\x08"
        parts = [head + context.span_id.to_bytes(8, "big")]  # span_id (2)
        add = parts.append
        trace_state = context.trace_state
        if trace_state is not DEFAULT_TRACE_STATE and trace_state:  # trace_state (3)
            add(_field(b"\x1a", ",".join([f"{k}={v}" for k, v in trace_state.items()]).encode("utf-8")))
        parent = span.parent
        if parent:  # parent_span_id (4)
            add(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        name = span.name
        encoded = self._names.get(name)
        if encoded is None:  # name (5)
            encoded = _field(b"\x2a", _utf8(name)) if name else b""
            self._keep(self._names, name, encoded)
        add(encoded)
        span_kind = span.kind
        kind: int = (1 if span_kind is _INTERNAL else 2 if span_kind is _SERVER else 3 if span_kind is _CLIENT
                     else 4 if span_kind is _PRODUCER else 5 if span_kind is _CONSUMER else _KIND_VALUES[span_kind])
        start, end = span.start_time, span.end_time
        if start and end:  # kind (6), start_time_unix_nano (7), end_time_unix_nano (8)
            add(_KIND_AND_TIMES.pack(0x30, kind, 0x39, start, 0x41, end))
        else:
            add(bytes((0x30, kind)))
            if start:
                add(b"\x39" + _FIXED64.pack(start))
            if end:
                add(b"\x41" + _FIXED64.pack(end))
        self._attributes(add, span.attributes, _SPAN_ATTRIBUTE)  # attributes (9)
        dropped = span.dropped_attributes
        if dropped:  # dropped_attributes_count (10)
            add(b"\x50" + _varint(dropped))
        events = span.events
        if events:  # events (11)
            for event in events:
                add(self._event(event))
        dropped = span.dropped_events
        if dropped:  # dropped_events_count (12)
            add(b"\x60" + _varint(dropped))
        links = span.links
        if links:  # links (13)
            for link in links:
                add(self._link(link))
        dropped = span.dropped_links
        if dropped:  # dropped_links_count (14)
            add(b"\x70" + _varint(dropped))
        status = span.status
        if status is not None:  # status (15), kept by identity (spans share the default one)
            kept = self._statuses.get(id(status))
            if kept is not None and kept[0] is status:
                add(kept[1])
            else:
                encoded = _status(status)
                self._keep(self._statuses, id(status), (status, encoded))
                add(encoded)
        add(_SPAN_FLAGS_REMOTE if parent and parent.is_remote else _SPAN_FLAGS_LOCAL)  # flags (16)
        body = b"".join(parts)
        n = len(body)
        return b"\x12" + (_SMALL_VARINTS[n] if n < _N_SMALL else _varint_slow(n)) + body

    def _event(self, event: Any) -> bytes:
        """``Span.events`` (field 11) for one event."""
        parts: list[bytes] = []
        if event.timestamp:  # time_unix_nano (1)
            parts.append(b"\x09" + _FIXED64.pack(event.timestamp))
        if event.name:  # name (2)
            parts.append(_field(b"\x12", _utf8(event.name)))
        if event.attributes:  # attributes (3)
            self._attributes(parts.append, event.attributes, _EVENT_ATTRIBUTE)
        if event.dropped_attributes:  # dropped_attributes_count (4)
            parts.append(b"\x20" + _varint(event.dropped_attributes))
        return _field(b"\x5a", b"".join(parts))

    def _link(self, link: Any) -> bytes:
        """``Span.links`` (field 13) for one link; its trace state is not sent (nor by the SDK encoder)."""
        context = link.context
        parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big")
                 + b"\x12\x08" + context.span_id.to_bytes(8, "big")]  # trace_id (1), span_id (2)
        if link.attributes:  # attributes (4)
            self._attributes(parts.append, link.attributes, _LINK_ATTRIBUTE)
        if link.dropped_attributes:  # dropped_attributes_count (5)
            parts.append(b"\x28" + _varint(link.dropped_attributes))
        parts.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)  # flags (6)
        return _field(b"\x6a", b"".join(parts))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` for ``spans``, with a fresh :class:`SpanEncoder`.

    Nothing is kept between calls; an exporter should own a :class:`SpanEncoder` instead.
    """
    return SpanEncoder().encode(spans)


class LogEncoder(_BatchEncoder):
    """Encodes log record batches to ``ExportLogsServiceRequest`` bytes, keeping what repeats between batches.

    Takes what the SDK hands a log record exporter (``ReadableLogRecord`` or
    ``ReadWriteLogRecord``). Keep one per exporter. Besides what the base keeps, at
    most ``max_kept`` severity texts and event names. Safe to share between threads.
    """

    def __init__(self, *, max_kept: int = 256, max_keys: int = 256, max_values_per_key: int = 64) -> None:
        """Bound what is kept between batches."""
        super().__init__(max_kept=max_kept, max_keys=max_keys, max_values_per_key=max_values_per_key)
        self._texts: dict[Any, bytes] = {}
        self._event_names: dict[Any, bytes] = {}

    def encode(self, batch: Sequence[ReadableLogRecord]) -> bytes:
        """The serialized ``ExportLogsServiceRequest`` for ``batch``, grouped by resource, then scope.

        Raises what the SDK's encoder raises on a body it cannot encode (an unknown type, an
        int outside int64): the whole batch fails, as it does with the SDK's exporter.
        """
        return self._encode_batch(batch, self._log_record)

    def _log_record(self, readable: ReadableLogRecord, trace_ids: dict[int, bytes]) -> bytes:
        """``ScopeLogs.log_records`` (field 2) for one record, its fields in field-number order.

        ``trace_ids`` holds this batch's encoded trace ids. A trace or span id or trace flags of 0
        (or None) are left out; the SDK's encoder leaves out 0 and fails the batch on None.
        """
        record = readable.log_record
        parts: list[bytes] = []
        add = parts.append
        timestamp = record.timestamp
        if timestamp:  # time_unix_nano (1)
            add(b"\x09" + _FIXED64.pack(timestamp))
        number = record.severity_number
        encoded = _SEVERITY_NUMBERS.get(id(number))
        if encoded is None:  # severity_number (2): not a SeverityNumber; the SDK sends its ``.value`` if any
            value = getattr(number, "value", None)
            encoded = b"\x10" + _varint(value & _UINT64_MASK) if value else b""
        add(encoded)
        text = record.severity_text
        if text:  # severity_text (3)
            encoded = self._texts.get(text)
            if encoded is None:
                encoded = _field(b"\x1a", _utf8(text))
                self._keep(self._texts, text, encoded)
            add(encoded)
        body = record.body
        if body.__class__ is str:  # body (5), always present
            body_bytes = body.encode("utf-8")
            n = len(body_bytes)
            add(_BODY_STRINGS[n] + body_bytes if n < _N_BODY_STRINGS else _field(b"\x2a", _field(b"\x0a", body_bytes)))
        elif body is None:
            add(_EMPTY_BODY)
        else:
            add(_field(b"\x2a", _any_value(body)))
        attributes = record.attributes
        if attributes:  # attributes (6)
            self._attributes(add, attributes, _LOG_ATTRIBUTE)
        dropped = readable.dropped_attributes
        if dropped:  # dropped_attributes_count (7)
            add(b"\x38" + _varint(dropped))
        flags = record.trace_flags
        if flags:  # flags (8)
            add(_LOG_FLAGS[flags] if 0 < flags < 256 else b"\x45" + _FIXED32.pack(flags))
        trace_id = record.trace_id
        if trace_id:  # trace_id (9)
            encoded = trace_ids.get(trace_id)
            if encoded is None:
                encoded = trace_ids[trace_id] = b"\x4a\x10" + trace_id.to_bytes(16, "big")
            add(encoded)
        span_id = record.span_id
        if span_id:  # span_id (10)
            add(b"\x52\x08" + span_id.to_bytes(8, "big"))
        observed = record.observed_timestamp
        if observed:  # observed_time_unix_nano (11)
            add(b"\x59" + _FIXED64.pack(observed))
        name = record.event_name
        if name:  # event_name (12)
            encoded = self._event_names.get(name)
            if encoded is None:
                encoded = _field(b"\x62", _utf8(name))
                self._keep(self._event_names, name, encoded)
            add(encoded)
        data = b"".join(parts)
        n = len(data)
        return b"\x12" + (_SMALL_VARINTS[n] if n < _N_SMALL else _varint_slow(n)) + data


def encode_logs(batch: Sequence[ReadableLogRecord]) -> bytes:
    """The serialized ``ExportLogsServiceRequest`` for ``batch``, with a fresh :class:`LogEncoder`.

    Nothing is kept between calls; an exporter should own a :class:`LogEncoder` instead.
    """
    return LogEncoder().encode(batch)
