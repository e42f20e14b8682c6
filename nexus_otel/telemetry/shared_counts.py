"""Hot-path counts kept in a memory-mapped file as they change, so that they outlive their process.

With ``serve --workers N`` a worker can be killed outright (SIGKILL, the OOM
killer) at any moment. Its counts must stay in the totals, or counters go
backwards and the requests it served last are never counted. So each
worker's pre-aggregated series (:mod:`nexus_otel.telemetry.bound`: executions,
their durations, hooks, plugin errors, HTTP requests) also store their values
in a file of the worker's own at every measurement, as prometheus
client_python's multiprocess mode does: a store into a shared memory-mapped
page, which the kernel keeps when the process dies. Whoever answers a scrape
reads a dead worker's file with :func:`read_counts`.

The file: a header (magic, bytes in use), then one entry per series, appended
when the series is bound: key length and value count (two u32), the key
(JSON: kind, name, unit, description, attributes, bucket bounds), padding to
8 bytes, and the values (float64). A counter has one value; a histogram has
its count, sum, min, max, then its bucket counts. The header's length is
stored after the entry is whole, so a reader never takes half an entry; a
value is stored under its series' lock, so the file never holds a value older
than one already reported. Its blocks are allocated up front: a full disk
makes a series count in memory only (logged once), never a fault on a store.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)

from ..errors import InvalidDataError
from .bound import CARDINALITY_LIMIT, BoundMetrics, HistogramFamily, HistogramSeries, SumFamily, SumSeries

log = logging.getLogger("nexus_otel.metrics")

MAGIC = b"NXCOUNT1"
_HEADER = struct.Struct("<8sQ")
_ENTRY = struct.Struct("<II")
INITIAL_SIZE = 1 << 16
"""Bytes a file starts with (about 200 series); it doubles when full."""
COUNTER, UP_DOWN, HISTOGRAM = "counter", "up_down", "histogram"
_HISTOGRAM_HEAD = 4  # count, sum, min, max

Place = tuple[Any, int]  # (memoryview cast to "d": typeshed types its items as int)
"""Where a series' values live: the file as float64s, and the index of its first value."""


class CountsFile:
    """One process's file of series values (see the module docstring); created at the first :meth:`allocate`.

    ``before_open`` runs once, just before the file is created (to move aside a file a dead
    process with the same id left at ``path``).
    """

    def __init__(self, path: str | os.PathLike[str], before_open: Callable[[], None] | None = None) -> None:
        self.path = Path(path)
        self._before_open = before_open
        self._lock = threading.Lock()
        self._fd = -1
        self._closed = False
        self._size = 0
        self._used = 0
        self._maps: list[mmap.mmap] = []  # never unmapped while the process runs: series keep views of each
        self._views: list[Any] = []  # each map as float64s
        self.failure: str | None = None
        """Why the file could not take a series, if it could not (its series then count in memory only)."""

    def allocate(self, key: list[Any], values: int) -> Place | None:
        """``values`` float64s (zero) for the series named ``key``; None if the file cannot take them."""
        data = orjson.dumps(key)
        with self._lock:
            if self._closed:
                return None  # a series bound after the process's telemetry stopped: in memory only
            try:
                if self._fd < 0:
                    self._open()
                entry = self._used
                first = entry + _ENTRY.size + len(data)
                first += -first % 8
                end = first + 8 * values
                if end > self._size:
                    self._grow(end)
                m = self._maps[-1]
                _ENTRY.pack_into(m, entry, len(data), values)
                m[entry + _ENTRY.size:entry + _ENTRY.size + len(data)] = data
                _HEADER.pack_into(m, 0, MAGIC, end)  # the entry is whole: readers may take it
                self._used = end
                return self._views[-1], first // 8
            except (OSError, ValueError) as exc:
                if self.failure is None:
                    log.error("worker metrics: cannot keep counts in %s (%s): new series count in this "
                              "process only, and are lost if it is killed", self.path, exc)
                self.failure = str(exc)
                return None

    def _open(self) -> None:
        """Create the file (truncating is safe: nothing of this object maps it yet)."""
        if self._before_open is not None:
            self._before_open()
            self._before_open = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._grow(INITIAL_SIZE)
        except BaseException:  # tried again at the next series, from a file of no size
            os.close(self._fd)
            self._fd = -1
            raise
        self._used = _HEADER.size
        _HEADER.pack_into(self._maps[-1], 0, MAGIC, self._used)

    def _grow(self, needed: int) -> None:
        size = max(self._size, INITIAL_SIZE)
        while size < needed:
            size *= 2
        if hasattr(os, "posix_fallocate"):  # blocks now, not a SIGBUS at a store on a full disk
            os.posix_fallocate(self._fd, 0, size)
        else:
            os.ftruncate(self._fd, size)
        m = mmap.mmap(self._fd, size)
        self._maps.append(m)
        self._views.append(memoryview(m).cast("d"))
        self._size = size

    def close(self) -> None:
        """Close the file descriptor; the mappings (and so the values) stay until the process ends, and
        series bound from now on count in memory only."""
        with self._lock:
            self._closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _key(kind: str, family: SumFamily | HistogramFamily, attributes: dict[str, Any],
         bounds: Iterable[float] = ()) -> list[Any]:
    return [kind, family.name, family.unit, family.description, attributes, list(bounds)]


