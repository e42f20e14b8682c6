"""Each running sender's destinations, published in a file for ``nexus-otel webhooks status``.

The status command runs in another process than the app, so the delivery
worker of each process writes what it knows of its destinations (limit, in
flight, hold, breaker: :class:`~.destinations.DestinationState`) to a small
JSON file beside the outbox: ``<outbox file>.destinations/<host>-<pid>.json``.
:meth:`DestinationSnapshots.publish` is cheap enough to call after every batch
and on every idle wake-up: it writes only when something changed, at most once
per ``interval`` (1 s), through a temporary file and :func:`os.replace`, so a
reader sees the old snapshot or the new one, never half of one. A change the
interval held back is written by the next call after it. URLs are stored
masked (:func:`~nexus_otel.urls.mask_url`): the file is for showing.

A clean stop removes the process's file (:meth:`DestinationSnapshots.close`). A
process that died keeps its file, shown as ended (its pid is gone from this
host, or belongs to a newer process: :func:`~.claimer.has_ended`) until the
next writer on this outbox removes it. Writing is best effort: a file that
cannot be written is one warning, never a failed delivery.

This is the local outbox's publisher; with the shared outbox each sender keeps a
row in its database instead (:mod:`.destination_snapshots_shared`, which picks
between the two and reuses :func:`describe` for the status lines).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .. import fastjson
from ..errors import InvalidDataError
from ..outbox.owners import has_ended, identity
from ..urls import mask_url
from .destinations import DestinationState

log = logging.getLogger("nexus_otel.webhooks")

INTERVAL = 1.0
"""Seconds between two writes of one process's snapshot, at least."""
VERSION = 1
_SUFFIX = ".json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def snapshots_dir(outbox_path: str | os.PathLike[str]) -> Path:
    """The folder of the destination snapshots of the senders using the outbox at ``outbox_path``."""
    return Path(f"{os.fspath(outbox_path)}.destinations")


class DestinationSnapshots:
    """This process's snapshot file in ``directory``: :meth:`publish` it often, :meth:`close` it at a clean stop."""

    def __init__(self, directory: str | os.PathLike[str], *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._written: list[DestinationState] | None = None
        self._next = float("-inf")
        self._file: Path | None = None
        self._closed = False
        self._warned = False

    @property
    def file(self) -> Path:
        """This process's file (its name has the pid, so a forked worker writes its own)."""
        host = _UNSAFE.sub("_", socket.gethostname()) or "host"
        return self.directory / f"{host}-{os.getpid()}{_SUFFIX}"

    def due(self) -> bool:
        """Whether :meth:`publish` could write now (``interval`` has passed): to skip making the states when not."""
        return not self._closed and self._clock() >= self._next

    def publish(self, states: Iterable[DestinationState]) -> bool:
        """Write ``states`` if they changed since the last write and ``interval`` has passed; true if written."""
        states = list(states)
        with self._lock:
            if self._closed or self._clock() < self._next or states == self._written:
                return False
            self._next = self._clock() + self.interval
            try:
                self._write(states)
            except Exception as exc:  # a read-only or full disk: the status is best effort
                if not self._warned:
                    self._warned = True
                    log.warning("cannot write the webhook destinations' status to %s: %s", self.directory, exc)
                return False
            self._written = states
            return True

    def close(self) -> None:
        """Remove this process's file (a clean stop): its destinations are no one's now."""
        with self._lock:
            self._closed = True
            if self._file is not None:
                try:
                    self._file.unlink(missing_ok=True)
                except OSError as exc:
                    log.debug("cannot remove %s: %s", self._file, exc)

    def _write(self, states: list[DestinationState]) -> None:
        file = self.file
        if self._file is None:  # the first write: make the folder, and clear away the files of ended processes
            self.directory.mkdir(parents=True, exist_ok=True)
            _remove_ended(self.directory, keep=file)
        self._file = file
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_bytes(snapshot_body(states))
        os.replace(tmp, file)


def snapshot_body(states: Iterable[DestinationState]) -> bytes:
    """This process's snapshot of ``states`` as stored (JSON; URLs masked): what :func:`parse_snapshot` reads."""
    return fastjson.dumpb({
        "version": VERSION, "process": identity(), "host": socket.gethostname(), "pid": os.getpid(),
        "written_at": time.time(), "destinations": [state.as_dict() for state in states],
    })


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One process's published destinations."""

    host: str
    pid: int
    written_at: float
    """``time.time()`` of the write."""
    destinations: tuple[DestinationState, ...]
    ended: bool
    """True if the process is known to have ended (its file outlived it: it did not stop cleanly)."""
    unseen_for: float | None = None
    """Seconds since it was last written, when that is longer than a running sender leaves between two writes
    (a sender on another host cannot be checked: it may have ended); None when it is fresh."""


def read_snapshot(path: Path) -> Snapshot:
    """The snapshot in ``path``; ``ValueError`` if it is not one (``OSError`` if it cannot be read)."""
    return parse_snapshot(path.read_bytes())


def parse_snapshot(body: bytes | str) -> Snapshot:
    """The snapshot stored as ``body`` (:func:`snapshot_body`); ``ValueError`` if it is not one."""
    data = fastjson.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("destinations"), list):
        raise InvalidDataError("not a destinations snapshot")
    process, host, pid, written_at = data.get("process"), data.get("host"), data.get("pid"), data.get("written_at")
    if not (isinstance(process, str) and isinstance(host, str) and isinstance(pid, int)
            and isinstance(written_at, (int, float))):
        raise InvalidDataError("a snapshot names its process, host, pid and time")
    states = tuple(DestinationState.from_dict(d) for d in data["destinations"])
    return Snapshot(host, pid, float(written_at), states, has_ended(process))


