"""One metric reader for every metrics output: Prometheus scrapes and periodic pushes.

The SDK aggregates every measurement once per registered reader, so each
extra reader costs on the hot path. The hub is the single reader: a Prometheus
scrape collects from it, and any number of exporters (OTLP, console) are fed
from it on their own intervals, each on its own thread from :meth:`MetricsHub.start`
on (the app's start, or its first execution). Readers cannot be
added to an SDK ``MeterProvider`` after it is built; pushes can be added to the
hub at any time, which is what ``MonitoringPlugin(backend="otlp")`` needs.

Every snapshot also carries the app's pre-aggregated hot-path instruments
(:mod:`nexus_otel.telemetry.bound`), so every output sees them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry

from . import contract
from .bound import BoundMetrics
from .prometheus import to_families
from .shared_counts import CountsFile, SharedBoundMetrics

log = logging.getLogger("nexus_otel.metrics")

_CUMULATIVE: dict[type, AggregationTemporality] = {
    cls: AggregationTemporality.CUMULATIVE
    for cls in (Counter, UpDownCounter, Histogram, ObservableCounter, ObservableUpDownCounter, ObservableGauge)
}


class _PrometheusCollector:
    def __init__(self, hub: MetricsHub, resource_labels: Callable[[str], bool]) -> None:
        self._hub = hub
        self._resource_labels = resource_labels

    def collect(self) -> Any:
        return to_families(self._hub.snapshot(), self._resource_labels)

    def describe(self) -> list[Any]:
        return []


class Push:
    """An exporter fed from the hub every ``interval`` seconds on its own thread, from :meth:`start` on."""

    def __init__(self, hub: MetricsHub, exporter: MetricExporter, interval: float, name: str) -> None:
        self.hub = hub
        self.exporter = exporter
        self.interval = interval
        self.name = name
        self.exported = 0
        self.failed = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> Push:
        """Push every ``interval`` seconds from now on (again: nothing more)."""
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=f"nexus-otel-metrics-{self.name}",
                                                daemon=True)
                self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.push()

    def push(self, timeout_millis: float = 10_000) -> bool:
        """Export the current values now; failures are counted and logged, never raised."""
        data = self.hub.snapshot()
        if data is None:
            return True
        with self._lock:
            try:
                result = self.exporter.export(data, timeout_millis=timeout_millis)
            except Exception as exc:  # an exporter must not kill the push thread
                log.error("metrics push %s failed: %s", self.name, exc)
                result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            self.exported += 1
            return True
        self.failed += 1
        return False

    def stop(self) -> None:
        """A last push, then shut the exporter down."""
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(self.interval + 5)
        self.push()
        self.exporter.shutdown()
        self.hub._forget(self)


class MetricsHub(MetricReader):
    """The app's one metric reader (cumulative); serves ``registry`` and feeds pushes."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 resource_labels: Callable[[str], bool] = lambda key: key == contract.SERVICE_NAME,
                 resource: Resource | None = None) -> None:
        """``resource`` is the meter provider's: pre-aggregated metrics are reported under it."""
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._collect_lock = threading.Lock()
        self._last: MetricsData | None = None
        self._pushes: list[Push] = []
        self._pushing = False
        self._pushes_lock = threading.Lock()
        self._registry = registry
        self._resource_labels = resource_labels
        self._collector = _PrometheusCollector(self, resource_labels)
        self._counts: CountsFile | None = None
        self._bound: BoundMetrics | None = None
        self._bound_scope: InstrumentationScope | None = None
        self._bound_resource: Resource | None = resource
        if registry is not None:
            registry.register(self._collector)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._last = metrics_data

    def bound_metrics(self, scope: InstrumentationScope, resource: Resource,
                      exemplar_filter: str = "trace_based") -> BoundMetrics:
        """The hub's pre-aggregated instruments (one set per hub, like one meter), reported in every snapshot."""
        with self._collect_lock:
            if self._bound is None:
                self._bound = (BoundMetrics(exemplar_filter) if self._counts is None
                               else SharedBoundMetrics(self._counts, exemplar_filter))
                self._bound_scope = scope
                self._bound_resource = self._bound_resource or resource
            return self._bound

    def share_counts(self, counts: CountsFile) -> bool:
        """Have the pre-aggregated instruments store their values in ``counts`` at every measurement as well
        (with ``serve --workers``, so that a worker killed outright leaves them to its peers). False when
        :meth:`bound_metrics` came first (its instruments exist already and cannot move)."""
        with self._collect_lock:
            if self._bound is not None:
                return False
            self._counts = counts
            return True

    def prometheus_families(self, metrics: list[Metric]) -> list[Any]:
        """``metrics`` as Prometheus families labelled as this hub's own are (``target_info`` left out):
        how a worker reads the counts a dead peer left (:func:`~nexus_otel.telemetry.shared_counts.read_counts`)."""
        if not metrics:
            return []
        scope = self._bound_scope or InstrumentationScope(contract.INSTRUMENTATION_NAME)
        resource = self._bound_resource or Resource.get_empty()
        data = MetricsData([ResourceMetrics(resource, [ScopeMetrics(scope, metrics, "")], "")])
        return [f for f in to_families(data, self._resource_labels) if f.type != "info"]

    def snapshot(self) -> MetricsData | None:
        """Collect now and return the data (None before the hub is registered)."""
        with self._collect_lock:
            self._last = None
            self.collect()
            if self._bound is not None:
                self._last = self._merged(self._last, self._bound.produce())
            return self._last

    def _merged(self, data: MetricsData | None, metrics: list[Metric]) -> MetricsData | None:
        """``data`` with ``metrics`` added under the hub's scope (in the provider's resource)."""
        if not metrics:
            return data
        scope = self._bound_scope
        assert scope is not None and self._bound_resource is not None
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if not resource_metrics:
            return MetricsData([ResourceMetrics(self._bound_resource, [ScopeMetrics(scope, metrics, "")], "")])
        first = resource_metrics[0]  # the hub reads one provider: one resource
        scopes = list(first.scope_metrics)
        for i, sm in enumerate(scopes):
            if sm.scope.name == scope.name and sm.scope.version == scope.version:
                scopes[i] = ScopeMetrics(sm.scope, [*sm.metrics, *metrics], sm.schema_url)
                break
        else:
            scopes.append(ScopeMetrics(scope, metrics, ""))
        resource_metrics[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics)

    @property
    def pushes(self) -> list[Push]:
        return list(self._pushes)

    def add_push(self, exporter: MetricExporter, interval: float, name: str = "") -> Push:
        """Feed ``exporter`` every ``interval`` seconds until :meth:`shutdown`, once the hub is started."""
        push = Push(self, exporter, interval, name or type(exporter).__name__)
        with self._pushes_lock:
            self._pushes.append(push)
            if self._pushing:
                push.start()
        return push

    def start(self) -> MetricsHub:
        """Start every push's thread; pushes added later start at once (again: nothing more).

        :meth:`Telemetry.start <nexus_otel.telemetry.telemetry.Telemetry.start>` calls it.
        """
        with self._pushes_lock:
            self._pushing = True
            for push in self._pushes:
                push.start()
        return self

    def _forget(self, push: Push) -> None:
        with self._pushes_lock:
            if push in self._pushes:
                self._pushes.remove(push)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return all([push.push(timeout_millis) for push in list(self._pushes)])

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        for push in list(self._pushes):
            push.stop()
        self._pushes.clear()
        if self._registry is not None:
            try:
                self._registry.unregister(self._collector)
            except KeyError:
                pass
            self._registry = None
