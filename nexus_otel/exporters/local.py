"""The local span store: spans kept on this machine, bounded in size, for ``nexus-otel traces``.

Files live in one directory: ``spans.jsonl`` is written to; when it passes
``max_bytes`` it is renamed ``spans-<time>.jsonl`` and the oldest files beyond
``max_files`` are deleted, so the store never grows past about
``max_bytes * max_files``. Several processes (a server and a CLI run) may
share one directory: writes and rotation take an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import spanfile

log = logging.getLogger("nexus_otel.exporters.local")

CURRENT = "spans.jsonl"
LOCK = ".lock"


class LocalSpanExporter(SpanExporter):
    """Appends each batch as one line (see :mod:`.spanfile`); rotates by size; never raises into the SDK."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024,
                 max_files: int = 5) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self._lock = threading.Lock()
        self._shutdown = False
        self.exported = 0
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            data = spanfile.encode_lines(spans)
            with self._lock:
                self.directory.mkdir(parents=True, exist_ok=True)
                with open(self.directory / LOCK, "a") as lock_file:
                    fcntl.flock(lock_file, fcntl.LOCK_EX)
                    try:
                        self._rotate_if_needed(len(data))
                        with open(self.directory / CURRENT, "ab") as f:
                            f.write(data)
                    finally:
                        fcntl.flock(lock_file, fcntl.LOCK_UN)
        except OSError as exc:
            self.failed += len(spans)
            log.error("cannot write %d spans to %s: %s", len(spans), self.directory, exc)
            return SpanExportResult.FAILURE
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def _rotate_if_needed(self, incoming: int) -> None:
        current = self.directory / CURRENT
        try:
            size = current.stat().st_size
        except FileNotFoundError:
            return
        if size == 0 or size + incoming <= self.max_bytes:
            return
        current.rename(self.directory / f"spans-{time.time_ns()}.jsonl")
        rotated = sorted(self.directory.glob("spans-*.jsonl"))
        for old in rotated[: max(0, len(rotated) - (self.max_files - 1))]:
            old.unlink(missing_ok=True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown = True


def store_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The store's files, oldest first."""
    path = Path(directory)
    files = sorted(path.glob("spans-*.jsonl"))
    if (path / CURRENT).exists():
        files.append(path / CURRENT)
    return files


def read_spans(directory: str | os.PathLike[str]) -> Iterator[spanfile.SpanRecord]:
    """Every span in the store, oldest file first; a damaged line is skipped and logged."""
    for file in store_files(directory):
        try:
            handle = open(file, encoding="utf-8")
        except FileNotFoundError:  # rotated away meanwhile
            continue
        with handle:
            for n, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield from spanfile.decode(line)
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning("skipping damaged line %s:%d (%s)", file, n, exc)
