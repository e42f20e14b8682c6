"""An outbox's journal: each process appends its enqueues to a file of its own, one ``write`` per enqueue.

An enqueue on the workflow's thread is one framed line appended to this process's
journal file, next to the outbox's SQLite file: no lock on the shared file, no
transaction. On return the line is in the operating system's page cache, as a
SQLite commit in WAL mode with ``synchronous=NORMAL`` is, so a crash of the
process after that loses nothing (``docs/records.md`` says what a power cut can
lose). While its process runs, the journal's messages are that process's to
deliver (:mod:`.local`); once the process has ended, the next reader of
the outbox takes the journal's lines into the SQLite table, from the last note
of how far it was done, its checkpoint (:class:`~nexus_otel.outbox.queue.Outbox` does, in
one transaction), and removes the file.

A line is ``<crc32 in 8 hex digits> <JSON>\\n``; the JSON is ``[created_at,
[[message_id, destination, payload], ...]]`` with each payload as JSON text. JSON
text holds no raw line break, so a line ends at its first ``\\n``; a line still
being written (no ``\\n`` yet) is left for the next reader, and a line whose
checksum does not match (a torn write after a power cut) is reported and skipped.
A write that fails or is cut short (the disk filled) is cut back off the file
before the next enqueue, so the next line starts on a line of its own.
"""

from __future__ import annotations

import errno
import os
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fastjson
from . import owners

ROTATE_BYTES = 1 << 20
"""Bytes checkpointed in a journal after which its next enqueue starts a new file (the old one is removed once done)."""

Entry = tuple[float, list[tuple[str, str, str]]]
"""One enqueue: when, and its ``(message_id, destination, payload JSON)`` items."""


def prefix_of(outbox: Path) -> str:
    """The names of ``outbox``'s journals start with this (they sit in the outbox's folder)."""
    return f"{outbox.name}.journal."


def owner_of(name: str) -> str:
    """The owner identity (``host/pid/start``) of the process that writes journal ``name``."""
    parts = name.rsplit(".journal.", 1)[-1].rsplit("+", 3)
    return "/".join(parts[:3]) if len(parts) == 4 else ""


def journals(outbox: Path) -> list[str]:
    """The names of ``outbox``'s journal files, oldest process first."""
    prefix = prefix_of(outbox)
    try:
        return sorted(name for name in os.listdir(outbox.parent) if name.startswith(prefix))
    except FileNotFoundError:
        return []


def encode(created_at: float, items: Sequence[tuple[str, str, str]]) -> bytes:
    """One framed line for an enqueue."""
    body = fastjson.dumpb([created_at, items])
    return b"%08x %s\n" % (zlib.crc32(body), body)


@dataclass(slots=True)
class Decoded:
    """What a read of a journal came to: its entries, the bytes they took, and the lines that failed their check."""

    entries: list[Entry]
    taken: int
    """Bytes from the start of the read up to the end of its last whole line."""
    corrupt: int


def decode(data: bytes) -> Decoded:
    """The whole lines of ``data`` (a tail without ``\\n`` is left untaken)."""
    end = data.rfind(b"\n") + 1
    entries: list[Entry] = []
    corrupt = 0
    for line in data[:end].splitlines():
        body = line[9:]
        try:
            if len(line) < 10 or line[8:9] != b" " or int(line[:8], 16) != zlib.crc32(body):
                raise ValueError("checksum")
            created_at, items = fastjson.loads(body)
            entries.append((float(created_at), [(str(m), str(d), str(p)) for m, d, p in items]))
        except (ValueError, TypeError):
            corrupt += 1
    return Decoded(entries, end, corrupt)


class JournalWriter:
    """This process's journal for one outbox: appends, one ``os.write`` of one line per enqueue.

    The file is created at the first enqueue, and again after :meth:`retire` or a fork
    (a child writes its own journal, named by its own identity). Only this writer
    appends to its file, so it knows where each line ends.
    """

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self.name: str | None = None
        """The file now written (None before the first enqueue and after :meth:`retire`)."""
        self.size = 0
        """Bytes written to it."""
        self._abandoned: list[tuple[str, int]] = []

    def append(self, created_at: float, items: Sequence[tuple[str, str, str]]) -> tuple[str, int]:
        """Append one enqueue, in the page cache on return: the file's name and where the line ends.

        Raises ``OSError`` (the disk is full, the folder gone). A write that failed or was cut
        short leaves no part of its line behind: the file is cut back to its last whole line
        (or, if it cannot be, left as it is and a new file started at the next enqueue; see
        :meth:`take_abandoned`), so a torn line never runs into the next enqueue's line.
        """
        line = encode(created_at, items)
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                self._open()
            assert self._fd is not None and self.name is not None
            try:
                written = os.write(self._fd, line)
            except OSError:
                self._cut_back()
                raise
            if written != len(line):  # a regular file takes a whole write unless the disk filled meanwhile
                name = self.name
                self._cut_back()
                raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (journal {name}: wrote {written} of"
                                            f" {len(line)} bytes)")
            self.size += written
            return self.name, self.size

    def _cut_back(self) -> None:
        """After a failed or short write (call with the lock): the file back to its last whole line."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self.size)
        except OSError:  # cannot cut it: leave it as it is (its torn tail ends it) and write the next enqueue elsewhere
            if self.name is not None:
                self._abandoned.append((self.name, self.size))
            os.close(self._fd)
            self._fd = None
            self.name = None
            self.size = 0

    def take_abandoned(self) -> list[tuple[str, int]]:
        """Files left after a torn write that could not be cut back: ``(name, size of their whole lines)``.

        The owner treats each as retired at that size (removed once its lines are done); a reader
        taking it after this process ended drops its torn tail with a log line.
        """
        with self._lock:
            out, self._abandoned = self._abandoned, []
            return out

    def retire(self) -> tuple[str, int] | None:
        """Stop writing the current file (the next enqueue starts another); its name and size, or None."""
        with self._lock:
            name, fd, size = self.name, self._fd, self.size
            self.name = self._fd = None
            self.size = 0
        if fd is not None and self._pid == os.getpid():
            os.close(fd)
        return None if name is None else (name, size)

    def _open(self) -> None:
        # A forked child leaves its parent's descriptor alone: the parent still writes there.
        self._pid = os.getpid()
        # host+pid+start names the writing process; the last part tells apart this process's files.
        self.name = f"{prefix_of(self.outbox)}{owners.identity().replace('/', '+')}+{os.urandom(4).hex()}"
        self._fd = os.open(self.outbox.parent / self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                           0o600)
        self.size = 0


def read_from(path: Path, offset: int) -> bytes:
    """Everything in ``path`` from ``offset`` on (empty if the file is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        chunks = []
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def size_of(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def rows_of(entries: list[Entry]) -> list[tuple[Any, ...]]:
    """``(message_id, destination, payload, next_attempt_at, created_at)`` rows for the outbox table."""
    return [(mid, dest, payload, at, at) for at, items in entries for mid, dest, payload in items]
