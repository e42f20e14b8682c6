"""One execution record as an OpenTelemetry log record: the request log in the logs signal.

The record path sees every execution, whatever the trace sampler kept, so the
log record takes its trace and span ids (and the sampled flag) from the
:class:`~nexus_otel.records.ExecutionRecord`, not from the current context: an
operator can go from any execution's log lines to its trace id, and from a
kept trace to its log lines. Names and attributes are the telemetry
contract's (``docs/logs.md``); ``error.type``, ``exception.type``,
``exception.message`` and ``session.id`` are OpenTelemetry's semantic
conventions, ``event_name`` is the logs data model's field. The listed baggage keys the
execution came with (``NEXUS_OTEL_BAGGAGE_KEYS``, :mod:`nexus_otel.baggage`) are attributes named
by the key itself, as on the workflow span.

Built on the request log's worker thread, never on a workflow's.
"""

from __future__ import annotations

import functools
import logging
import time

from opentelemetry import trace as trace_api
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.context import Context
from opentelemetry.util.types import AnyValue

from ..baggage import add_under
from ..records import ExecutionRecord
from ..telemetry import contract

_EVENTS = {
    "running": contract.LOG_WORKFLOW_STARTED,
    contract.STATUS_COMPLETED: contract.LOG_WORKFLOW_COMPLETED,
    contract.STATUS_FAILED: contract.LOG_WORKFLOW_FAILED,
    contract.STATUS_REJECTED: contract.LOG_WORKFLOW_REJECTED,
}
_BASE_SEVERITIES = (
    (logging.CRITICAL, SeverityNumber.FATAL), (logging.ERROR, SeverityNumber.ERROR),
    (logging.WARNING, SeverityNumber.WARN), (logging.INFO, SeverityNumber.INFO),
    (logging.DEBUG, SeverityNumber.DEBUG),
)


@functools.lru_cache(maxsize=64)  # a request log has one or two levels; the enum lookups cost more than the rest
def severity(level: int) -> tuple[SeverityNumber, str]:
    """The OTel severity number and text (``"INFO"``, ``"WARN"``) of a Python ``logging`` level.

    A level between two standard ones maps to the range of the lower (``INFO`` + 1 is ``INFO2``),
    up to the range's fourth step, as the logging handler of the OpenTelemetry SDK maps them.
    """
    for base, number in _BASE_SEVERITIES:
        if level >= base:
            chosen = SeverityNumber(min(number.value + min(level - base, 3), SeverityNumber.FATAL4.value))
            return chosen, chosen.name
    return SeverityNumber.UNSPECIFIED, logging.getLevelName(level)


def execution_log_record(record: ExecutionRecord, level: int, *, include_inputs: bool = True) -> LogRecord:
    """The log record of ``record`` (a start when its status is ``running``, else its end), at ``level``.

    ``level`` is the Python ``logging`` level the request log chose for it (the plugin's
    level; ``WARNING`` for a failure or rejection), so both outputs agree.
    """
    started = record.status == "running"
    attributes: dict[str, AnyValue] = {
        contract.WORKFLOW_NAME: record.workflow,
        contract.WORKFLOW_ID: record.workflow_id,
        contract.CHANNEL: record.channel,
    }
    if record.session_id is not None:
        attributes[contract.SESSION_ID] = record.session_id
    add_under(attributes, record.baggage)
    if started:
        when = record.started_at
        if include_inputs and record.inputs is not None:
            attributes[contract.WORKFLOW_INPUTS] = record.inputs  # redacted and bounded when it was made
    else:
        when = record.ended_at if record.ended_at is not None else record.started_at
        attributes[contract.WORKFLOW_STATUS] = record.status
        attributes[contract.WORKFLOW_DURATION_ATTR] = float(record.duration or 0.0)
        if record.error_type is not None:
            attributes[contract.ERROR_TYPE] = record.error_type
            attributes[contract.EXCEPTION_TYPE] = record.error_type
            message = exception_message(record)
            if message:
                attributes[contract.EXCEPTION_MESSAGE] = message
        if record.cache_hit is not None:
            attributes[contract.CACHE_HIT] = record.cache_hit
    number, text = severity(level)
    return LogRecord(
        timestamp=int(when * 1e9),
        observed_timestamp=time.time_ns(),
        context=_context(record),
        severity_number=number,
        severity_text=text,
        body=f"workflow {'started' if started else record.status}",
        attributes=attributes,
        event_name=_EVENTS.get(record.status, f"nexus.workflow.{record.status}"),
    )


def exception_message(record: ExecutionRecord) -> str | None:
    """The message part of ``record.error`` (``"<type>: <message>"``, already redacted and cut)."""
    error = record.error
    if error is None:
        return None
    prefix = f"{record.error_type}: "
    return error[len(prefix):] if error.startswith(prefix) else error


def _context(record: ExecutionRecord) -> Context:
    """A context whose span is the execution's workflow span (sampled or not), or none."""
    if record.trace_id is None or record.span_id is None:  # telemetry off: no ids (not the worker's context)
        return trace_api.set_span_in_context(trace_api.INVALID_SPAN, Context())
    flags = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED if record.trace_sampled else trace_api.TraceFlags.DEFAULT)
    span_context = trace_api.SpanContext(int(record.trace_id, 16), int(record.span_id, 16), is_remote=False,
                                         trace_flags=flags)
    return trace_api.set_span_in_context(trace_api.NonRecordingSpan(span_context), Context())
