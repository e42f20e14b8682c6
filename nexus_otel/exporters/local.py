"""The local span store: spans kept on this machine, bounded in size, for ``nexus-otel traces``.

Files live in one directory: ``spans.jsonl`` is written to; when it passes
``max_bytes`` it is renamed ``spans-<time>.jsonl`` and the oldest files beyond
``max_files`` are deleted, so the store never grows past about
``max_bytes * max_files``. Several processes (a server and a CLI run) may
share one directory: writes and rotation take an exclusive file lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import spanfile
from .rotating_store import RotatingStore

log = logging.getLogger("nexus_otel.exporters.local")

STEM = "spans"
CURRENT = f"{STEM}.jsonl"
LOCK = ".lock"


def _store(directory: str | os.PathLike[str], max_bytes: int = 0, max_files: int = 0) -> RotatingStore:
    return RotatingStore(directory, STEM, max_bytes=max_bytes, max_files=max_files, lock_name=LOCK, log=log)


class LocalSpanExporter(SpanExporter):
    """Appends each batch as one line (see :mod:`.spanfile`); rotates by size; never raises into the SDK."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024,
                 max_files: int = 5) -> None:
        self._store = _store(directory, max_bytes, max_files)
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

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        if not spans or self._store.append(lambda: spanfile.encode_lines(spans), len(spans), "spans"):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self._shutdown = True


def store_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The store's files, oldest first."""
    return _store(directory).files()


def read_spans(directory: str | os.PathLike[str]) -> Iterator[spanfile.SpanRecord]:
    """Every span in the store, oldest file first; a damaged line is skipped and logged."""
    return _store(directory).read(spanfile.decode)
