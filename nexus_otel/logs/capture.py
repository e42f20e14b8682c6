"""Users' own ``logging`` records as OpenTelemetry log records, with the trace context they were written in.

A workflow, hook or plugin that calls ``logging.getLogger("shop").info(...)``
inside an execution gets that line exported beside the request log, carrying the
trace id and span id of the span that was current (also when the trace was not
sampled: the ids are valid all the same). The handler that does it is
OpenTelemetry's own (``opentelemetry.instrumentation.logging``'s
``LoggingHandler``) on the root logger, at level ``NOTSET``: each logger's own
level decides what is written, as with any handler (Python's root logger is at
``WARNING`` until the application sets a level).

Logging is process-wide, an app is not: :class:`LogCapture` is one app's hold on
the one handler of the process, counted. The first hold installs it, the last
release removes it, so several apps in one process (as in tests) never write a
record twice; while more than one holds it, records go to the logger provider of
the app that took its hold most recently (when it lets go, to the one before).

Two kinds of record are never brought in: nexus-otel's own request-log lines
(``record.nexus_request_log``: the request log exports them as log records of
its own) and records of the log pipeline's own loggers, ``opentelemetry`` and the
local log store's (an exporter reporting a failed export would otherwise feed the
pipeline that is failing). And when the
root logger already has an OpenTelemetry ``LoggingHandler`` (the user's own, from
the SDK or the instrumentation package), none is added: that handler already
exports every record, and a second one would duplicate each.

``logging.basicConfig`` does nothing when the root logger has a handler, and
``basicConfig(force=True)``, ``dictConfig`` and ``fileConfig`` remove the root's
handlers: so, as OpenTelemetry's logging instrumentation does, the first
installation wraps those three functions to take the capture handler out while
they run and put it back after. An application that configures logging after
its app started gets the configuration it asked for, and its records are still
exported. The wrappers stay (they do nothing while no handler is installed).
"""

from __future__ import annotations

import copy
import functools
import logging
import logging.config
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry._logs import Logger as APILogger
from opentelemetry._logs import LoggerProvider as APILoggerProvider
from opentelemetry._logs import NoOpLogger
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.trace import get_current_span

log = logging.getLogger("nexus_otel.logs")

SKIP_ATTRIBUTE = "nexus_request_log"
"""A ``logging`` record with this attribute set (``extra={"nexus_request_log": True}``) is not captured."""


class LogCapture:
    """One app's hold on the process's capture handler: :meth:`start` takes it, :meth:`stop` lets it go."""

    def __init__(self, logger_provider: APILoggerProvider) -> None:
        self.logger_provider = logger_provider
        self._holding = False

    def start(self) -> bool:
        """Take a hold (again: nothing more). False when the root logger has the user's own OpenTelemetry
        handler: no handler is added, and records go where theirs sends them."""
        if self._holding:
            return True
        self._holding = _PROCESS.acquire(self)
        return self._holding

    def stop(self) -> None:
        """Let go; the last hold removes the handler from the root logger."""
        if self._holding:
            self._holding = False
            _PROCESS.release(self)

    @property
    def active(self) -> bool:
        """Whether this app holds the handler (records may come here)."""
        return self._holding

    @staticmethod
    def handler() -> logging.Handler | None:
        """The handler installed on the root logger for this process, or None."""
        return _PROCESS.handler


_PIPELINE_LOGGERS = ("opentelemetry", "nexus_otel.exporters.local_logs")
"""Loggers of the log pipeline itself: a sink reporting that it cannot write would feed the sink that fails."""


