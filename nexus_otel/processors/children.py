"""The span processors a processor passes spans on to: read on every span without a lock, changed under one.

:class:`Children` holds them; :class:`WrappingSpanProcessor` is the base of a
processor that passes spans on to its children (redaction, tail sampling).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from opentelemetry.sdk.trace import SpanProcessor


class _Processor(Protocol):
    def force_flush(self, timeout_millis: int = ...) -> bool: ...

    def shutdown(self) -> None: ...


P = TypeVar("P", bound=_Processor)


class Children(Generic[P]):
    """A copy-on-write tuple of processors (``items``: span or log record processors), for processors that
    wrap others."""

    def __init__(self, processors: Iterable[P] = ()) -> None:
        self.items: tuple[P, ...] = tuple(processors)
        self._lock = threading.Lock()

    def add(self, processor: P) -> None:
        with self._lock:
            self.items = (*self.items, processor)

    def remove(self, processor: P) -> bool:
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


class WrappingSpanProcessor(SpanProcessor):
    """A span processor in front of others (its ``children``), which it passes what it lets through."""

    def __init__(self, children: Iterable[SpanProcessor] = ()) -> None:
        self._children: Children[SpanProcessor] = Children(children)

    @property
    def children(self) -> tuple[SpanProcessor, ...]:
        return self._children.items

    def add(self, processor: SpanProcessor) -> None:
        """Add a processor behind this one: it sees the spans this one passes on."""
        self._children.add(processor)

    def remove(self, processor: SpanProcessor) -> bool:
        """Take a processor out (it is flushed and shut down); false if it was not here."""
        return self._children.remove(processor)
