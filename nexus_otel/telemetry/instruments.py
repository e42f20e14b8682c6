"""The contract's instruments (and the HTTP channel's), created once per app.

Each is a *family*: ``family.bind(attributes)`` returns a series to keep, whose
``add(amount, ctx)`` / ``record(value, ctx)`` is the whole hot-path cost.
``ctx`` is the span context to keep as an exemplar (or None).

Two backends give the same families:

* :class:`~nexus_otel.telemetry.bound.BoundMetrics` when nexus-otel built the
  meter provider: pre-aggregated series, reported through the app's metrics hub;
* the SDK's own instruments otherwise (a provider the process or the caller
  supplied), so every reader of that provider sees the measurements. Exemplars
  then come from the current context, as the SDK does it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry.metrics import Meter
from opentelemetry.trace import SpanContext

from . import contract as c
from .bound import BoundMetrics


class AddSeries(Protocol):
    """One bound attribute set of a counter or up-down counter."""

    def add(self, amount: int | float, ctx: SpanContext | None = None) -> None: ...


class RecordSeries(Protocol):
    """One bound attribute set of a histogram."""

    def record(self, value: float, ctx: SpanContext | None = None) -> None: ...


S_co = TypeVar("S_co", covariant=True)


class Family(Protocol[S_co]):
    """An instrument: ``bind`` gives the series of an attribute set (keep it: binding costs a lookup)."""

    def bind(self, attributes: Mapping[str, Any]) -> S_co: ...


class _SdkSeries:
    __slots__ = ("_measure", "_attributes")

    def __init__(self, measure: Callable[..., None], attributes: Mapping[str, Any]) -> None:
        self._measure = measure
        self._attributes = dict(attributes)

    def add(self, amount: int | float, ctx: SpanContext | None = None) -> None:
        self._measure(amount, self._attributes)

    record = add


class _SdkFamily:
    """An SDK instrument behind the family interface (the SDK keeps the series)."""

    def __init__(self, instrument: Any, method: str) -> None:
        self._measure = getattr(instrument, method)

    def bind(self, attributes: Mapping[str, Any]) -> _SdkSeries:
        return _SdkSeries(self._measure, attributes)


class SeriesCache:
    """A family's series by a key the caller already has, so the hot path skips building attributes.

    ``get(key, make, *args)`` binds ``make(*args)`` the first time ``key`` is seen. At most
    ``limit`` keys are remembered (a key may carry a caller's string, such as a channel); past
    that, each miss binds again, which is slower but correct.
    """

    __slots__ = ("_family", "_by_key", "_limit")

    def __init__(self, family: Family[Any], limit: int = 4096) -> None:
        self._family = family
        self._by_key: dict[Any, Any] = {}
        self._limit = limit

    def get(self, key: Any, make: Callable[..., Mapping[str, Any]], *args: Any) -> Any:
        series = self._by_key.get(key)
        if series is None:
            series = self._family.bind(make(*args))
            if len(self._by_key) < self._limit:
                self._by_key[key] = series
        return series

    def __len__(self) -> int:
        return len(self._by_key)


HTTP_SERVER_DURATION = c.MetricSpec(
    "http.server.request.duration", "s", "Duration of HTTP server requests.",
    "http_server_request_duration_seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10),
)


@dataclass(frozen=True, slots=True)
class Instruments:
    """The hot-path instruments; their users bind attribute sets once and keep the series."""

    workflow_duration: Family[RecordSeries]
    workflow_executions: Family[AddSeries]
    workflow_active: Family[AddSeries]
    hook_duration: Family[RecordSeries]
    plugin_errors: Family[AddSeries]
    http_server_duration: Family[RecordSeries]

    @classmethod
    def create(cls, meter: Meter, bound: BoundMetrics | None = None) -> Instruments:
        if bound is not None:
            def histogram(spec: c.MetricSpec) -> Family[RecordSeries]:
                return bound.histogram(spec.name, spec.unit, spec.description, spec.buckets or ())

            def counter(spec: c.MetricSpec) -> Family[AddSeries]:
                return bound.counter(spec.name, spec.unit, spec.description)

            def up_down(spec: c.MetricSpec) -> Family[AddSeries]:
                return bound.up_down_counter(spec.name, spec.unit, spec.description)
        else:
            def histogram(spec: c.MetricSpec) -> Family[RecordSeries]:
                return _SdkFamily(meter.create_histogram(
                    spec.name, unit=spec.unit, description=spec.description,
                    explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
                ), "record")

            def counter(spec: c.MetricSpec) -> Family[AddSeries]:
                return _SdkFamily(meter.create_counter(spec.name, unit=spec.unit, description=spec.description),
                                  "add")

            def up_down(spec: c.MetricSpec) -> Family[AddSeries]:
                return _SdkFamily(meter.create_up_down_counter(
                    spec.name, unit=spec.unit, description=spec.description), "add")

        return cls(
            workflow_duration=histogram(c.WORKFLOW_DURATION),
            workflow_executions=counter(c.WORKFLOW_EXECUTIONS),
            workflow_active=up_down(c.WORKFLOW_ACTIVE),
            hook_duration=histogram(c.HOOK_DURATION),
            plugin_errors=counter(c.PLUGIN_ERRORS),
            http_server_duration=histogram(HTTP_SERVER_DURATION),
        )