class _SkipOwn(logging.Filter):
    """Keeps out the request log's own lines and the log pipeline's (feedback loops on export failures)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        for pipeline in _PIPELINE_LOGGERS:
            if name == pipeline or name.startswith(pipeline + "."):
                return False
        return not getattr(record, SKIP_ATTRIBUTE, False)


class _CaptureHandler(LoggingHandler):
    """OpenTelemetry's handler, minus the ``trace_id`` / ``span_id`` extras of :class:`~nexus_otel.logs.LogCorrelation`.

    The handler turns every extra field of a record into an attribute. Those two repeat the
    context the record already carries (its trace and span ids), and a backend that files
    attributes beside the record's own fields (VictoriaLogs does) lets the attribute shadow the
    field; a Collector masking card-number-shaped values then masks an all-digit span id. So a
    record whose extras repeat its context is handed over as a copy without them (the record
    itself, which the application's other handlers format, keeps them).
    """

    def emit(self, record: logging.LogRecord) -> None:
        trace_id = getattr(record, "trace_id", _ABSENT)
        span_id = getattr(record, "span_id", _ABSENT)
        if trace_id is not _ABSENT or span_id is not _ABSENT:
            ctx = get_current_span().get_span_context()
            current = (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}") if ctx.is_valid else (None, None)
            if (trace_id, span_id) == current:
                record = copy.copy(record)
                for name in ("trace_id", "span_id"):
                    record.__dict__.pop(name, None)
        super().emit(record)


_ABSENT = object()


class _LatestProvider(APILoggerProvider):
    """The logger provider of the latest hold: what the one handler asks for loggers."""

    def __init__(self, process: _ProcessCapture) -> None:
        self._process = process

    def get_logger(self, name: str, version: str | None = None, schema_url: str | None = None,
                   attributes: Any = None) -> APILogger:
        holders = self._process.holders  # replaced whole under the lock, read without it
        if not holders:
            return NoOpLogger(name, version=version, schema_url=schema_url, attributes=attributes)
        return holders[-1].logger_provider.get_logger(name, version, schema_url, attributes)


def _otel_handler_classes() -> tuple[type, ...]:
    classes: list[type] = [LoggingHandler]
    try:
        from opentelemetry.sdk._logs import LoggingHandler as SdkLoggingHandler

        classes.append(SdkLoggingHandler)
    except ImportError:  # a future SDK without its deprecated handler
        pass
    return tuple(classes)


class _ProcessCapture:
    """The one root handler of the process and the holds on it (logging's root logger is process-wide)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holders: tuple[LogCapture, ...] = ()
        """The holds, oldest first (the latest one's provider gets the records)."""
        self.handler: LoggingHandler | None = None
        self._guarded = False

    def acquire(self, capture: LogCapture) -> bool:
        with self._lock:
            root = logging.getLogger()
            if self.handler is None:
                theirs = [h for h in root.handlers if isinstance(h, _otel_handler_classes())]
                if theirs:
                    log.info("the root logger already has an OpenTelemetry LoggingHandler (%s): nexus-otel adds "
                             "none, so logging records are exported once, by that handler",
                             type(theirs[0]).__name__)
                    return False
                handler = _CaptureHandler(level=logging.NOTSET, logger_provider=_LatestProvider(self))
                handler.addFilter(_SkipOwn())
                root.addHandler(handler)
                self.handler = handler
                if not self._guarded:
                    self._guarded = True
                    self._guard_configuration()
            self.holders = (*self.holders, capture)
            return True

    def release(self, capture: LogCapture) -> None:
        with self._lock:
            self.holders = tuple(h for h in self.holders if h is not capture)
            if not self.holders and self.handler is not None:
                logging.getLogger().removeHandler(self.handler)
                self.handler = None


    def _guard_configuration(self) -> None:
        """Wrap the functions that configure logging so they neither skip nor remove the capture handler."""
        logging.basicConfig = self._outside(logging.basicConfig)
        logging.config.dictConfig = self._outside(logging.config.dictConfig)
        logging.config.fileConfig = self._outside(logging.config.fileConfig)

    def _outside(self, configure: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(configure)
        def configure_without_capture(*args: Any, **kwargs: Any) -> Any:
            handler = self.handler
            root = logging.getLogger()
            if handler is None or handler not in root.handlers:
                return configure(*args, **kwargs)
            root.removeHandler(handler)
            try:
                return configure(*args, **kwargs)
            finally:
                if self.handler is handler:  # not released meanwhile
                    root.addHandler(handler)

        return configure_without_capture


_PROCESS = _ProcessCapture()
