"""Whether the demo's telemetry reached where it was sent: the OTLP endpoint, the local store.

The app counts what each span sink exported, failed to export and dropped
(``nexus_telemetry_spans_total{exporter, outcome}``) and what each metrics
push sent or failed to. The demo flushes, reads those counts, and names the
endpoint that did not take its telemetry. It does so once after its first
request, so that an endpoint nobody listens on (or one speaking another
protocol) fails the demo in seconds, and again after all its traffic.

An OTLP exporter retries a failed export until its timeout (10 s by default);
the demo shortens that to :data:`DEMO_EXPORT_TIMEOUT_MS` for each signal whose timeout
is not set (``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``, ...).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from prometheus_client.parser import text_string_to_metric_families

from ..app import Nexus
from ..processors.metered import SPANS_METRIC
from ..telemetry.config import TelemetryConfig
from ..urls import mask_url

DEMO_EXPORT_TIMEOUT_MS = 3000
"""The OTLP export timeout (with its retries) the demo uses unless one is set: a loopback Collector answers in
milliseconds, and a closed port then fails the demo in a few seconds rather than after 10 s per export."""
_SPANS_SAMPLE = SPANS_METRIC.replace(".", "_") + "_total"
_PROBLEM_OUTCOMES = {"failed": "could not be exported to", "dropped": "were dropped (queue full) on their way to",
                     "overflow": "were dropped (its memory bound) by"}


def with_demo_timeouts(config: TelemetryConfig) -> TelemetryConfig:
    """``config`` with the demo's OTLP export timeout for each signal whose timeout is not set."""
    timeout = DEMO_EXPORT_TIMEOUT_MS / 1000
    traces, metrics, logs = config.otlp_traces, config.otlp_metrics, config.otlp_logs
    return replace(config,
                   otlp_traces=replace(traces, timeout=timeout) if traces.timeout is None else traces,
                   otlp_metrics=replace(metrics, timeout=timeout) if metrics.timeout is None else metrics,
                   otlp_logs=replace(logs, timeout=timeout) if logs.timeout is None else logs)


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the app's span sinks and metric pushes did with the telemetry so far."""

    spans: dict[tuple[str, str], float]
    """``(exporter, outcome)`` to a span count."""
    pushes: dict[str, tuple[int, int]]
    """A metrics push's name to (pushes that succeeded, pushes that failed)."""

    def exported(self, exporter: str) -> float:
        return self.spans.get((exporter, "exported"), 0.0)


def flush_and_count(app: Nexus) -> Delivery:
    """Flush the app's spans and metrics now, side by side (each OTLP export bounded by its timeout), then read
    what the app counted."""
    providers = (app.telemetry.tracer_provider, app.telemetry.meter_provider)
    flushes = [flush for flush in (getattr(p, "force_flush", None) for p in providers) if flush is not None]
    with ThreadPoolExecutor(len(flushes) or 1, thread_name_prefix="nexus-otel-demo-flush") as pool:
        for future in [pool.submit(flush) for flush in flushes]:
            future.result()
    body, _ = app.telemetry.prometheus_exposition()
    spans: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == _SPANS_SAMPLE:
                key = (sample.labels.get("exporter", ""), sample.labels.get("outcome", ""))
                spans[key] = spans.get(key, 0.0) + sample.value
    hub = app.telemetry.metrics_hub
    pushes = {p.name: (p.exported, p.failed) for p in hub.pushes} if hub is not None else {}
    return Delivery(spans, pushes)


def _span_target(app: Nexus, exporter: str) -> str:
    config = app.telemetry.config
    if exporter == "otlp":
        endpoint = mask_url(config.otlp_traces.endpoint or "") or "the exporter's default endpoint (localhost)"
        return f"the OTLP endpoint {endpoint} ({config.traces_protocol})"
    if exporter == "local":
        return f"the local store in {config.data_dir}"
    if exporter == "tail_sampling":
        return "the tail sampler"
    return f"the {exporter} exporter"


def _push_target(app: Nexus, name: str) -> str:
    config = app.telemetry.config
    if name == "otlp":
        endpoint = mask_url(config.otlp_metrics.endpoint or "") or "the exporter's default endpoint (localhost)"
        return f"the OTLP endpoint {endpoint} ({config.metrics_protocol})"
    return f"the metrics push {name}"


def problems(app: Nexus, delivery: Delivery) -> list[str]:
    """One sentence per sink that failed to deliver or dropped telemetry, naming where it was going."""
    out = []
    for (exporter, outcome), count in sorted(delivery.spans.items()):
        if outcome in _PROBLEM_OUTCOMES and count:
            out.append(f"{count:.0f} spans {_PROBLEM_OUTCOMES[outcome]} {_span_target(app, exporter)}")
    for name, (_, failed) in sorted(delivery.pushes.items()):
        if failed:
            out.append(f"{failed} metrics pushes to {_push_target(app, name)} failed")
    return out


def spans_delivered(delivery: Delivery) -> bool:
    """True when no span sink failed or dropped anything (whatever the metrics pushes did)."""
    return not any(count for (_, outcome), count in delivery.spans.items() if outcome in _PROBLEM_OUTCOMES)


def delivered(app: Nexus, delivery: Delivery) -> list[str]:
    """One phrase per sink that delivered: where, and how much."""
    out = []
    for (exporter, outcome), count in sorted(delivery.spans.items()):
        if outcome == "exported" and exporter != "tail_sampling":
            out.append(f"{count:.0f} spans to {_span_target(app, exporter)}")
    for name, (ok, _) in sorted(delivery.pushes.items()):
        if ok:
            out.append(f"metrics pushed {ok} times to {_push_target(app, name)}")
    return out