class SharedSumFamily(SumFamily):
    """A counter or up-down counter whose series store their value in ``store`` at every add."""

    def __init__(self, name: str, unit: str, description: str, exemplar_filter: str, *, monotonic: bool,
                 store: CountsFile, cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        super().__init__(name, unit, description, exemplar_filter, monotonic=monotonic,
                         cardinality_limit=cardinality_limit)
        self.store = store

    def _make(self, attributes: dict[str, Any]) -> SumSeries:
        series = super()._make(attributes)
        place = self.store.allocate(_key(COUNTER if self.monotonic else UP_DOWN, self, attributes), 1)
        if place is not None:
            series.share(*place)
        return series


class SharedHistogramFamily(HistogramFamily):
    """A histogram whose series store count, sum, min, max and bucket counts in ``store`` at every record."""

    def __init__(self, name: str, unit: str, description: str, exemplar_filter: str, bounds: tuple[float, ...],
                 store: CountsFile, cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        super().__init__(name, unit, description, exemplar_filter, bounds, cardinality_limit)
        self.store = store

    def _make(self, attributes: dict[str, Any]) -> HistogramSeries:
        series = super()._make(attributes)
        place = self.store.allocate(_key(HISTOGRAM, self, attributes, self.bounds),
                                    _HISTOGRAM_HEAD + len(self.bounds) + 1)
        if place is not None:
            series.share(*place)
        return series


class SharedBoundMetrics(BoundMetrics):
    """:class:`~nexus_otel.telemetry.bound.BoundMetrics` whose series also store their values in ``store``."""

    def __init__(self, store: CountsFile, exemplar_filter: str = "trace_based", *,
                 cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        super().__init__(exemplar_filter, cardinality_limit=cardinality_limit)
        self.store = store

    def counter(self, name: str, unit: str = "1", description: str = "") -> SumFamily:
        return self._add(SharedSumFamily(name, unit, description, self.exemplar_filter, monotonic=True,
                                         store=self.store, cardinality_limit=self.cardinality_limit))

    def up_down_counter(self, name: str, unit: str = "1", description: str = "") -> SumFamily:
        return self._add(SharedSumFamily(name, unit, description, self.exemplar_filter, monotonic=False,
                                         store=self.store, cardinality_limit=self.cardinality_limit))

    def histogram(self, name: str, unit: str, description: str, bounds: Iterable[float]) -> HistogramFamily:
        return self._add(SharedHistogramFamily(name, unit, description, self.exemplar_filter, tuple(bounds),
                                               self.store, self.cardinality_limit))


def read_counts(path: str | os.PathLike[str], *, cumulative_only: bool = True) -> list[Metric]:
    """The series in a counts file as SDK metrics (cumulative; no exemplars).

    ``cumulative_only`` leaves out up-down counters: what a dead process had in flight is over.
    """
    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        return []  # created, never written: no series yet
    magic, used = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise InvalidDataError(f"{path}: not a counts file (starts with {magic!r})")
    used = min(used, len(data))
    metrics: dict[tuple[Any, ...], list[Any]] = {}
    entry = _HEADER.size
    now = int(os.path.getmtime(path) * 1e9)
    while entry + _ENTRY.size <= used:
        length, count = _ENTRY.unpack_from(data, entry)
        first = entry + _ENTRY.size + length
        first += -first % 8
        end = first + 8 * count
        if end > used:
            raise InvalidDataError(f"{path}: an entry at byte {entry} runs past the {used} bytes in use")
        kind, name, unit, description, attributes, bounds = orjson.loads(data[entry + _ENTRY.size:
                                                                               entry + _ENTRY.size + length])
        values = struct.unpack_from(f"<{count}d", data, first)
        entry = end
        if kind == UP_DOWN and cumulative_only:
            continue
        points = metrics.setdefault((kind, name, unit, description, tuple(bounds)), [])
        if kind == HISTOGRAM:
            n, total, low, high = values[:_HISTOGRAM_HEAD]
            if n:
                points.append(HistogramDataPoint(
                    attributes=attributes, start_time_unix_nano=0, time_unix_nano=now, count=int(n), sum=total,
                    bucket_counts=[int(v) for v in values[_HISTOGRAM_HEAD:]], explicit_bounds=list(bounds),
                    min=low, max=high, exemplars=[]))
        else:
            value = values[0]
            points.append(NumberDataPoint(attributes=attributes, start_time_unix_nano=0, time_unix_nano=now,
                                          value=int(value) if value.is_integer() else value, exemplars=[]))
    out = []
    for (kind, name, unit, description, _), points in metrics.items():
        if not points:
            continue
        if kind == HISTOGRAM:
            out.append(Metric(name, description, unit, Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE)))
        else:
            out.append(Metric(name, description, unit, Sum(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
                is_monotonic=kind == COUNTER)))
    return out
