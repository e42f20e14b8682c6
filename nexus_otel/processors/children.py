"""The span processors a processor passes spans on to: read on every span without a lock, changed under one."""

from __future__ import annotations

import threading
from typing import Iterable

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
