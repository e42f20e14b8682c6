"""A directory of JSON-lines files bounded by size: what the local span and log stores share.

``<stem>.jsonl`` is appended to; when a write would take it past ``max_bytes``
it is renamed ``<stem>-<time_ns>.jsonl`` and the oldest such files beyond
``max_files`` (the current one counted) are deleted, so the store never grows
past about ``max_bytes * max_files``. Several processes may share a directory
(a server's workers, a CLI run): each append and rotation holds an exclusive
``flock`` on a lock file, so lines never interleave and a rotation never loses
a write. Readers take no lock: a batch is one line, and a line that is not
whole (a crash mid-write, a write still under way) is skipped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

T = TypeVar("T")


class RotatingStore:
    """Appends lines under a cross-process lock, rotates by size, reads back oldest first."""

    def __init__(self, directory: str | os.PathLike[str], stem: str, *, max_bytes: int, max_files: int,
                 lock_name: str, log: logging.Logger) -> None:
        self.directory = Path(directory)
        self.stem = stem
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock_name = lock_name
        self._log = log
        self._lock = threading.Lock()
        self.written = 0
        self.failed = 0

    @property
    def current(self) -> Path:
        """The file being written to."""
        return self.directory / f"{self.stem}.jsonl"

    def append(self, encode: Callable[[], bytes], count: int, what: str) -> bool:
        """Writes the lines ``encode()`` returns, counting ``count`` items as written or failed.

        Never raises: an exporter calls this on the SDK's thread, and a store that cannot be
        written (a full disk, a read-only folder, a value that cannot be encoded) must not
        reach the app; the failure is counted and logged once per batch.
        """
        try:
            data = encode()
            with self._lock:
                self.directory.mkdir(parents=True, exist_ok=True)
                with open(self.directory / self._lock_name, "a") as lock_file:
                    fcntl.flock(lock_file, fcntl.LOCK_EX)
                    try:
                        self._rotate_if_needed(len(data))
                        with open(self.current, "ab") as f:
                            f.write(data)
                    finally:
                        fcntl.flock(lock_file, fcntl.LOCK_UN)
        except Exception as exc:  # see the docstring
            self.failed += count
            self._log.error("cannot write %d %s to %s: %s", count, what, self.directory, exc)
            return False
        self.written += count
        return True

    def _rotate_if_needed(self, incoming: int) -> None:
        current = self.current
        try:
            size = current.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        current.rename(self.directory / f"{self.stem}-{time.time_ns()}.jsonl")
        rotated = self.rotated_files()
        for old in rotated[: max(0, len(rotated) - (self.max_files - 1))]:
            old.unlink(missing_ok=True)

    def rotated_files(self) -> list[Path]:
        """The files rotated away, oldest first (their names hold the time of rotation)."""
        return sorted(self.directory.glob(f"{self.stem}-*.jsonl"))

    def files(self) -> list[Path]:
        """Every file of the store, oldest first."""
        files = self.rotated_files()
        if self.current.exists():
            files.append(self.current)
        return files

    def read(self, decode: Callable[[str], Iterable[T]], needle: str | None = None) -> Iterator[T]:
        """What ``decode`` makes of each line, oldest file first; a damaged line is skipped and logged.

        With ``needle``, only lines holding that text are decoded: finding one trace's
        records in a full store is then a text search, not a parse of every line.
        """
        for file in self.files():
            yield from self.read_file(file, decode, needle)

    def read_file(self, file: Path, decode: Callable[[str], Iterable[T]], needle: str | None = None) -> Iterator[T]:
        """:meth:`read` for one of the store's files (nothing if it was deleted meanwhile)."""
        try:
            handle = open(file, encoding="utf-8", errors="replace")
        except FileNotFoundError:  # rotated away meanwhile
            return
        with handle:
            for n, line in enumerate(handle, 1):
                if needle is None or needle in line:
                    yield from decode_line(decode, line, f"{file}:{n}", self._log)

    def tail(self) -> Tail:
        """A reader of the current file that follows it across rotations (``nexus-otel logs --follow``)."""
        return Tail(self)


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """Where one kind of record lives in a data directory: its files' stem and its lock file."""

    stem: str
    lock_name: str
    log: logging.Logger

    def open(self, directory: str | os.PathLike[str], max_bytes: int = 0, max_files: int = 0) -> RotatingStore:
        """The store of this kind in ``directory`` (the limits matter only to a writer)."""
        return RotatingStore(directory, self.stem, max_bytes=max_bytes, max_files=max_files,
                             lock_name=self.lock_name, log=self.log)


