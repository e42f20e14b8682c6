"""The local store's line format: one JSON object per exported batch, cheap to write.

Writing happens on the span processor's thread for every span an app makes,
so the format is built for speed: the resource once per line, then one flat
object per span with short keys::

    {"v": 1, "resource": {"service.name": "shop", ...},
     "spans": [{"t": trace_id, "s": span_id, "p": parent_id, "n": name, "k": kind,
                "b": start_ns, "e": end_ns, "c": status_code, "m": status_message,
                "a": {attributes}, "ev": [[name, time_ns, {attributes}], ...]}, ...]}

Ids are lowercase hex, as Jaeger and the W3C trace context show them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from ..errors import InvalidDataError

VERSION = 1
KIND_NAMES = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_KIND_VALUES = {id(kind): kind.value for kind in SpanKind}  # by identity: hashing an enum member is slow
_dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
_orjson_dumps = orjson.dumps


def _items(spans: Sequence[ReadableSpan]) -> list[tuple[Any, list[dict[str, Any]]]]:
    """(resource, [span objects]) per resource, in order of first appearance."""
    by_resource: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
    trace_hex: dict[int, str] = {}  # spans of a batch share few trace ids
    kinds, unset, error = _KIND_VALUES, StatusCode.UNSET, StatusCode.ERROR
    for span in spans:
        ctx = span.context
        parent = span.parent
        status = span.status
        attributes = span.attributes
        trace_id = ctx.trace_id
        hex_id = trace_hex.get(trace_id)
        if hex_id is None:
            hex_id = trace_hex[trace_id] = f"{trace_id:032x}"
        code = status.status_code  # enum members compared by identity: hashing one is a Python call
        item: dict[str, Any] = {
            "t": hex_id, "s": f"{ctx.span_id:016x}",
            "n": span.name, "k": kinds[id(span.kind)], "b": span.start_time, "e": span.end_time,
            "c": "UNSET" if code is unset else "ERROR" if code is error else "OK",
            # Key by key: dict(mapping) on the SDK's attribute mapping takes the slow path.
            "a": {key: attributes[key] for key in attributes} if attributes else {},
        }
        if parent is not None:
            item["p"] = f"{parent.span_id:016x}"
        if status.description:
            item["m"] = status.description
        events = span.events
        if events:
            item["ev"] = [[e.name, e.timestamp, dict(e.attributes or {})] for e in events]
        resource = span.resource
        group = by_resource.get(id(resource))
        if group is None:
            group = by_resource[id(resource)] = (resource, [])
        group[1].append(item)
    return list(by_resource.values())


def _batch(resource: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    attrs = dict(resource.attributes) if resource is not None else {}
    return {"v": VERSION, "resource": attrs, "spans": items}


def encode(spans: Sequence[ReadableSpan]) -> str:
    """One line (without the newline) per resource in the batch, with the standard library's JSON encoder.

    The reference for :func:`encode_lines`, which writes the same JSON faster.
    """
    return "\n".join(_dumps(_batch(resource, items)) for resource, items in _items(spans))


def encode_lines(spans: Sequence[ReadableSpan]) -> bytes:
    """The lines of :func:`encode` as UTF-8, each ending in a newline, written by orjson.

    orjson builds the same JSON as the standard library encoder several times
    faster (``benchmarks/local_store.py``); two values differ in spelling, not in
    meaning: a NaN or infinite float is ``null`` (the standard library writes the
    non-JSON ``NaN``), and a value JSON cannot hold is written as ``str(value)``
    by both. A batch orjson refuses (an int beyond 64 bits, text that is not
    valid UTF-8) is written by the standard library encoder instead.
    """
    out = []
    for resource, items in _items(spans):
        batch = _batch(resource, items)
        try:
            out.append(_orjson_dumps(batch, default=str, option=orjson.OPT_APPEND_NEWLINE))
        except orjson.JSONEncodeError:
            out.append((_dumps(batch) + "\n").encode("utf-8", "backslashreplace"))
    return b"".join(out)


@dataclass(slots=True)
class SpanRecord:
    """One span read back from the store."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    service: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def decode(line: str) -> list[SpanRecord]:
    """The spans of one line (``ValueError``/``KeyError`` if it is not one)."""
    batch = json.loads(line)
    if batch.get("v") != VERSION:
        raise InvalidDataError(f"unknown span file version {batch.get('v')!r}")
    service = str(batch.get("resource", {}).get("service.name", ""))
    records = []
    for sp in batch["spans"]:
        kind = int(sp.get("k", 0))
        records.append(SpanRecord(
            trace_id=sp["t"], span_id=sp["s"], parent_id=sp.get("p"), name=sp["n"],
            kind=KIND_NAMES[kind] if 0 <= kind < len(KIND_NAMES) else "INTERNAL",
            start_ns=int(sp["b"] or 0), end_ns=int(sp["e"] or 0), status=sp.get("c", "UNSET"),
            status_message=sp.get("m", ""), service=service, attributes=sp.get("a", {}),
            events=[{"name": e[0], "time_ns": e[1], "attributes": e[2]} for e in sp.get("ev", [])],
        ))
    return records
