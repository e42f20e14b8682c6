"""The local log store: log records kept on this machine, bounded in size, for ``nexus-otel logs``.

The zero-infra home of the logs signal, beside the span store in the same
data directory: ``logs.jsonl`` is written to (one line per exported batch, see
:mod:`.logfile`), rotated to ``logs-<time>.jsonl`` past ``max_bytes``, with at
most ``max_files`` files kept. Several processes may write one directory at
once (see :mod:`.rotating_store`); ``nexus-otel traces ID`` and
``nexus-otel logs`` read it back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

from . import logfile
from .logfile import LogLine
from .rotating_store import StoreExporter, StoreLayout, Tail, decode_line, rotation_time

log = logging.getLogger("nexus_otel.exporters.local_logs")

CURRENT = "logs.jsonl"
LOCK = ".logs.lock"
LAYOUT = StoreLayout("logs", LOCK, log)


class LocalLogExporter(StoreExporter, LogRecordExporter):
    """Appends each batch of log records as one line; rotates by size; never raises into the SDK.

    ``exported`` and ``failed`` count records, so a store that cannot be written is seen, not silent.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024,
                 max_files: int = 5) -> None:
        super().__init__(LAYOUT, directory, max_bytes, max_files)

    def export(self, batch: Sequence[ReadableLogRecord | ReadWriteLogRecord]) -> LogRecordExportResult:
        ok = self._write(batch, logfile.encode_lines, "log records")
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE


def log_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The log store's files, oldest first."""
    return LAYOUT.open(directory).files()


def read_logs(directory: str | os.PathLike[str], *, trace_prefix: str | None = None) -> Iterator[LogLine]:
    """Every log record in the store, oldest file first; a damaged line is skipped and logged.

    ``trace_prefix`` (lowercase hex) skips the lines (batches) with no record of such a trace
    without parsing them; the caller still picks the records out of those read.
    """
    return LAYOUT.open(directory).read(logfile.decode, logfile.trace_needle(trace_prefix) if trace_prefix else None)


class LogFollower:
    """The store's log records as they are written: :meth:`history` once, then :meth:`new` as often as wanted.

    The current file is read first, then the files rotated before that moment; files
    rotated later are :meth:`new`'s to read, so a record is neither lost nor shown twice.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self._store = LAYOUT.open(directory)
        self._tail: Tail = self._store.tail()
        self._first = self._tail.read()

    def history(self) -> Iterator[LogLine]:
        """The records already in the store, oldest first."""
        began = self._tail.since_ns or 0
        for file in self._store.rotated_files():
            if rotation_time(file, self._store.stem) > began:
                continue
            try:
                if os.stat(file).st_ino == self._tail.inode:  # rotated as it was read
                    continue
            except FileNotFoundError:
                continue
            yield from self._store.read_file(file, logfile.decode)
        yield from self._decode(self._first)
        self._first = []

    def new(self) -> list[LogLine]:
        """The records written since the last call (or since :meth:`history`)."""
        return list(self._decode(self._tail.read()))

    def _decode(self, lines: list[str]) -> Iterator[LogLine]:
        for line in lines:
            yield from decode_line(logfile.decode, line, str(self._tail.path), log)

    def close(self) -> None:
        self._tail.close()
