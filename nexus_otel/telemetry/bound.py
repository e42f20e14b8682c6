"""Pre-bound, pre-aggregated instruments for the per-execution hot path.

The SDK's synchronous instruments do a lot per measurement: they build a
``Measurement``, clean and hash its attributes, look up the series, take a
lock, offer an exemplar. nexus-otel makes about eight measurements per HTTP
request, with attribute sets known in advance. So, like prometheus
client_python's ``labels()``, callers bind an attribute set once and keep the
series; a measurement is then a lock and a few additions, several times cheaper
(the figures are in ``benchmarks/RESULTS.md``).

The series are handed to the SDK's export path as its own data model
(``Sum`` and ``Histogram`` points in a ``MetricsData``) by the app's
:class:`~nexus_otel.telemetry.metrics_hub.MetricsHub`, so Prometheus scrapes
and OTLP pushes see them exactly like SDK-aggregated metrics: cumulative,
with explicit-bucket histograms (a value equal to a bound falls in that
bound's bucket), min and max, and exemplars chosen like the SDK's default
reservoirs (the last measurement per histogram bucket; the last one per
counter series) under ``OTEL_METRICS_EXEMPLAR_FILTER``.

When telemetry runs on a meter provider nexus-otel did not build (a global
one the process installed, one passed in without a hub), the same families
wrap the SDK's instruments instead; see :mod:`nexus_otel.telemetry.instruments`.
"""

from __future__ import annotations

import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.trace import SpanContext

from ..errors import ConfigurationError

# Like the SDK's default cardinality limit: past it, measurements go to one overflow series.
CARDINALITY_LIMIT = 2000
ExemplarCheck = Callable[[int], bool]
"""Whether an exemplar may name this trace id (given as an int)."""
OVERFLOW_ATTRIBUTES: Mapping[str, Any] = {"otel.metric.overflow": True}
EXEMPLAR_FILTERS = ("trace_based", "always_on", "always_off")


def _key(attributes: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(attributes.items()))


S = TypeVar("S", "SumSeries", "HistogramSeries")


