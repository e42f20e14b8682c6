"""Links from the spans of work done after an execution returned (webhook attempts, audit batches) to it.

Such work runs in a trace of its own (its retries must not stretch the execution's
trace, nor its duration); a span link names the execution's workflow span, as
OpenTelemetry's messaging conventions link a consumer to its producer.
"""

from __future__ import annotations

from opentelemetry.trace import INVALID_SPAN_ID, INVALID_TRACE_ID, Link, SpanContext, TraceFlags


def execution_link(trace_id: str | None, span_id: str | None, sampled: bool) -> Link | None:
    """A link to the workflow span ``trace_id``/``span_id`` (hex, as an execution record holds them), or None
    if the record has none (telemetry was disabled) or they are not valid ids."""
    if not trace_id or not span_id:
        return None
    try:
        tid, sid = int(trace_id, 16), int(span_id, 16)
    except ValueError:
        return None
    if tid == INVALID_TRACE_ID or sid == INVALID_SPAN_ID or tid >> 128 or sid >> 64:
        return None
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    return Link(SpanContext(tid, sid, is_remote=True, trace_flags=flags))
