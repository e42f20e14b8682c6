"""Links from the spans of work done after an execution returned (webhook attempts, audit batches) to it.

Such work runs in a trace of its own (its retries must not stretch the execution's
trace, nor its duration); a span link names the execution's workflow span, as
OpenTelemetry's messaging conventions link a consumer to its producer.
Whatever that span code raises stays away from the delivery (:class:`SpanFailures`).
"""

from __future__ import annotations

import logging

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


class SpanFailures:
    """What a delivery's span code raised, kept away from the delivery: logged (the first time, then every
    1,000th) and counted. A failing span processor, redaction callback or exporter must never change
    whether, when or how often a payload or a row is delivered."""

    __slots__ = ("_log", "_what", "count")

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self.count = 0

    def failed(self, exc: BaseException) -> None:
        self.count += 1
        if self.count == 1 or self.count % 1000 == 0:
            self._log.error("%s failed (%d times so far; deliveries go on without them): %s: %s", self._what,
                            self.count, type(exc).__name__, exc)
