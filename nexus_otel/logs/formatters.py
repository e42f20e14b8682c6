"""Formatters that put trace ids and structured fields on one line: logfmt-style plain, or JSON.

Both scrub what they write with a :class:`~nexus_otel.redaction.Redactor` (the app's,
when :class:`~nexus_otel.plugins.RequestLoggerPlugin` sets them up): a secret in a
message (``connecting to postgresql://admin:PASSWORD@db``), in a field or in a
traceback is masked, and a field under a sensitive key is masked whole. A line
is written once and read by people and log pipelines alike, so nothing else
stands between it and them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from typing import Any

from ..redaction import MASK, Redactor

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_FIRST = ("trace_id", "span_id")


def _fields(record: logging.LogRecord, redactor: Redactor) -> dict[str, Any]:
    return {k: MASK if redactor.is_sensitive(k) else _scrubbed(v, redactor)
            for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_") and v is not None}


def _scrubbed(value: Any, redactor: Redactor, depth: int = 0) -> Any:
    """``value`` with secrets inside its strings masked and values under sensitive keys masked; not cut
    (a field such as the request log's ``inputs`` was bounded when it was made)."""
    if isinstance(value, str):
        return redactor.scrub_credentials_in(value)
    if depth > 16:
        return value
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and redactor.is_sensitive(k) else _scrubbed(v, redactor, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, redactor, depth + 1) for v in value]
    return value


def _timestamp(record: logging.LogRecord) -> str:
    return _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The traceback, whether the record still holds the exception or was rendered before queueing."""
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


class _ScrubbingFormatter(logging.Formatter):
    """A formatter whose lines carry no secret: see the module's docstring."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, *, redactor: Redactor | None = None) -> None:
        super().__init__(fmt, datefmt)
        self.redactor = redactor or Redactor()
        """Masks secrets in messages, fields and tracebacks (the defaults when none is given)."""

    def _message(self, record: logging.LogRecord) -> str:
        return self.redactor.scrub_credentials_in(record.getMessage())

    def _exception(self, record: logging.LogRecord) -> str | None:
        text = _exception_text(self, record)
        return self.redactor.scrub_credentials_in(text) if text else text


class PlainFormatter(_ScrubbingFormatter):
    """``2026-11-26T07:11:00.000+00:00 INFO nexus_otel.requests workflow completed workflow=greet ... trace_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record, self.redactor)
        parts = [_timestamp(record), record.levelname, record.name, self._message(record)]
        ordered = sorted(fields, key=lambda k: (k in _FIRST, k))
        for key in ordered:
            value = fields[key]
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            if isinstance(value, str) and (" " in text or "=" in text or '"' in text or not text):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        exception = self._exception(record)
        if exception:
            line += "\n" + exception
        return line


class JsonFormatter(_ScrubbingFormatter):
    """One JSON object per line: timestamp, level, logger, message, trace ids, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": self._message(record),
        }
        out.update(_fields(record, self.redactor))
        exception = self._exception(record)
        if exception:
            out["exception"] = exception
        return json.dumps(out, default=str, ensure_ascii=False)
