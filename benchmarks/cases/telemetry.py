"""Case (a), full telemetry: the host (workflow span, three hook spans, the contract metrics) over the same spans
and metrics made with the raw OpenTelemetry SDK and no host. Target <= 1.25.

Before timing, one execution of each side must have made the same spans (names, attribute keys, nesting) and
the same metrics (names, units, bucket boundaries, attribute sets, recordings under each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fixtures import INPUTS, WORKFLOW, Providers, RawSdkReference, core_host, span_shape, trivial_workflow
from harness import Case, Side
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from nexus_otel.telemetry import contract as c


def build_telemetry_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    ref_providers = Providers.fresh()
    reference = RawSdkReference(ref_providers, trivial_workflow)
    baseline = Side(
        "raw SDK", lambda: reference.execute(INPUTS), ref_providers.shutdown,
        {"providers": ref_providers},
    )

    app, host_providers, close_host = core_host()
    execute = app.execute_workflow
    candidate = Side(
        "Nexus", lambda: execute(WORKFLOW, INPUTS), close_host, {"providers": host_providers},
    )
    return baseline, candidate


OBSERVED_HEALTH = frozenset({"nexus.records.unavailable", "nexus.records.outbox.unwritable"})
"""The host's own health, observed when metrics are collected (nothing recorded per execution): not part of the
spans and metrics a hand-instrumented caller would make."""


def _metric_shape(reader: InMemoryMetricReader) -> dict[str, Any]:
    """{name: (unit, bucket bounds, [(attributes, count, value)])} recorded so far (setup and health excluded)."""
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name in OBSERVED_HEALTH:
                    continue
                points = [p for p in metric.data.data_points if p.attributes.get(c.M_EVENT) != c.SETUP]
                if not points:
                    continue
                bounds = tuple(getattr(points[0], "explicit_bounds", None) or ())
                # attribute set and how much was recorded under it (count or sum)
                attrs = sorted(
                    (tuple(sorted(p.attributes.items())), getattr(p, "count", None), getattr(p, "value", None))
                    for p in points
                )
                out[metric.name] = (metric.unit, bounds, attrs)
    return out


def check_telemetry_case(baseline: Side, candidate: Side) -> list[str]:
    """After one execution each, both sides must have emitted the same spans and metrics.

    Spans: names, attribute keys, nesting. Metrics: names, units, bucket
    boundaries, attribute sets and the number of recordings under each.
    """
    problems: list[str] = []
    shapes = []
    for side in (baseline, candidate):
        providers: Providers = side.state["providers"]
        providers.exporter.kept.clear()
        providers.exporter.keep = True
        side.run()
        providers.exporter.keep = False
        spans = sorted(span_shape(s) for s in providers.exporter.kept)
        shapes.append((spans, _metric_shape(providers.reader)))
    (ref_spans, ref_metrics), (host_spans, host_metrics) = shapes
    if len(host_spans) != 4:
        problems.append(f"host made {len(host_spans)} spans per execution, expected 4")
    if ref_spans != host_spans:
        problems.append(f"span shapes differ:\n  raw SDK {ref_spans}\n  Nexus   {host_spans}")
    if ref_metrics != host_metrics:
        problems.append(f"metric shapes differ:\n  raw SDK {ref_metrics}\n  Nexus   {host_metrics}")
    return problems


CASES = [
    Case(
        key="a", title="full telemetry: host vs raw OpenTelemetry SDK (trivial workflow, 3 hooks)",
        baseline_label="raw SDK", candidate_label="Nexus",
        build=build_telemetry_case, target=1.25, n=400, check=check_telemetry_case,
    ),
]
