"""Case (a-lean): the raw SDK reference of (a) against the host as most apps run it, on a tracer and meter provider
it built itself (its lean tracer, its pre-aggregated metrics), spans going through its redaction to the same
discarding exporter. Reported, no target: how far below the raw SDK the host's own path is."""

from __future__ import annotations

from collections.abc import Callable

from fixtures import (
    INPUTS,
    WORKFLOW,
    BenchPlugin,
    DiscardingExporter,
    Providers,
    RawSdkReference,
    span_shape,
    trivial_workflow,
)
from harness import Case, Side
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from nexus_otel import Nexus


def build_lean_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    """(a-lean): the raw SDK reference of (a) against the host on a tracer and meter provider it built itself,
    as most apps run (its lean tracer, its pre-aggregated metrics), spans to the same discarding exporter."""
    ref_providers = Providers.fresh()
    reference = RawSdkReference(ref_providers, trivial_workflow)
    baseline = Side("raw SDK", lambda: reference.execute(INPUTS), ref_providers.shutdown,
                    {"exporter": ref_providers.exporter})
    from nexus_otel.telemetry.telemetry import Telemetry

    telemetry = Telemetry("bench", environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                            "OTEL_LOGS_EXPORTER": "none"})
    exporter = DiscardingExporter()
    telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    app = Nexus("bench", telemetry=telemetry)
    app.add_plugin(BenchPlugin())
    app.register(WORKFLOW, trivial_workflow)
    app.start()
    candidate = Side("Nexus (own providers)", lambda: app.execute_workflow(WORKFLOW, INPUTS), app.stop,
                     {"exporter": exporter})
    return baseline, candidate


def check_lean_case(baseline: Side, candidate: Side) -> list[str]:
    """After one execution each, both sides must have exported the same spans (names, attribute keys, nesting)."""
    shapes = []
    for side in (baseline, candidate):
        exporter: DiscardingExporter = side.state["exporter"]
        exporter.kept.clear()
        exporter.keep = True
        side.run()
        exporter.keep = False
        shapes.append(sorted(span_shape(s) for s in exporter.kept))
    if len(shapes[1]) != 4 or shapes[0] != shapes[1]:
        return [f"span shapes differ:\n  raw SDK {shapes[0]}\n  Nexus   {shapes[1]}"]
    return []


CASES = [
    Case(
        key="a-lean", title="full telemetry on the host's own providers (its lean tracer) vs raw OpenTelemetry SDK",
        baseline_label="raw SDK", candidate_label="Nexus own",
        build=build_lean_case, target=None, n=400, check=check_lean_case,
    ),
]
