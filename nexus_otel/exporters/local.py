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
from .rotating_store import StoreExporter, StoreLayout

log = logging.getLogger("nexus_otel.exporters.local")

CURRENT = "spans.jsonl"
LOCK = ".lock"
LAYOUT = StoreLayout("spans", LOCK, log)


class LocalSpanExporter(StoreExporter, SpanExporter):
    """Appends each batch as one line (see :mod:`.spanfile`); rotates by size; never raises into the SDK."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 10 * 1024 * 1024,
                 max_files: int = 5) -> None:
        super().__init__(LAYOUT, directory, max_bytes, max_files)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self._write(spans, spanfile.encode_lines, "spans")
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


def store_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The store's files, oldest first."""
    return LAYOUT.open(directory).files()


def read_spans(directory: str | os.PathLike[str]) -> Iterator[spanfile.SpanRecord]:
    """Every span in the store, oldest file first; a damaged line is skipped and logged."""
    return LAYOUT.open(directory).read(spanfile.decode)
