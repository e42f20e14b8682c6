"""The processors a processor passes spans or log records on to: read on every item without a lock, changed under one.

:class:`Children` holds them; :class:`Wrapping` is the base of a processor that
passes spans or log records on to its children (:class:`WrappingSpanProcessor`:
span redaction, tail sampling; log redaction).
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


class Wrapping(Generic[P]):
    """What a processor in front of others has: its ``children``, to which it passes what it lets through."""

    def __init__(self, children: Iterable[P] = ()) -> None:
        self._children: Children[P] = Children(children)

    @property
    def children(self) -> tuple[P, ...]:
        return self._children.items

    def add(self, processor: P) -> None:
        """Add a processor behind this one: it sees what this one passes on."""
        self._children.add(processor)

    def remove(self, processor: P) -> bool:
        """Take a processor out (it is flushed and shut down); false if it was not here."""
        return self._children.remove(processor)


class WrappingSpanProcessor(Wrapping[SpanProcessor], SpanProcessor):
    """A span processor in front of others (its ``children``), which it passes the spans it lets through."""
