"""What downstream systems get from a finished workflow span: one flat record per execution."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from ..telemetry import contract as c


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat(timespec="microseconds")


def workflow_record(span: ReadableSpan) -> dict[str, Any] | None:
    """The execution a workflow span describes, or None for any other span."""
    attrs = span.attributes or {}
    workflow = attrs.get(c.WORKFLOW_NAME)
    if workflow is None or attrs.get(c.WORKFLOW_ID) is None:
        return None
    failed = span.status.status_code is StatusCode.ERROR
    start, end = span.start_time or 0, span.end_time or 0
    record: dict[str, Any] = {
        "workflow": str(workflow),
        "workflow_id": str(attrs[c.WORKFLOW_ID]),
        "status": c.STATUS_FAILED if failed else c.STATUS_COMPLETED,
        "duration": (end - start) / 1e9,
        "timestamp": start / 1e9,
        "started_at": _iso(start),
        "completed_at": _iso(end),
        "session_id": attrs.get(c.SESSION_ID),
        "channel": attrs.get(c.CHANNEL),
        "trace_id": f"{span.context.trace_id:032x}",
        "error_type": attrs.get(c.ERROR_TYPE) if failed else None,
        "error": (span.status.description or None) if failed else None,
    }
    if attrs.get("nexus.cache.hit") is not None:
        record["cache_hit"] = bool(attrs["nexus.cache.hit"])
    return record
