"""The app's record processors, called in order with each failure isolated and counted."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ..errors import ConfigurationError, RecordsUnavailableError
from ..outbox import Outbox
from ..outbox.factory import open_outbox
from ..outbox.postgres import PostgresOutbox, is_url
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

    Records that cannot be made durable fail closed: :meth:`on_end` raises
    :class:`~nexus_otel.errors.RecordsUnavailableError` when a put that a sink
    requires cannot be written, and :meth:`check_available` refuses an
    execution before it runs while an outbox its records need is known
    unwritable (see ``docs/records.md``). With a ``meter``, each outbox's
    state is the gauge ``nexus.records.outbox.unwritable`` and what was lost or
    refused the counter ``nexus.records.unavailable``.
    """

    def __init__(self, meter: Meter | None = None, *, shared_outbox: str | None = None) -> None:
        self._lock = threading.Lock()
        self._processors: tuple[RecordProcessor, ...] = ()
        self._starters: tuple[RecordProcessor, ...] = ()
        self.errors: dict[str, int] = {}
        self.shared_outbox = shared_outbox
        """The shared outbox's ``postgresql://`` URL (``NEXUS_OTEL_OUTBOX_URL``): every sink queues there; None:
        each names its local file."""
        self._outboxes: dict[Path | str, Outbox | PostgresOutbox] = {}
        self._left_behind: set[str | os.PathLike[str]] = set()  # local outboxes warned of
        # The same, for the hot path's look: replaced, never changed in place.
        self._boxes: tuple[Outbox | PostgresOutbox, ...] = ()
        self.deadline: float | None = None
        """A ``time.monotonic()`` time no removal waits past (the app sets it while stopping)."""
        self._started = False
        if meter is not None:
            # 1 is the alarm, so that the workers of `serve --workers N` (whose readings merge by maximum)
            # show it as soon as one of them meets the full disk.
            meter.create_observable_gauge(
                "nexus.records.outbox.unwritable", callbacks=[self._observe_writable], unit="1",
                description="1 while a put to the record outbox cannot be written (disk full, read-only): executions"
                            " that need it fail with RecordsUnavailableError; 0 while it takes writes.")
            # Read from the queue itself: with the shared outbox every replica reports the same table (aggregate
            # with max by outbox, not sum).
            meter.create_observable_gauge(
                "nexus.records.outbox.messages", callbacks=[self._observe_depth], unit="1",
                description="Messages in the record outbox by state (pending: waiting or in delivery; dead: given"
                            " up), of every sink sharing it; a shared outbox's are every replica's.")
            meter.create_observable_gauge(
                "nexus.records.outbox.oldest_age", callbacks=[self._observe_oldest], unit="s",
                description="Seconds since the oldest pending message of the record outbox was enqueued"
                            " (absent while none is pending).")
            meter.create_observable_counter(
                "nexus.records.unavailable", callbacks=[self._observe_unavailable], unit="1",
                description="Executions whose records could not be made durable: refused (before the workflow ran),"
                            " failed (after it ran: RecordsUnavailableError), dropped (a fail-open sink's records).")

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

    def outbox(self, path: str | os.PathLike[str]) -> Outbox | PostgresOutbox:
        """The app's outbox at ``path``, one object per file (or ``postgresql://`` URL), shared by every sink that
        names it; the shared outbox, whatever the path, when the app has one (:attr:`shared_outbox`)."""
        target = self.shared_outbox or path
        key: Path | str = str(target) if is_url(target) else Path(target).resolve()
        with self._lock:
            outbox = self._outboxes.get(key)
            if self.shared_outbox and Path(path).exists() and path not in self._left_behind:
                self._left_behind.add(path)
                log.warning("a local outbox is at %s: what waits in it is not delivered while the shared outbox is"
                            " used; start once without NEXUS_OTEL_OUTBOX_URL to deliver it (or `nexus-otel"
                            " webhooks status --outbox %s` to see what it holds)", path, path)
            if outbox is None:
                outbox = self._outboxes[key] = open_outbox(target)
                self._boxes = (*self._boxes, outbox)
        return outbox

    def on_end(self, record: ExecutionRecord) -> None:
        """Give ``record`` to every processor; raises :class:`RecordsUnavailableError` (once all ran) if a
        put that a sink requires could not be written."""
        outboxes = self._outboxes
        if not outboxes:
            unavailable = self._end(record)
        else:
            held = [outbox for outbox in list(outboxes.values()) if outbox.defer()]
            try:
                unavailable = self._end(record)
            finally:
                for outbox in held:  # each outbox writes this execution's puts once, after every sink ran
                    try:
                        outbox.commit_deferred()
                    except RecordsUnavailableError as exc:  # the outbox logged it (once a second at most)
                        unavailable = unavailable or exc
                    except Exception as exc:
                        self._failed(f"outbox write ({outbox.path})", "on_end", exc)
        if unavailable is not None:
            raise unavailable

    def _end(self, record: ExecutionRecord) -> RecordsUnavailableError | None:
        unavailable = None
        for processor in self._processors:
            try:
                processor.on_end(record)
            except RecordsUnavailableError as exc:
                unavailable = unavailable or exc
            except Exception as exc:
                self._failed(processor, "on_end", exc)
        return unavailable

    # -- when records cannot be made durable ----------------------------------------------
    def check_available(self, workflow: str) -> None:
        """Raise :class:`RecordsUnavailableError` if an outbox that a fail-closed sink would use for an
        execution of ``workflow`` is known unwritable (probed at most once a second): refused before it runs.

        Free while every outbox is writable (one attribute read per outbox).
        """
        for outbox in self._boxes:
            if outbox.writable.error is None:
                continue
            if not self._needed(outbox, workflow):
                continue
            reason = outbox.writable.check()
            if reason is not None:
                outbox.writable.refused_one()
                raise RecordsUnavailableError(str(outbox.path), reason, workflow=workflow, ran=False)

    def _needed(self, outbox: Outbox | PostgresOutbox, workflow: str) -> bool:
        """Whether a fail-closed sink puts records of ``workflow`` into ``outbox``."""
        for processor in self._processors:
            view = getattr(processor, "outbox", None)
            if getattr(view, "outbox", view) is not outbox:
                continue
            fails_closed = getattr(processor, "fails_closed", True)
            records = getattr(processor, "records", None)
            if fails_closed and (not callable(records) or records(workflow)):
                return True
        return False

    def unavailable(self) -> list[dict[str, Any]]:
        """Outboxes that cannot be written now (each probed at most once a second): path and reason."""
        out = []
        for outbox in list(self._outboxes.values()):
            reason = outbox.writable.check()
            if reason is not None:
                out.append({"outbox": str(outbox.path), "writable": False, "error": reason})
        return out

    def _observe_writable(self, options: CallbackOptions) -> list[Observation]:
        return [Observation(1 if outbox.writable.check() is not None else 0, {"outbox": str(outbox.path)})
                for outbox in list(self._outboxes.values())]

    def _observe_depth(self, options: CallbackOptions) -> list[Observation]:
        out = []
        for outbox in self._boxes:
            try:
                counts = outbox.counts()
            except Exception:  # a database that is down: no reading rather than a wrong one
                continue
            out += [Observation(counts.get(state, 0), {"outbox": str(outbox.path), "state": state})
                    for state in ("pending", "dead")]
        return out

    def _observe_oldest(self, options: CallbackOptions) -> list[Observation]:
        out = []
        for outbox in self._boxes:
            try:
                age = outbox.oldest_age()
            except Exception:
                continue
            if age is not None:
                out.append(Observation(age, {"outbox": str(outbox.path)}))
        return out

    def _observe_unavailable(self, options: CallbackOptions) -> list[Observation]:
        refused = failed = dropped = 0
        for outbox in list(self._outboxes.values()):
            refused += outbox.writable.refused
            failed += outbox.writable.failed
            dropped += outbox.writable.dropped
        return [Observation(refused, {"outcome": "refused"}), Observation(failed, {"outcome": "failed"}),
                Observation(dropped, {"outcome": "dropped"})]

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
