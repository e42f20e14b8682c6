"""OpenTelemetry metrics as Prometheus metric families, exemplars included.

Names follow the OpenTelemetry-to-Prometheus compatibility rules: dots become
underscores, the unit becomes a suffix (``s`` -> ``_seconds``), monotonic sums
are counters (``_total``). Histogram exemplars carry ``trace_id`` and
``span_id`` labels, so a Grafana panel can jump from a latency bucket to the
trace in Jaeger (exemplars appear in the OpenMetrics format only, as the
format requires). The resource's ``service.name`` becomes a ``service_name``
label on every series; all resource attributes go into ``target_info``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.sdk.metrics.export import Gauge, Histogram, MetricsData, Sum
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar

_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_UNITS = {
    "s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds",
    "min": "minutes", "h": "hours", "d": "days",
    "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "KBy": "kilobytes", "MBy": "megabytes",
    "%": "percent", "m": "meters", "Hz": "hertz", "V": "volts", "W": "watts",
}


class ReadingFamily(GaugeMetricFamily):
    """A gauge made from an OpenTelemetry ``Gauge`` (an observable gauge's reading of some state), as
    opposed to one made from an up-down counter (a count of this process's own things, in flight).

    Across worker processes the two merge differently: counts add up, readings of a state the workers
    share (an outbox's depth) do not (see :mod:`nexus_otel.telemetry.worker_metrics`).
    """


def metric_name(name: str, unit: str) -> str:
    """The Prometheus base name (counters get ``_total`` added by the family)."""
    base = _INVALID_NAME.sub("_", name).strip("_")
    if base[:1].isdigit():
        base = "_" + base
    suffix = "" if not unit or unit.startswith("{") or unit == "1" else _UNITS.get(unit, _INVALID_NAME.sub("_", unit))
    if suffix and not base.endswith("_" + suffix):
        base = f"{base}_{suffix}"
    return base


def label_name(key: str) -> str:
    label = _INVALID_LABEL.sub("_", key)
    return "key_" + label if label[:1].isdigit() else label


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_value(v) for v in value)
    return str(value)


def _exemplar(ex: Any) -> Exemplar | None:
    if not getattr(ex, "trace_id", None):
        return None
    labels = {"trace_id": f"{ex.trace_id:032x}", "span_id": f"{ex.span_id:016x}"}
    return Exemplar(labels, ex.value, ex.time_unix_nano / 1e9)


def _bucket_exemplars(bounds: tuple[float, ...], exemplars: Iterable[Any]) -> dict[int, Exemplar]:
    out: dict[int, Exemplar] = {}
    for ex in exemplars or ():
        converted = _exemplar(ex)
        if converted is None:
            continue
        index = next((i for i, b in enumerate(bounds) if ex.value <= b), len(bounds))
        out[index] = converted
    return out


def to_families(data: MetricsData | None, resource_labels: Callable[[str], bool]) -> list[Metric]:
    """Convert a collection into metric families; ``resource_labels`` picks resource attributes to copy as labels."""
    families: dict[str, Metric] = {}
    targets: list[dict[str, str]] = []
    for rm in (data.resource_metrics if data else ()):
        resource_attrs = dict(rm.resource.attributes)
        targets.append({label_name(k): _value(v) for k, v in resource_attrs.items()})
        extra = {label_name(k): _value(v) for k, v in resource_attrs.items() if resource_labels(k)}
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _add(families, metric, extra)
    out = list(families.values())
    if targets:
        info = InfoMetricFamily("target", "Target metadata")
        seen = set()
        for labels in targets:
            key = tuple(sorted(labels.items()))
            if key not in seen:
                seen.add(key)
                info.add_metric([], labels)
        out.append(info)
    return out


def _add(families: dict[str, Metric], metric: Any, extra: dict[str, str]) -> None:
    data = metric.data
    name = metric_name(metric.name, metric.unit or "")
    for point in data.data_points:
        labels = {**extra, **{label_name(k): _value(v) for k, v in point.attributes.items()}}
        keys, values = list(labels), list(labels.values())
        if isinstance(data, Sum) and data.is_monotonic:
            family_name = name[: -len("_total")] if name.endswith("_total") else name
            family = (families.get(family_name)
                      or CounterMetricFamily(family_name, metric.description or "", labels=None))
            families[family_name] = family
            exemplars = [e for e in (_exemplar(x) for x in getattr(point, "exemplars", ()) or ()) if e]
            family.samples.append(_sample(family_name + "_total", keys, values, point.value,
                                          exemplars[-1] if exemplars else None))
        elif isinstance(data, (Sum, Gauge)):
            kind = ReadingFamily if isinstance(data, Gauge) else GaugeMetricFamily
            family = families.get(name) or kind(name, metric.description or "", labels=None)
            families[name] = family
            family.samples.append(_sample(name, keys, values, point.value))
        elif isinstance(data, Histogram):
            family = families.get(name) or HistogramMetricFamily(name, metric.description or "", labels=None)
            families[name] = family
            bounds = tuple(point.explicit_bounds)
            by_bucket = _bucket_exemplars(bounds, getattr(point, "exemplars", ()))
            cumulative = 0
            for i, count in enumerate(point.bucket_counts):
                cumulative += count
                le = "+Inf" if i >= len(bounds) else _float(bounds[i])
                family.samples.append(_sample(name + "_bucket", keys + ["le"], values + [le], cumulative,
                                              by_bucket.get(i)))
            family.samples.append(_sample(name + "_count", keys, values, point.count))
            family.samples.append(_sample(name + "_sum", keys, values, point.sum))


def _float(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _sample(name: str, keys: list[str], values: list[str], value: float, exemplar: Exemplar | None = None) -> Any:
    from prometheus_client.samples import Sample

    return Sample(name, dict(zip(keys, values)), value, None, exemplar)
