"""Logs that join traces: trace and span ids on every record, plain or JSON lines, and the app's own
``logging`` records exported as OpenTelemetry log records (:class:`LogCapture`)."""

from .capture import LogCapture
from .correlation import LogCorrelation
from .formatters import JsonFormatter, PlainFormatter

__all__ = ["JsonFormatter", "LogCapture", "LogCorrelation", "PlainFormatter"]
