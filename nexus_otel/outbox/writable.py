"""Whether an outbox takes writes now: set by a failed put, cleared by a cheap probe, logged sparingly.

A put that cannot be written (the disk is full, the folder read-only or
gone) marks its outbox unwritable. From then on the app refuses executions
whose records need that outbox before they run (their workflow would run and
its records be lost), and ``/healthz`` says so. Whether space came back is
checked at most once per ``probe_interval`` (one second) by writing a small
probe file beside the outbox and removing it: about the cost of a put, paid
once a second by whoever asks first (an execution, ``/healthz``, a scrape),
so recovery needs no one's help. The next put that succeeds clears the mark
too.

Under a full disk every execution would otherwise log its failure: this
object logs at most one line a second (the first failure, the recovery, and
how many lines it held back meanwhile) and counts the rest.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("nexus_otel.outbox")

PROBE_INTERVAL = 1.0
"""Seconds between probes of an outbox known unwritable (and the least time between two log lines)."""
PROBE_BYTES = 16 * 1024
"""Bytes the probe writes: more than a put's line, so a probe that passes leaves room for the next put."""


def reason_of(exc: BaseException) -> str:
    """A short reason for a failed write: the OS's words (``No space left on device``), else the exception's text."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    lines = str(exc).strip().splitlines()  # a database's error: its first line (not the statement it quotes)
    return lines[0] if lines else type(exc).__name__


def read_only(folder: Path) -> bool:
    """True if ``folder`` exists and this process cannot write in it (a read-only mount, or no permission)."""
    return folder.is_dir() and not os.access(folder, os.W_OK)


class Writability:
    """One outbox's state: writable, or since when not and why; safe to share between threads.

    ``error`` is None while writable (read it freely: it is the hot path's only look). Counts:
    ``failed`` puts whose execution raised, ``dropped`` puts of fail-open sinks lost, ``refused``
    executions turned away before they ran.
    """

    def __init__(self, path: Path | str, *, probe_interval: float = PROBE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, probe: Callable[[], str | None] | None = None) -> None:
        self.path = path
        """The outbox's file (its probe is written beside it), or a name for the log lines with ``probe``."""
        self._probe_with = probe
        """How to probe an outbox that is not a file (a database: a cheap statement); None for the file probe."""
        self.probe_interval = probe_interval
        self._clock = clock
        self._lock = threading.Lock()
        self.error: str | None = None
        self.since = 0.0
        self._next_probe = 0.0
        self.failed = 0
        self.dropped = 0
        self.refused = 0
        self._last_log = -PROBE_INTERVAL
        self._held_back = 0

    # -- what puts report --------------------------------------------------------------
    def write_failed(self, exc: BaseException, *, required: bool) -> str:
        """A put could not be written; its reason. ``required``: its execution fails (else it is dropped)."""
        reason = reason_of(exc)
        now = self._clock()
        with self._lock:
            if required:
                self.failed += 1
            else:
                self.dropped += 1
            first = self.error is None
            if first:
                self.since = now
            self.error = reason
            self._next_probe = now + self.probe_interval
        if first:
            self._log(now, logging.ERROR, "%s: records cannot be made durable: %s; executions whose records"
                      " need it fail with RecordsUnavailableError (sinks set to on_unavailable=\"drop\" lose"
                      " theirs) until it is writable again, checked once a second", self.path, reason)
        return reason

    def mark_unwritable(self, exc: BaseException) -> None:
        """Known unwritable without a failed put (a database down as the app starts): nothing is counted."""
        now = self._clock()
        with self._lock:
            first = self.error is None
            if first:
                self.since = now
            self.error = reason_of(exc)
            self._next_probe = now + self.probe_interval
        if first:
            self._log(now, logging.ERROR, "%s: records cannot be made durable: %s; executions whose records need it"
                      " are refused until it is writable again, checked once a second", self.path, self.error)

    def write_succeeded(self) -> None:
        """A put was written: if the outbox was marked unwritable, it is writable again."""
        if self.error is not None:
            self._recovered(self._clock())

    def refused_one(self) -> None:
        with self._lock:
            self.refused += 1

    # -- what the app asks -------------------------------------------------------------
    def check(self) -> str | None:
        """None if the outbox takes writes (probing it, at most once a second, while it did not); else why not."""
        if self.error is None:
            return None
        now = self._clock()
        with self._lock:
            if self.error is None or now < self._next_probe:
                return self.error
            self._next_probe = now + self.probe_interval  # one prober at a time, once per interval
        problem = self._probe()
        if problem is None:
            self._recovered(now)
            return None
        with self._lock:
            if self.error is not None:
                self.error = problem
            return self.error

    def _probe(self) -> str | None:
        """Write ``PROBE_BYTES`` to a file beside the outbox and remove it: None if that worked, else why not."""
        if self._probe_with is not None:
            return self._probe_with()
        path = Path(self.path)
        probe = path.with_name(f"{path.name}.probe.{os.getpid()}")
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            return reason_of(exc)
        try:
            data = memoryview(bytes(PROBE_BYTES))
            while data:
                written = os.write(fd, data)
                if written <= 0:
                    return os.strerror(errno.ENOSPC)
                data = data[written:]
            return None
        except OSError as exc:
            return reason_of(exc)
        finally:
            os.close(fd)
            try:
                os.unlink(probe)
            except OSError:
                pass

    def _recovered(self, now: float) -> None:
        with self._lock:
            if self.error is None:
                return
            self.error = None
            down = now - self.since
            failed, dropped, refused = self.failed, self.dropped, self.refused
        self._log(now, logging.WARNING, "%s: writable again after %.1f s (so far: %d executions refused before"
                  " they ran, %d failed after they ran, %d puts of fail-open sinks dropped)",
                  self.path, down, refused, failed, dropped)

    def _log(self, now: float, level: int, message: str, *args: object) -> None:
        """Log, at most one line per ``probe_interval``; a line held back is counted in the next one."""
        with self._lock:
            if now - self._last_log < self.probe_interval:
                self._held_back += 1
                return
            self._last_log = now
            held, self._held_back = self._held_back, 0
        if held:
            message += " (%d earlier lines about it held back)"
            args = (*args, held)
        log.log(level, message, *args)
