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
from dataclasses import dataclass, field
from typing import Any, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

VERSION = 1
KIND_NAMES = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS_NAMES = {StatusCode.UNSET: "UNSET", StatusCode.OK: "OK", StatusCode.ERROR: "ERROR"}
_dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode


_KINDS = {kind: kind.value for kind in SpanKind}


def encode(spans: Sequence[ReadableSpan]) -> str:
    """One line (without the newline) for a batch of spans sharing, usually, one resource."""
    lines = []
    by_resource: dict[int, tuple[Any, list[dict[str, Any]]]] = {}
    kinds, statuses = _KINDS, _STATUS_NAMES
    for span in spans:
        ctx = span.context
        parent = span.parent
        status = span.status
        attributes = span.attributes
        item: dict[str, Any] = {
            "t": f"{ctx.trace_id:032x}", "s": f"{ctx.span_id:016x}",
            "n": span.name, "k": kinds[span.kind], "b": span.start_time, "e": span.end_time,
            "c": statuses[status.status_code], "a": dict(attributes) if attributes else {},
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
    for resource, items in by_resource.values():
        attrs = dict(resource.attributes) if resource is not None else {}
        lines.append(_dumps({"v": VERSION, "resource": attrs, "spans": items}))
    return "\n".join(lines)


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
        raise ValueError(f"unknown span file version {batch.get('v')!r}")
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
