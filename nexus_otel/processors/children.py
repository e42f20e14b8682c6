"""The span processors a processor passes spans on to: read on every span without a lock, changed under one."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

from opentelemetry.sdk.trace import SpanProcessor


class Children:
    """A copy-on-write tuple of span processors (``items``), for processors that wrap others."""

    def __init__(self, processors: Iterable[SpanProcessor] = ()) -> None:
        self.items: tuple[SpanProcessor, ...] = tuple(processors)
        self._lock = threading.Lock()

    def add(self, processor: SpanProcessor) -> None:
        with self._lock:
            self.items = (*self.items, processor)

    def remove(self, processor: SpanProcessor) -> bool:
        """Take ``processor`` out, flush it and shut it down; false if it was not here."""
        with self._lock:
            if processor not in self.items:
                return False
            self.items = tuple(p for p in self.items if p is not processor)
        processor.force_flush()
        processor.shutdown()
        return True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush every child within one shared deadline; true if all finished.

        A child that fails or runs out of time does not stop the others from being flushed.
        """
        deadline = time.monotonic() + timeout_millis / 1000
        ok = True
        for child in self.items:
            left = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                ok = bool(child.force_flush(left)) and ok
            except Exception:
                ok = False
        return ok

    def shutdown(self) -> None:
        for child in self.items:
            child.shutdown()
