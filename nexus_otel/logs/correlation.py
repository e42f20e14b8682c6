"""Trace and span ids on every log record written inside a span, by any code.

Python's logging has one hook that sees every record whatever logger or
handler it goes to: the log record factory. :class:`LogCorrelation` wraps the
current factory to add ``trace_id`` and ``span_id`` (hex, or ``None`` outside
a span) and restores it when the last user releases it, so several apps and
plugins may share it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import trace as trace_api


class LogCorrelation:
    """Reference-counted installation of the correlating record factory."""

    _lock = threading.Lock()
    _users = 0
    _previous: Callable[..., logging.LogRecord] | None = None

    @classmethod
    def acquire(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                previous = logging.getLogRecordFactory()
                cls._previous = previous

                def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                    record = previous(*args, **kwargs)
                    ctx = trace_api.get_current_span().get_span_context()
                    if ctx.is_valid:
                        record.trace_id = f"{ctx.trace_id:032x}"
                        record.span_id = f"{ctx.span_id:016x}"
                    else:
                        record.trace_id = None
                        record.span_id = None
                    return record

                logging.setLogRecordFactory(factory)
            cls._users += 1

    @classmethod
    def release(cls) -> None:
        with cls._lock:
            if cls._users == 0:
                return
            cls._users -= 1
            if cls._users == 0 and cls._previous is not None:
                logging.setLogRecordFactory(cls._previous)
                cls._previous = None

    @classmethod
    def active(cls) -> bool:
        return cls._users > 0
