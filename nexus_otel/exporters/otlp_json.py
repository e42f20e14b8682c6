"""Spans as OTLP/JSON (the OTLP file format): one ``ExportTraceServiceRequest`` per line.

The encoding follows the OTLP JSON rules (hex trace and span ids, lowerCamelCase
keys, 64-bit integers as strings), so a file written here can be fed to an
OpenTelemetry Collector's ``otlpjsonfile`` receiver. Decoding reads the same
shape back into flat :class:`SpanRecord` objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

_KIND = {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}  # SpanKind enum value -> OTLP SPAN_KIND_* number
KIND_NAMES = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attrs: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attrs or {}).items()]


def _span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    out: dict[str, Any] = {
        "traceId": format(ctx.trace_id, "032x"),
        "spanId": format(ctx.span_id, "016x"),
        "name": span.name,
        "kind": _KIND.get(span.kind.value, 1),
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": _attributes(span.attributes),
        "status": {"code": _STATUS[span.status.status_code]},
    }
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)}
            for e in span.events
        ]
    return out


def encode(spans: Sequence[ReadableSpan]) -> str:
    """One OTLP/JSON ``ExportTraceServiceRequest`` line for ``spans``."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        resource, scopes = by_resource.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name if scope else "", (scope.version or "") if scope else "")
        scopes.setdefault(key, []).append(_span(span))
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes if resource else {})},
                "scopeSpans": [
                    {"scope": {"name": name, "version": version}, "spans": items}
                    for (name, version), items in scopes.items()
                ],
            }
            for resource, scopes in by_resource.values()
        ]
    }
    return json.dumps(request, separators=(",", ":"), default=str)


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


def _plain(value: dict[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_plain(v) for v in value["arrayValue"].get("values", [])]
    return None


def _attr_dict(items: Iterable[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: _plain(item.get("value", {})) for item in items or ()}


def decode(line: str) -> list[SpanRecord]:
    """The spans of one OTLP/JSON line (a ``ValueError`` if it is not one)."""
    request = json.loads(line)
    records = []
    for rs in request.get("resourceSpans", []):
        service = str(_attr_dict(rs.get("resource", {}).get("attributes")).get("service.name", ""))
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                status = sp.get("status", {})
                records.append(SpanRecord(
                    trace_id=sp["traceId"], span_id=sp["spanId"], parent_id=sp.get("parentSpanId") or None,
                    name=sp.get("name", ""), kind=KIND_NAMES.get(int(sp.get("kind", 1)), "INTERNAL"),
                    start_ns=int(sp.get("startTimeUnixNano", 0)), end_ns=int(sp.get("endTimeUnixNano", 0)),
                    status={0: "UNSET", 1: "OK", 2: "ERROR"}.get(int(status.get("code", 0)), "UNSET"),
                    status_message=status.get("message", ""), service=service,
                    attributes=_attr_dict(sp.get("attributes")),
                    events=[{"name": e.get("name", ""), "attributes": _attr_dict(e.get("attributes"))}
                            for e in sp.get("events", [])],
                ))
    return records