class _Family(Generic[S]):
    """One instrument: its series by attribute set, and how to report them."""

    def __init__(self, name: str, unit: str, description: str, exemplar_filter: str,
                 cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self._series: dict[tuple[tuple[str, Any], ...], S] = {}
        self._lock = threading.Lock()
        self._exemplars = exemplar_filter != "always_off"
        self._always_on = exemplar_filter == "always_on"
        self._limit = cardinality_limit

    def bind(self, attributes: Mapping[str, Any]) -> S:
        """The series for ``attributes`` (the same object for equal attribute sets); keep it."""
        key = _key(attributes)
        series = self._series.get(key)
        if series is not None:
            return series
        with self._lock:
            series = self._series.get(key)
            if series is None:
                overflow = _key(OVERFLOW_ATTRIBUTES)
                if len(self._series) >= self._limit - 1 and key != overflow:
                    # The last place is kept for the overflow series, as in the SDK.
                    series = self._series.get(overflow) or self._new_locked(overflow, OVERFLOW_ATTRIBUTES)
                else:
                    series = self._new_locked(key, attributes)
        return series

    def _new_locked(self, key: tuple[tuple[str, Any], ...], attributes: Mapping[str, Any]) -> S:
        series = self._make(dict(attributes))
        self._series[key] = series
        return series

    def _make(self, attributes: dict[str, Any]) -> S:
        raise NotImplementedError

    def _keeps_exemplar(self, ctx: SpanContext | None) -> bool:
        if ctx is None or not self._exemplars:
            return False
        return self._always_on or ctx.trace_flags.sampled

    def points(self, now: int, check: ExemplarCheck | None = None) -> list[Any]:
        return [s.point(now, check) for s in list(self._series.values())]

    def metric(self, now: int, check: ExemplarCheck | None = None) -> Metric | None:
        raise NotImplementedError


class SumSeries:
    """One series of a counter or up-down counter."""

    __slots__ = ("attributes", "start", "value", "exemplar", "_lock", "_family", "_shared", "_at")

    def __init__(self, family: SumFamily, attributes: dict[str, Any]) -> None:
        self._family = family
        self.attributes = attributes
        self.start = time.time_ns()
        self.value: int | float = 0
        self.exemplar: Exemplar | None = None
        self._lock = threading.Lock()
        self._shared: Any = None
        self._at = 0

    def share(self, values: Any, at: int) -> None:
        """Also store the value in ``values[at]`` at every add (float64s in a file that outlives the process:
        :mod:`nexus_otel.telemetry.shared_counts`); stored under the lock, so never older than one reported."""
        with self._lock:
            values[at] = self.value
            self._shared, self._at = values, at

    def add(self, amount: int | float, ctx: SpanContext | None = None) -> None:
        with self._lock:
            self.value += amount
            if self._shared is not None:
                self._shared[self._at] = self.value
        if ctx is not None and self._family.monotonic and self._family._keeps_exemplar(ctx):
            self.exemplar = Exemplar({}, amount, time.time_ns(), ctx.span_id, ctx.trace_id)

    def point(self, now: int, check: ExemplarCheck | None = None) -> NumberDataPoint:
        exemplar = self.exemplar
        if exemplar is not None and check is not None and not check(exemplar.trace_id or 0):
            exemplar = None
        return NumberDataPoint(
            attributes=self.attributes, start_time_unix_nano=self.start, time_unix_nano=now,
            value=self.value, exemplars=[exemplar] if exemplar is not None else [],
        )


class SumFamily(_Family["SumSeries"]):
    """A counter (monotonic) or an up-down counter."""

    def __init__(self, name: str, unit: str, description: str, exemplar_filter: str, *, monotonic: bool,
                 cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        super().__init__(name, unit, description, exemplar_filter, cardinality_limit)
        self.monotonic = monotonic

    def _make(self, attributes: dict[str, Any]) -> SumSeries:
        return SumSeries(self, attributes)

    def metric(self, now: int, check: ExemplarCheck | None = None) -> Metric | None:
        points = self.points(now, check)
        if not points:
            return None
        return Metric(self.name, self.description, self.unit, Sum(
            data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
            is_monotonic=self.monotonic,
        ))


class HistogramSeries:
    """One series of an explicit-bucket histogram."""

    __slots__ = ("attributes", "start", "count", "sum", "min", "max", "counts", "exemplars", "_bounds",
                 "_lock", "_family", "_shared", "_at")

    def __init__(self, family: HistogramFamily, attributes: dict[str, Any]) -> None:
        self._family = family
        self._bounds = family.bounds
        self.attributes = attributes
        self.start = time.time_ns()
        self.count = 0
        self.sum: float = 0
        self.min = float("inf")
        self.max = float("-inf")
        self.counts = [0] * (len(family.bounds) + 1)
        self.exemplars: list[Exemplar | None] = [None] * (len(family.bounds) + 1)
        self._lock = threading.Lock()
        self._shared: Any = None
        self._at = 0

    def share(self, values: Any, at: int) -> None:
        """Also store count, sum, min, max and the bucket counts in ``values[at:]`` at every record (see
        :meth:`SumSeries.share`)."""
        with self._lock:
            values[at:at + 4] = array("d", (self.count, self.sum, self.min, self.max))
            values[at + 4:at + 4 + len(self.counts)] = array("d", self.counts)
            self._shared, self._at = values, at

    def record(self, value: float, ctx: SpanContext | None = None) -> None:
        index = bisect_left(self._bounds, value)
        with self._lock:
            self.counts[index] += 1
            self.count += 1
            self.sum += value
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value
            shared = self._shared
            if shared is not None:
                at = self._at
                shared[at + 4 + index] = self.counts[index]
                shared[at] = self.count
                shared[at + 1] = self.sum
                shared[at + 2] = self.min
                shared[at + 3] = self.max
        if ctx is not None and self._family._keeps_exemplar(ctx):
            self.exemplars[index] = Exemplar({}, value, time.time_ns(), ctx.span_id, ctx.trace_id)

    def point(self, now: int, check: ExemplarCheck | None = None) -> HistogramDataPoint:
        with self._lock:
            count, total, low, high, counts = self.count, self.sum, self.min, self.max, list(self.counts)
        exemplars = [e for e in self.exemplars if e is not None and (check is None or check(e.trace_id or 0))]
        return HistogramDataPoint(
            attributes=self.attributes, start_time_unix_nano=self.start, time_unix_nano=now,
            count=count, sum=total, bucket_counts=counts, explicit_bounds=self._bounds,
            min=low, max=high, exemplars=exemplars,
        )


class HistogramFamily(_Family["HistogramSeries"]):
    """An explicit-bucket histogram."""

    def __init__(self, name: str, unit: str, description: str, exemplar_filter: str,
                 bounds: Sequence[float], cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        super().__init__(name, unit, description, exemplar_filter, cardinality_limit)
        ordered = tuple(float(b) for b in bounds)
        if list(ordered) != sorted(set(ordered)):
            raise ConfigurationError(f"histogram {name} buckets", list(bounds), "bounds that increase strictly")
        self.bounds = ordered

    def _make(self, attributes: dict[str, Any]) -> HistogramSeries:
        return HistogramSeries(self, attributes)

    def metric(self, now: int, check: ExemplarCheck | None = None) -> Metric | None:
        points = [p for p in self.points(now, check) if p.count]
        if not points:
            return None
        return Metric(self.name, self.description, self.unit, Histogram(
            data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE,
        ))


class BoundMetrics:
    """The pre-aggregated instruments of one app; :meth:`produce` reports them in the SDK's data model."""

    def __init__(self, exemplar_filter: str = "trace_based", *, cardinality_limit: int = CARDINALITY_LIMIT) -> None:
        if exemplar_filter not in EXEMPLAR_FILTERS:
            raise ConfigurationError("exemplar filter", exemplar_filter, f"one of {', '.join(EXEMPLAR_FILTERS)}")
        if cardinality_limit < 2:
            raise ConfigurationError("cardinality limit", cardinality_limit, "at least 2")
        self.exemplar_filter = exemplar_filter
        self.cardinality_limit = cardinality_limit
        self.exemplar_check: ExemplarCheck | None = None
        """Which trace ids an exemplar may name when reported (the tail sampler's kept traces); None: any."""
        self._families: dict[str, _Family] = {}
        self._lock = threading.Lock()

    def _add(self, family: _Family) -> Any:
        """Like an SDK meter, asking twice for the same instrument gives the same one."""
        with self._lock:
            existing = self._families.get(family.name)
            if existing is None:
                self._families[family.name] = family
                return family
        if (type(existing), existing.unit, getattr(existing, "monotonic", None), getattr(existing, "bounds", None)) != (
                type(family), family.unit, getattr(family, "monotonic", None), getattr(family, "bounds", None)):
            raise ConfigurationError(f"instrument {family.name!r}", f"a {type(family).__name__} in {family.unit!r}",
                                     "the kind, unit and buckets it was first defined with")
        return existing

    def counter(self, name: str, unit: str = "1", description: str = "") -> SumFamily:
        return self._add(SumFamily(name, unit, description, self.exemplar_filter, monotonic=True,
                                   cardinality_limit=self.cardinality_limit))

    def up_down_counter(self, name: str, unit: str = "1", description: str = "") -> SumFamily:
        return self._add(SumFamily(name, unit, description, self.exemplar_filter, monotonic=False,
                                   cardinality_limit=self.cardinality_limit))

    def histogram(self, name: str, unit: str, description: str, bounds: Iterable[float]) -> HistogramFamily:
        return self._add(HistogramFamily(name, unit, description, self.exemplar_filter, tuple(bounds),
                                         self.cardinality_limit))

    def produce(self) -> list[Metric]:
        """Every family with data, as SDK ``Metric`` objects (cumulative)."""
        now = time.time_ns()
        out = []
        for family in list(self._families.values()):
            metric = family.metric(now, self.exemplar_check)
            if metric is not None:
                out.append(metric)
        return out
