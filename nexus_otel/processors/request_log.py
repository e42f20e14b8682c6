"""A span processor that writes one log record when a workflow starts and one when it ends.

It reads only the workflow span: the names, the redacted inputs attribute the
host recorded, the status and the timing. On the workflow's thread it does no
more than copy those few values onto a queue; a worker thread builds the
``logging`` records (stamped with the span's time and its ``trace_id`` and
``span_id``) and hands them to the logger's handlers. So request logging costs
a workflow microseconds, whatever the handlers do.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from ..telemetry import contract as c

_STOP = object()


class RequestLogProcessor(SpanProcessor):
    """``workflow started`` / ``workflow completed`` / ``workflow failed`` records for workflow spans."""

    def __init__(self, logger: logging.Logger, *, level: int = logging.INFO, include_inputs: bool = True) -> None:
        self.logger = logger
        self.level = level
        self.include_inputs = include_inputs
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="nexus-otel-request-log", daemon=True)
        self._thread.start()
        self._stopped = False

    # -- on the workflow's thread: copy a few values, nothing more ----------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attrs = span.attributes
        if not attrs or c.WORKFLOW_NAME not in attrs or self._stopped or not self.logger.isEnabledFor(self.level):
            return
        ctx = span.get_span_context()
        inputs = attrs.get(c.WORKFLOW_INPUTS) if self.include_inputs else None
        self._put(("started", ctx.trace_id, ctx.span_id, span.start_time, attrs.get(c.WORKFLOW_NAME),
                   attrs.get(c.WORKFLOW_ID), attrs.get(c.CHANNEL), attrs.get(c.SESSION_ID), inputs, None))

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes
        if not attrs or c.WORKFLOW_NAME not in attrs or self._stopped:
            return
        failed = span.status.status_code is StatusCode.ERROR
        level = logging.WARNING if failed and self.level < logging.WARNING else self.level
        if not self.logger.isEnabledFor(level):
            return
        ctx = span.context
        extra = ((span.end_time or 0) - (span.start_time or 0), attrs.get(c.ERROR_TYPE) if failed else None,
                 attrs.get("nexus.cache.hit"))
        self._put(("failed" if failed else "completed", ctx.trace_id, ctx.span_id, span.end_time,
                   attrs.get(c.WORKFLOW_NAME), attrs.get(c.WORKFLOW_ID), attrs.get(c.CHANNEL),
                   attrs.get(c.SESSION_ID), None, extra))

    def _put(self, item: tuple[Any, ...]) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(item)

    # -- on the worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._emit(item)
            except Exception:  # a broken handler must not stop request logging
                logging.getLogger("nexus_otel.requests.worker").exception("request log record failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _emit(self, item: tuple[Any, ...]) -> None:
        kind, trace_id, span_id, time_ns, workflow, workflow_id, channel, session_id, inputs, end = item
        fields: dict[str, Any] = {"event": f"workflow.{kind}", "workflow": workflow, "workflow_id": workflow_id,
                                  "channel": channel, "session_id": session_id}
        if kind == "started":
            message, level = "workflow started", self.level
            if inputs is not None:
                fields["inputs"] = _json_or_text(inputs)
        else:
            duration_ns, error_type, cache_hit = end
            failed = kind == "failed"
            message = "workflow failed" if failed else "workflow completed"
            level = logging.WARNING if failed and self.level < logging.WARNING else self.level
            fields["status"] = c.STATUS_FAILED if failed else c.STATUS_COMPLETED
            fields["duration_ms"] = round(duration_ns / 1e6, 3)
            fields["error_type"] = error_type
            fields["cache_hit"] = cache_hit
        record = self.logger.makeRecord(self.logger.name, level, __file__, 0, message, (), None)
        if time_ns:
            record.created = time_ns / 1e9
            record.msecs = (time_ns // 1_000_000) % 1000
        record.__dict__.update({k: v for k, v in fields.items() if v is not None})
        record.trace_id = f"{trace_id:032x}"
        record.span_id = f"{span_id:016x}"
        self.logger.handle(record)

    # -- lifecycle ------------------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Wait until every queued record has been handed to the handlers."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._stopped:
            return
        self.force_flush()
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(5)


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
