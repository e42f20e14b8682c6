"""``RequestLoggerPlugin``: one structured log record when a workflow starts and one when it ends.

Thin wiring over :class:`~nexus_otel.processors.request_log.RequestLogProcessor`
(a record processor: every execution is logged, whatever the trace sampling;
inputs are logged masked) and
:class:`~nexus_otel.logs.LogCorrelation` (so any record written inside a
workflow, by any code, carries ``trace_id`` and ``span_id``). When the app
exports logs (``app.telemetry.logger_provider``), the same records go to the
logs signal as OpenTelemetry log records (``export_logs``), joined to each
execution's trace.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from .. import settings
from .._version import __version__
from ..deadline import call_within
from ..errors import ConfigurationError
from ..logs.correlation import LogCorrelation
from ..logs.formatters import JsonFormatter, PlainFormatter
from ..plugin_base import NexusPlugin
from ..processors.request_log import RequestLogProcessor
from ..telemetry import contract

FORMATS = ("plain", "json")


class RequestLoggerPlugin(NexusPlugin):
    """Logs every workflow's start and end with trace ids, as plain text or JSON lines.

    ``output`` is ``"stderr"`` (default), ``"stdout"``, a stream, a
    ``logging.Handler``, or ``None`` to leave handling to your logging set-up.
    ``export_logs`` (default True) also sends the records to the app's logs
    signal when it has one (``OTEL_LOGS_EXPORTER``), as OpenTelemetry log records
    with the scope ``nexus_otel.requests``; the app's provider batches and exports them.
    """

    name = "request_logger"
    version = "1.0.0"

    def __init__(self, format: str = "plain", *, output: Any = "stderr", logger: str = "nexus_otel.requests",
                 level: str | int = "INFO", include_inputs: bool = True, correlate_all_logs: bool = True,
                 export_logs: bool = True, config: dict[str, Any] | None = None) -> None:
        chosen = settings.with_config("RequestLoggerPlugin", config, format=format, output=output, logger=logger,
                                      level=level, include_inputs=include_inputs,
                                      correlate_all_logs=correlate_all_logs, export_logs=export_logs)
        self.format = chosen["format"]
        self.output = chosen["output"]
        self.logger_name = chosen["logger"]
        self.level = chosen["level"]
        self.include_inputs = chosen["include_inputs"]
        self.correlate_all_logs = chosen["correlate_all_logs"]
        self.export_logs = chosen["export_logs"]
        self.handler: logging.Handler | None = None
        self.logger_provider: Any = None
        """The app's ``LoggerProvider`` the records go to (flushed by :meth:`flush`, never shut down here), or None."""
        self.processor: RequestLogProcessor | None = None
        self._correlating = False

    def setup(self, nexus_app: Any) -> None:
        fmt = settings.choice("RequestLoggerPlugin.format", self.format, FORMATS)
        if not isinstance(self.export_logs, bool):
            raise ConfigurationError("RequestLoggerPlugin.export_logs", self.export_logs, "True or False")
        level = logging.getLevelName(self.level.upper()) if isinstance(self.level, str) else self.level
        if not isinstance(level, int):
            settings.choice("RequestLoggerPlugin.level", self.level, ("DEBUG", "INFO", "WARNING", "ERROR"))
        logger = logging.getLogger(self.logger_name)
        handler = self._handler()
        if handler is not None:
            # The app's redactor: its allow-list and extra patterns apply to the log lines as to the spans.
            redactor = getattr(nexus_app, "redactor", None)
            formatter = JsonFormatter if fmt == "json" else PlainFormatter
            handler.setFormatter(formatter(redactor=redactor))
            # The processor's worker thread calls the handler: no formatting or I/O on a workflow's thread.
            logger.addHandler(handler)
            logger.propagate = False
            if logger.level == logging.NOTSET or logger.level > level:
                logger.setLevel(level)
        self.handler = handler
        self.logger = logger
        if self.correlate_all_logs:
            LogCorrelation.acquire()
            self._correlating = True
        # The app's provider (None when the app does not export logs); it is the app's to shut down.
        provider = getattr(getattr(nexus_app, "telemetry", None), "logger_provider", None) if self.export_logs else None
        self.logger_provider = provider
        otel_logger = provider.get_logger(contract.REQUEST_LOG_SCOPE, __version__) if provider is not None else None
        self.processor = RequestLogProcessor(logger, level=level, include_inputs=bool(self.include_inputs),
                                             otel_logger=otel_logger)
        self._app = nexus_app
        nexus_app.records.add(self.processor)

    def _handler(self) -> logging.Handler | None:
        out = self.output
        if out is None:
            return None
        if isinstance(out, logging.Handler):
            return out
        if out == "stderr":
            return logging.StreamHandler(sys.stderr)
        if out == "stdout":
            return logging.StreamHandler(sys.stdout)
        if hasattr(out, "write"):
            return logging.StreamHandler(out)
        settings.choice("RequestLoggerPlugin.output", out, ("stderr", "stdout"))
        return None

    def flush(self) -> None:
        """Write out every record queued so far, and export the log records made of them."""
        if self.processor is not None:
            self.processor.force_flush()
        if self.handler is not None:
            self.handler.flush()
        self._flush_logs()

    def _flush_logs(self, timeout: float = 30.0) -> None:
        """Export the log records made so far, for at most ``timeout`` seconds: the SDK's batch processor
        exports on the caller's thread and retries a silent endpoint well past the timeout it is given."""
        provider = self.logger_provider
        if provider is not None and timeout > 0:
            call_within(lambda: provider.force_flush(int(timeout * 1000)), timeout, "request log export")

    def teardown(self) -> None:
        if self.processor is not None:
            self._app.records.remove(self.processor)  # flushes the queued records
            self.processor = None
            # Within the app's stop deadline, when it is stopping (its telemetry shutdown flushes the rest).
            deadline = self._app.records.deadline
            self._flush_logs(10.0 if deadline is None else min(10.0, deadline - time.monotonic()))
            self.logger_provider = None
        if self.handler is not None:
            self.handler.flush()
            logging.getLogger(self.logger_name).removeHandler(self.handler)
        if self._correlating:
            LogCorrelation.release()
            self._correlating = False


