"""The local log store's line format: one JSON object per exported batch, cheap to write.

Like :mod:`.spanfile` for spans: the resource once per line, then one flat
object per log record with short keys, a key left out when it has no value::

    {"v": 1, "resource": {"service.name": "shop", ...},
     "logs": [{"ts": time_ns, "sn": severity_number, "st": severity_text, "b": body,
               "t": trace_id, "s": span_id, "ev": event_name, "sc": scope, "a": {attributes},
               "r": {resource, only when not the line's}}, ...]}

Ids are lowercase hex (a trace id of 0, a record outside any trace, has none).
The time is the record's own timestamp, else when the SDK observed it. A body
that is not a string (a mapping, a list, a number) is written as its JSON text,
so every reader gets the one type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord

from ..errors import InvalidDataError

VERSION = 1
SEVERITY_NAMES = ((21, "FATAL"), (17, "ERROR"), (13, "WARN"), (9, "INFO"), (5, "DEBUG"), (1, "TRACE"))
"""The lowest severity number of each OpenTelemetry severity range, highest first."""

_dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
_orjson_dumps = orjson.dumps


def severity_name(number: int) -> str:
    """The OpenTelemetry short name of a severity number's range (``INFO`` for 9 to 12), ``-`` for 0."""
    for low, name in SEVERITY_NAMES:
        if number >= low:
            return name
    return "-"


def body_text(body: Any) -> str:
    """The body as the store keeps it: a string as it is, nothing as ``""``, anything else as JSON text."""
    if isinstance(body, str):
        return body
    if body is None:
        return ""
    if isinstance(body, bytes):
        return body.decode("utf-8", "backslashreplace")
    try:
        return _orjson_dumps(body, default=str).decode("utf-8")
    except (orjson.JSONEncodeError, TypeError):
        return _dumps(body)


def trace_needle(trace_prefix: str) -> str:
    """Text that every line holding a record of a trace whose id starts with ``trace_prefix`` contains.

    Both encoders write ``"t":"<hex>`` with no space (orjson, and the fallback's separators).
    """
    return f'"t":"{trace_prefix}'


def _resource_attributes(resource: Any) -> dict[str, Any]:
    return dict(resource.attributes) if resource is not None else {}


def _item(record: ReadableLogRecord | ReadWriteLogRecord, resource: Any) -> dict[str, Any]:
    lr = record.log_record
    number: Any = lr.severity_number  # a SeverityNumber, or a plain int given to Logger.emit
    attributes = lr.attributes
    item: dict[str, Any] = {
        "ts": lr.timestamp or lr.observed_timestamp or 0,
        "sn": int(getattr(number, "value", number) or 0),
        "b": body_text(lr.body),
        # Key by key: dict(mapping) on the SDK's attribute mapping takes the slow path.
        "a": {key: attributes[key] for key in attributes} if attributes else {},
    }
    if lr.severity_text:
        item["st"] = lr.severity_text
    if lr.trace_id:
        item["t"] = f"{lr.trace_id:032x}"
    if lr.span_id:
        item["s"] = f"{lr.span_id:016x}"
    event_name = getattr(lr, "event_name", None)
    if event_name:
        item["ev"] = event_name
    scope = record.instrumentation_scope
    if scope is not None and scope.name:
        item["sc"] = scope.name
    if record.resource is not resource and record.resource != resource:
        item["r"] = _resource_attributes(record.resource)  # a batch from more than one provider
    return item


def encode_lines(batch: Sequence[ReadableLogRecord | ReadWriteLogRecord]) -> bytes:
    """The batch as one line ending in a newline, UTF-8: the first record's resource for all of them.

    A record from another resource (one processor shared by two providers) carries its
    own under ``"r"``. Written by orjson; a line orjson refuses (an int beyond 64 bits,
    text that is not valid UTF-8) is written by the standard library encoder instead,
    as in :mod:`.spanfile`.
    """
    if not batch:
        return b""
    resource = batch[0].resource
    line = {"v": VERSION, "resource": _resource_attributes(resource),
            "logs": [_item(record, resource) for record in batch]}
    try:
        return _orjson_dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return (_dumps(line) + "\n").encode("utf-8", "backslashreplace")


@dataclass(slots=True)
class LogLine:
    """One log record read back from the store."""

    time_ns: int
    severity_number: int
    severity_text: str
    body: str
    trace_id: str | None
    span_id: str | None
    event_name: str | None
    scope: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> str:
        """The severity text the record carries, else its range's name (``WARN``)."""
        return self.severity_text or severity_name(self.severity_number)


def decode(line: str) -> list[LogLine]:
    """The log records of one line (``ValueError``/``KeyError``/``TypeError`` if it is not one)."""
    batch = orjson.loads(line)
    if batch.get("v") != VERSION:
        raise InvalidDataError(f"unknown log file version {batch.get('v')!r}")
    resource = batch.get("resource", {})
    return [_log_line(item, item.get("r", resource)) for item in batch["logs"]]


def _log_line(item: dict[str, Any], resource: dict[str, Any]) -> LogLine:
    attributes = item.get("a", {})
    if not isinstance(attributes, dict):
        raise InvalidDataError(f"attributes are a {type(attributes).__name__}, not an object")
    return LogLine(
        time_ns=int(item["ts"]), severity_number=int(item.get("sn", 0)),
        severity_text=str(item.get("st", "")), body=str(item.get("b", "")),
        trace_id=item.get("t"), span_id=item.get("s"), event_name=item.get("ev"),
        scope=str(item.get("sc", "")), service=str(resource.get("service.name", "")), attributes=attributes,
    )