def read_snapshots(directory: str | os.PathLike[str]) -> tuple[list[Snapshot], list[str]]:
    """Every snapshot in ``directory`` (by host and pid), and a note for each file that could not be read."""
    folder = Path(directory)
    snapshots, problems = [], []
    try:
        paths = sorted(p for p in folder.iterdir() if p.name.endswith(_SUFFIX) and not p.name.startswith("."))
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cannot read {folder}: {exc}"]
    for path in paths:
        try:
            snapshots.append(read_snapshot(path))
        except FileNotFoundError:  # removed by a process stopping meanwhile
            continue
        except (OSError, ValueError, TypeError) as exc:
            problems.append(f"{path.name}: not readable as a destinations snapshot: {exc}")
    snapshots.sort(key=lambda s: (s.host, s.pid))
    return snapshots, problems


def status_lines(directory: str | os.PathLike[str], now: float | None = None) -> list[str]:
    """One line per destination of every snapshot in ``directory`` (not yet made inert for a terminal)."""
    now = time.time() if now is None else now
    snapshots, problems = read_snapshots(directory)
    lines = [line for snapshot in snapshots for line in describe(snapshot, now)]
    return lines + problems


def describe(snapshot: Snapshot, now: float) -> list[str]:
    """A line per destination: masked URL, limit/ceiling, in flight, hold, breaker, process."""
    process = f"pid {snapshot.pid} on {snapshot.host}, as of {_clock(snapshot.written_at)}"
    if snapshot.ended:
        process += " (process ended)"
    elif snapshot.unseen_for is not None:
        process += f", not seen for {snapshot.unseen_for:.0f} s (ended?)"
    lines = []
    for state in snapshot.destinations:
        rate = f"  max {state.max_rate:g}/s" if state.max_rate is not None else ""
        # Masked again: the writer masks, but the file is outside data by the time it is read.
        lines.append(f"{mask_url(state.destination)}  limit {state.limit}/{state.ceiling}  "
                     f"in flight {state.in_flight}{rate}  {_hold(state, now)}  {_breaker(state, now)}  [{process}]")
    return lines


def _hold(state: DestinationState, now: float) -> str:
    until = state.held_until
    if until is None or until <= now:
        return "not held"
    return f"held until {_clock(until)} ({_left(until, now)}, {state.hold_reason or 'retry_after'})"


def _breaker(state: DestinationState, now: float) -> str:
    failures = f", {state.failures} failure{'s' if state.failures != 1 else ''}" if state.failures else ""
    if state.breaker != "open":
        return f"breaker {state.breaker}{failures}"
    if state.breaker_until is None:
        return f"breaker open{failures}"
    return f"breaker open until {_clock(state.breaker_until)} ({_left(state.breaker_until, now)}{failures})"


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def _left(until: float, now: float) -> str:
    return f"in {max(0.0, until - now):.1f} s" if until > now else "due"


def _remove_ended(directory: Path, keep: Path) -> None:
    """Remove the snapshots of processes of this host that have ended (their holds mean nothing now)."""
    for path in directory.glob(f"*{_SUFFIX}"):
        if path == keep:
            continue
        try:
            if read_snapshot(path).ended:
                path.unlink(missing_ok=True)
        except (OSError, ValueError, TypeError):
            continue
