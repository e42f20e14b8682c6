"""The processors a processor passes spans or log records on to: read on every item without a lock, changed under one.

:class:`Children` holds them; :class:`Wrapping` is the base of a processor that
passes spans or log records on to its children (:class:`WrappingSpanProcessor`:
span redaction, tail sampling; log redaction).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

log = logging.getLogger("nexus_otel.telemetry")


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
        self._failures: dict[int, int] = {}

    def child_failed(self, child: P, method: str, exc: BaseException) -> None:
        """A child raised: logged (its first failure, then every 1,000th) and counted; the others, and whatever
        made the span or record (a workflow, a delivery), go on."""
        key = id(child)
        count = self._failures[key] = self._failures.get(key, 0) + 1
        if count == 1 or count % 1000 == 0:
            log.error("%s.%s failed (%d times so far; the other processors go on): %s: %s",
                      type(child).__name__, method, count, type(exc).__name__, exc)

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
    """A span processor in front of others (its ``children``), which it passes the spans it lets through.

    A child that raises does not stop the others, nor reach the code that made the span (:meth:`start_children`,
    :meth:`end_children`): a broken processor of a user's must not fail a workflow or a delivery.
    """

    def start_children(self, span: Span, parent_context: Context | None = None) -> None:
        for child in self._children.items:
            try:
                child.on_start(span, parent_context=parent_context)
            except Exception as exc:
                self.child_failed(child, "on_start", exc)

    def end_children(self, span: ReadableSpan, children: tuple[SpanProcessor, ...] | None = None) -> None:
        for child in self._children.items if children is None else children:
            try:
                child.on_end(span)
            except Exception as exc:
                self.child_failed(child, "on_end", exc)