class StoreExporter:
    """What the local span and log exporters share, mixed in before the SDK's exporter base class.

    Each batch is encoded and appended as it is exported (so ``force_flush`` has nothing
    to wait for); ``exported`` and ``failed`` count items, so a store that cannot be
    written is seen, not silent; after ``shutdown`` every export fails.
    """

    def __init__(self, layout: StoreLayout, directory: str | os.PathLike[str], max_bytes: int,
                 max_files: int) -> None:
        self._store = layout.open(directory, max_bytes, max_files)
        self.directory = self._store.directory
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._shutdown = False

    @property
    def exported(self) -> int:
        return self._store.written

    @property
    def failed(self) -> int:
        return self._store.failed

    def _write(self, items: Sequence[Any], encode: Callable[[Sequence[Any]], bytes], what: str) -> bool:
        """True if ``items`` are in the store (none to write counts); never raises."""
        if self._shutdown:
            return False
        return not items or self._store.append(lambda: encode(items), len(items), what)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown = True


def decode_line(decode: Callable[[str], Iterable[T]], line: str, where: str, log: logging.Logger) -> Iterable[T]:
    """``decode(line)``, or nothing for a blank or damaged line (logged with ``where``)."""
    if not line.strip():
        return ()
    try:
        return list(decode(line))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        log.warning("skipping damaged line %s (%s)", where, exc)
        return ()


class Tail:
    """Whole lines appended to a store since the last :meth:`read`, across its rotations.

    A rotation renames the current file and a writer starts a new one under the old
    name. On the next read the rest of the renamed file is read first (no write reaches
    it after the rename), then the files rotated after it (when the store rotated more
    than once between two reads), then the new current file from its start. Rotated
    files are told apart by the time in their names and by inode. A line without its
    newline yet waits for the next read.
    """

    def __init__(self, store: RotatingStore) -> None:
        self.store = store
        self.path = store.current
        self._handle: BinaryIO | None = None
        self._partial = b""
        self._since: int | None = None
        self._old_inode: int | None = None

    @property
    def since_ns(self) -> int | None:
        """Files rotated up to this time (the names say) were rotated before this tail began, or are read."""
        return self._since

    @property
    def inode(self) -> int | None:
        """The inode of the file being read (None before it exists), to tell it apart from a rotated one."""
        return self.inode_of(self._handle)

    def read(self) -> list[str]:
        """The whole lines written since the last call (the first call: all of the current file)."""
        lines: list[str] = []
        handle = self._handle
        if handle is not None:
            try:
                replaced = os.stat(self.path).st_ino != os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                replaced = True
            lines += self._drain(handle)
            if not replaced:
                return lines
            self._old_inode = os.fstat(handle.fileno()).st_ino
            handle.close()
            self._handle, self._partial = None, b""
        try:
            new: BinaryIO | None = open(self.path, "rb")
        except FileNotFoundError:
            new = None
        now = time.time_ns()
        if self._since is not None:
            lines += self._rotated_between(self._since, now, skip={self._old_inode, self.inode_of(new)})
        self._since = now
        if new is None:
            return lines
        self._handle = new
        return lines + self._drain(new)

    def _rotated_between(self, after: int, until: int, skip: set[int | None]) -> list[str]:
        lines: list[str] = []
        for file in self.store.rotated_files():
            rotated = rotation_time(file, self.store.stem)
            if not after < rotated <= until:
                continue
            try:
                with open(file, "rb") as f:
                    if os.fstat(f.fileno()).st_ino in skip:
                        continue
                    lines += [line.decode("utf-8", "replace") for line in f.read().splitlines()]
            except FileNotFoundError:  # deleted by a later rotation: gone for every reader
                continue
        return lines

    @staticmethod
    def inode_of(handle: BinaryIO | None) -> int | None:
        return os.fstat(handle.fileno()).st_ino if handle is not None else None

    def _drain(self, handle: BinaryIO) -> list[str]:
        data = self._partial + handle.read()
        *whole, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in whole]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def rotation_time(file: Path, stem: str) -> int:
    """When ``<stem>-<time_ns>.jsonl`` was rotated (0 for a name that does not say)."""
    try:
        return int(file.name[len(stem) + 1:-len(".jsonl")])
    except ValueError:
        return 0
