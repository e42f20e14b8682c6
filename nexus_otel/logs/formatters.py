"""Formatters that put trace ids and structured fields on one line: logfmt-style plain, or JSON."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_FIRST = ("trace_id", "span_id")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    return {k: v for k, v in fields.items() if v is not None}


def _timestamp(record: logging.LogRecord) -> str:
    return _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The traceback, whether the record still holds the exception or was rendered before queueing."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


class PlainFormatter(logging.Formatter):
    """``2026-11-26T07:11:00.000+00:00 INFO nexus_otel.requests workflow completed workflow=greet ... trace_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        parts = [_timestamp(record), record.levelname, record.name, record.getMessage()]
        ordered = sorted(fields, key=lambda k: (k in _FIRST, k))
        for key in ordered:
            value = fields[key]
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, str) and (" " in text or "=" in text or '"' in text or not text):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        exception = _exception_text(self, record)
        if exception:
            line += "\n" + exception
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, trace ids, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_fields(record))
        exception = _exception_text(self, record)
        if exception:
            out["exception"] = exception
        return json.dumps(out, default=str, ensure_ascii=False)
