"""The app's record processors, called in order with each failure isolated and counted."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..exporters.outbox import Outbox
from .processor import RecordProcessor
from .record import ExecutionRecord

log = logging.getLogger("nexus_otel.records")


def _overrides(processor: RecordProcessor, name: str) -> bool:
    return getattr(type(processor), name, None) is not getattr(RecordProcessor, name)


class RecordPipeline:
    """Every record processor of one app. ``add`` / ``remove`` are safe while executions run.

    A processor that raises is logged (once per processor, then every 1,000th
    time) and counted in ``errors``; the other processors and the workflow go on.

    Durable sinks get their outbox from :meth:`outbox`: sinks on the same file
    share it, and an execution's puts to it are written together, once.

    :meth:`start` starts every processor's background work (the app calls it
    as it starts, or at its first execution); a processor added after that is
    started as it is added.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._processors: tuple[RecordProcessor, ...] = ()
        self._starters: tuple[RecordProcessor, ...] = ()
        self.errors: dict[str, int] = {}
        self._outboxes: dict[Path, Outbox] = {}
        self.deadline: float | None = None
        """A ``time.monotonic()`` time no removal waits past (the app sets it while stopping)."""
        self._started = False

    @property
    def processors(self) -> tuple[RecordProcessor, ...]:
        return self._processors

    @property
    def wants_start(self) -> bool:
        """True when a processor overrides ``on_start`` (else start records are not built)."""
        return bool(self._starters)

    def add(self, processor: RecordProcessor) -> None:
        """Add ``processor``; it gets the records of executions that end from now on."""
        if not isinstance(processor, RecordProcessor):
            raise ConfigurationError("record processor", type(processor).__name__,
                                     "an instance of nexus_otel.RecordProcessor")
        with self._lock:
            self._processors = (*self._processors, processor)
            self._refresh()
            started = self._started
        if started:
            self._start(processor)

    def start(self) -> None:
        """Start every processor's background work, and that of processors added from now on."""
        with self._lock:
            if self._started:
                return
            self._started = True
            processors = self._processors
        for processor in processors:
            self._start(processor)

    def _start(self, processor: RecordProcessor) -> None:
        try:
            processor.start()
        except Exception as exc:
            self._failed(processor, "start", exc)

    def remove(self, processor: RecordProcessor, timeout: float = 10.0) -> bool:
        """Take ``processor`` out and shut it down within ``timeout`` seconds (and the stop deadline).

        False if it was not here.
        """
        with self._lock:
            if processor not in self._processors:
                return False
            self._processors = tuple(p for p in self._processors if p is not processor)
            self._refresh()
        if self.deadline is not None:
            timeout = min(timeout, max(0.0, self.deadline - time.monotonic()))
        self._shutdown(processor, timeout)
        return True

    def _refresh(self) -> None:
        self._starters = tuple(p for p in self._processors if _overrides(p, "on_start"))

    def on_start(self, record: ExecutionRecord) -> None:
        for processor in self._starters:
            try:
                processor.on_start(record)
            except Exception as exc:
                self._failed(processor, "on_start", exc)

    def outbox(self, path: str | os.PathLike[str]) -> Outbox:
        """The app's outbox at ``path``, one object per file, shared by every sink that names it."""
        key = Path(path).resolve()
        with self._lock:
            outbox = self._outboxes.get(key)
            if outbox is None:
                outbox = self._outboxes[key] = Outbox(path)
        return outbox

    def on_end(self, record: ExecutionRecord) -> None:
        outboxes = self._outboxes
        if not outboxes:
            self._end(record)
            return
        held = [outbox for outbox in list(outboxes.values()) if outbox.defer()]
        try:
            self._end(record)
        finally:
            for outbox in held:  # each outbox writes this execution's puts once, after every sink ran
                try:
                    outbox.commit_deferred()
                except Exception as exc:
                    self._failed(f"outbox write ({outbox.path})", "on_end", exc)

    def _end(self, record: ExecutionRecord) -> None:
        for processor in self._processors:
            try:
                processor.on_end(record)
            except Exception as exc:
                self._failed(processor, "on_end", exc)

    def force_flush(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        ok = True
        for processor in self._processors:
            try:
                ok = processor.force_flush(max(0.0, deadline - time.monotonic())) and ok
            except Exception as exc:
                self._failed(processor, "force_flush", exc)
                ok = False
        return ok

    def shutdown(self, timeout: float = 10.0) -> None:
        """Shut every processor down, last added first, within ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            processors, self._processors = self._processors, ()
            self._refresh()
        for processor in reversed(processors):
            self._shutdown(processor, max(0.0, deadline - time.monotonic()))

    def _shutdown(self, processor: RecordProcessor, timeout: float) -> None:
        try:
            processor.shutdown(timeout)
        except Exception as exc:
            self._failed(processor, "shutdown", exc)

    def _failed(self, processor: Any, where: str, exc: Exception) -> None:
        name = processor if isinstance(processor, str) else type(processor).__name__
        n = self.errors.get(name, 0) + 1
        self.errors[name] = n
        if n == 1 or n % 1000 == 0:
            log.error("record processor %s failed in %s (%d so far): %s: %s", name, where, n,
                      type(exc).__name__, exc, exc_info=n == 1)
