"""A record processor that writes one log record when a workflow starts and one when it ends.

It reads the execution's records (every execution, whatever the trace
sampler kept): the names, the redacted inputs, the status and the timing. On
the workflow's thread it does no more than put the record on a queue; a worker
thread builds the ``logging`` records (stamped with the execution's time and
its ``trace_id`` and ``span_id``) and hands them to the logger's handlers and,
given an OpenTelemetry ``Logger`` (``otel_logger``), emits the same records as
OpenTelemetry log records (:mod:`~nexus_otel.logs.execution_logs`) to its
provider's processors and exporters. So request logging costs a workflow
microseconds, whatever the handlers and exporters do; the worker takes records
in batches (``linger``, 50 ms), so it does not wake for every record. The queue
is bounded (``max_queued``): when handlers fall behind, workflows wait for room
(back-pressure) rather than records being dropped.

Which records are made: the processor's ``level`` decides what becomes an
OpenTelemetry log record, a level set on the ``logging`` logger itself quiets
both outputs, and a level the logger only inherits governs the ``logging``
lines alone (see ``docs/logs.md``). Each ``logging`` record carries
``nexus_request_log = True``, so a handler that brings ``logging`` records
into the logs signal skips it (the log record is already there) and no record
is exported twice.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

from opentelemetry._logs import Logger

from ..logs.capture import LogCapture
from ..logs.execution_logs import execution_log_record
from ..records import ExecutionRecord, RecordProcessor

_STOP = object()


def _reaches_a_handler(logger: logging.Logger) -> bool:
    """Whether a ``logging`` record of ``logger`` would reach a handler that writes it somewhere.

    With ``output=None`` the records propagate; when the only handler on their way is the logs
    signal's capture handler (which leaves them out: they are exported as log records of their
    own), making them is wasted work on the worker's thread, so the worker skips it. Without any
    handler, ``logging``'s last resort prints failures to stderr, as it always did: they are made.
    """
    capture = LogCapture.handler()
    seen = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if handler is not capture:
                return True
            seen = True
        current = current.parent if current.propagate else None
    return not seen


class _RequestLogRecord(logging.LogRecord):
    """A ``logging`` record of the request log: marked by a class attribute, so formatters that write
    every extra field (``JsonFormatter``) do not write the mark."""

    nexus_request_log = True


class RequestLogProcessor(RecordProcessor):
    """``workflow started`` / ``completed`` / ``failed`` / ``rejected`` records for every execution."""

    def __init__(self, logger: logging.Logger, *, level: int = logging.INFO, include_inputs: bool = True,
                 max_queued: int = 100_000, linger: float = 0.05, otel_logger: Logger | None = None) -> None:
        self.logger = logger
        self.otel_logger = otel_logger
        """Where the worker emits the OpenTelemetry log records (e.g. ``provider.get_logger(...)``); None: none."""
        self.linger = linger
        """Seconds the worker waits after a record arrives, so that it handles records in batches."""
        self.level = level
        self.include_inputs = include_inputs
        self.max_queued = max_queued
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="nexus-otel-request-log", daemon=True)
        self._started = False
        self._stopped = False

    def start(self) -> RequestLogProcessor:
        """Start the worker thread (until then records wait in the queue; a flush starts it too)."""
        with self._idle:
            if not self._started:
                self._started = True
                self._thread.start()
        return self

    # -- on the workflow's thread: queue the record, nothing more ----------------------------
    def on_start(self, record: ExecutionRecord) -> None:
        if self._stopped or not (self._exports(self.level) or self.logger.isEnabledFor(self.level)):
            return
        self._put(record)

    def on_end(self, record: ExecutionRecord) -> None:
        if self._stopped:
            return
        level = self._level(record)
        if not (self._exports(level) or self.logger.isEnabledFor(level)):
            return
        self._put(record)

    def _exports(self, level: int) -> bool:
        """Whether a record at ``level`` becomes an OTel log record: at the processor's level or above, unless the
        request log's own logger has a level of its own that is higher (that quiets both outputs). A level the
        logger only inherits (the root's ``WARNING``) governs the ``logging`` lines alone."""
        if self.otel_logger is None or level < self.level:
            return False
        own = self.logger.level
        return own == logging.NOTSET or level >= own

    def _put(self, item: ExecutionRecord) -> None:
        with self._idle:
            while self._pending >= self.max_queued and not self._stopped:
                self._idle.wait(0.1)  # back-pressure: the handlers are behind
            self._pending += 1
        self._queue.put(item)

    # -- on the worker thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if self.linger and batch[0] is not _STOP and not self._stopped:
                time.sleep(self.linger)  # let records gather: one wake-up per batch, not per record
            try:
                while True:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            lines = self.otel_logger is None or _reaches_a_handler(self.logger)
            for item in batch:
                if item is _STOP:
                    return
                level = self._level(item)
                if lines and self.logger.isEnabledFor(level):
                    try:
                        self._emit(item, level)
                    except Exception:  # a broken handler must not stop request logging
                        logging.getLogger("nexus_otel.requests.worker").exception("request log record failed")
                if self.otel_logger is not None and self._exports(level):
                    try:
                        self.otel_logger.emit(execution_log_record(item, level, include_inputs=self.include_inputs))
                    except Exception:  # nor a broken log record processor
                        logging.getLogger("nexus_otel.requests.worker").exception("request log record not emitted")
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()

    def _level(self, item: ExecutionRecord) -> int:
        """The plugin's level; ``WARNING`` at least for a failure or a rejection."""
        if item.status != "running" and item.failed and self.level < logging.WARNING:
            return logging.WARNING
        return self.level

    def _emit(self, item: ExecutionRecord, level: int) -> None:
        kind = "started" if item.status == "running" else item.status
        fields: dict[str, Any] = {"event": f"workflow.{kind}", "workflow": item.workflow,
                                  "workflow_id": item.workflow_id, "channel": item.channel,
                                  "session_id": item.session_id}
        when: float | None
        if kind == "started":
            message, when = "workflow started", item.started_at
            if item.inputs is not None and self.include_inputs:
                fields["inputs"] = _json_or_text(item.inputs)
        else:
            message = f"workflow {item.status}"
            when = item.ended_at
            fields["status"] = item.status
            fields["duration_ms"] = round((item.duration or 0.0) * 1e3, 3)
            fields["error_type"] = item.error_type
            fields["cache_hit"] = item.cache_hit
        record = self.logger.makeRecord(self.logger.name, level, __file__, 0, message, (), None)
        _mark(record)
        if when:
            record.created = when
            record.msecs = int(when * 1000) % 1000
        record.__dict__.update({k: v for k, v in fields.items() if v is not None})
        if item.trace_id is not None:
            record.trace_id = item.trace_id
            record.span_id = item.span_id
        self.logger.handle(record)

    # -- lifecycle ------------------------------------------------------------------------------
    def force_flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued record has been handed to the handlers."""
        self.start()
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self.force_flush(timeout)
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(min(timeout, 5.0))


def _mark(record: logging.LogRecord) -> None:
    """Mark ``record`` as the request log's (``record.nexus_request_log``), as a class attribute where it can."""
    if type(record) is logging.LogRecord:
        record.__class__ = _RequestLogRecord  # same layout; the record factory's fields stay
    else:  # a record factory of the app's own makes another class: mark the instance
        record.nexus_request_log = True


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
