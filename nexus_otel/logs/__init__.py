"""Logs that join traces: trace and span ids on every record, plain or JSON lines."""

from .correlation import LogCorrelation
from .formatters import JsonFormatter, PlainFormatter

__all__ = ["JsonFormatter", "LogCorrelation", "PlainFormatter"]
