"""A span processor that writes one log record when a workflow starts and one when it ends.

It reads only the workflow span: the names, the redacted inputs attribute the
host recorded, the status and the timing. It writes through the standard
``logging`` module with the workflow span as the current span, so the records
carry that span's ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import NonRecordingSpan, StatusCode

from ..logging.correlation import LogCorrelation
from ..telemetry import contract as c


class RequestLogProcessor(SpanProcessor):
    """``workflow started`` / ``workflow completed`` / ``workflow failed`` records for workflow spans."""

    def __init__(self, logger: logging.Logger, *, level: int = logging.INFO, include_inputs: bool = True) -> None:
        self.logger = logger
        self.level = level
        self.include_inputs = include_inputs

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attrs = span.attributes or {}
        workflow = attrs.get(c.WORKFLOW_NAME)
        if workflow is None or not self.logger.isEnabledFor(self.level):
            return
        fields: dict[str, Any] = {
            "event": "workflow.started", "workflow": workflow,
            "workflow_id": attrs.get(c.WORKFLOW_ID), "channel": attrs.get(c.CHANNEL),
            "session_id": attrs.get(c.SESSION_ID),
        }
        if self.include_inputs and c.WORKFLOW_INPUTS in attrs:
            fields["inputs"] = _json_or_text(attrs[c.WORKFLOW_INPUTS])
        self._log(span.get_span_context(), "workflow started", fields)

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        workflow = attrs.get(c.WORKFLOW_NAME)
        if workflow is None or not self.logger.isEnabledFor(self.level):
            return
        failed = span.status.status_code is StatusCode.ERROR
        duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        fields: dict[str, Any] = {
            "event": "workflow.failed" if failed else "workflow.completed", "workflow": workflow,
            "workflow_id": attrs.get(c.WORKFLOW_ID), "channel": attrs.get(c.CHANNEL),
            "session_id": attrs.get(c.SESSION_ID),
            "status": c.STATUS_FAILED if failed else c.STATUS_COMPLETED,
            "duration_ms": round(duration, 3),
        }
        if failed:
            fields["error_type"] = attrs.get(c.ERROR_TYPE)
        if attrs.get("nexus.cache.hit") is not None:
            fields["cache_hit"] = attrs["nexus.cache.hit"]
        self._log(span.context, "workflow failed" if failed else "workflow completed", fields,
                  logging.WARNING if failed and self.level < logging.WARNING else self.level)

    def _log(self, span_context: Any, message: str, fields: dict[str, Any], level: int | None = None) -> None:
        extra = {k: v for k, v in fields.items() if v is not None}
        if not LogCorrelation.active():  # without the record factory, say it ourselves
            extra["trace_id"] = f"{span_context.trace_id:032x}"
            extra["span_id"] = f"{span_context.span_id:016x}"
        token = context_api.attach(trace_api.set_span_in_context(NonRecordingSpan(span_context)))
        try:
            self.logger.log(level or self.level, message, extra=extra)
        finally:
            context_api.detach(token)


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
