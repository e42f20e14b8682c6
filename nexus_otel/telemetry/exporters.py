"""Span sinks and metric outputs chosen by ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``.

The OTLP exporters read headers and compression from the ``OTEL_EXPORTER_OTLP_*``
variables; timeouts are converted from the specification's milliseconds (the
Python exporters would read them as seconds) and passed in. When an
app is given an ``environ`` mapping instead of the process environment, the
endpoint is taken from that mapping (with the specification's rules: the
signal's own variable as it is, else the general one plus ``/v1/<signal>``
for http/protobuf), so spans go where the configuration that chose ``otlp``
says; everything else still comes from the process environment.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from .config import TelemetryConfig

LOCAL_SCHEDULE_DELAY_MS = 500
"""How long spans wait in the local store's batch queue at most: `nexus-otel traces` sees them within a second."""


def otlp_endpoint(environ: Mapping[str, str] | None, signal: str, protocol: str) -> str | None:
    """The endpoint ``environ`` gives for ``signal`` (``traces`` or ``metrics``); None: let the exporter read it."""
    if environ is None:
        return None
    specific = (environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or "").strip()
    if specific:
        return specific
    general = (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if not general:
        return None
    return general if protocol == "grpc" else f"{general.removesuffix('/')}/v1/{signal}"


def otlp_timeout(environ: Mapping[str, str] | None, signal: str) -> float | None:
    """Seconds, from ``OTEL_EXPORTER_OTLP_{SIGNAL_}TIMEOUT`` in milliseconds as the specification says.

    The Python exporters read these variables as seconds (``1000`` waited 1000 s), so the value is
    converted and passed in; None when neither is set (the exporters' default, 10 s).
    """
    env = os.environ if environ is None else environ
    raw = (env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT") or "").strip() or (
        env.get("OTEL_EXPORTER_OTLP_TIMEOUT") or "").strip()
    return int(raw) / 1000 if raw else None  # checked to be a whole number at start


def otlp_span_exporter(protocol: str, environ: Mapping[str, str] | None = None) -> SpanExporter:
    """The real OTLP span exporter for ``protocol`` (``grpc`` or ``http/protobuf``)."""
    endpoint = otlp_endpoint(environ, "traces", protocol)
    timeout = otlp_timeout(environ, "traces")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=endpoint, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(endpoint=endpoint, timeout=timeout)


def otlp_metric_exporter(protocol: str, environ: Mapping[str, str] | None = None) -> MetricExporter:
    """The real OTLP metric exporter for ``protocol``."""
    endpoint = otlp_endpoint(environ, "metrics", protocol)
    timeout = otlp_timeout(environ, "metrics")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(endpoint=endpoint, timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(endpoint=endpoint, timeout=timeout)


def span_processors(config: TelemetryConfig, counter: Any,
                    environ: Mapping[str, str] | None = None) -> list[SpanProcessor]:
    """One processor per configured traces exporter: batching (and counted) for I/O, simple for the console."""
    from ..processors.metered import MeteredBatchSpanProcessor

    processors: list[SpanProcessor] = []
    for name in config.traces_exporters:
        if name == "otlp":
            processors.append(MeteredBatchSpanProcessor(
                otlp_span_exporter(config.traces_protocol, environ), "otlp", counter))
        elif name == "local":
            from ..exporters.local import LocalSpanExporter

            env = os.environ if environ is None else environ
            # A trace is on disk within half a second of its request, for `nexus-otel traces` right after
            # it (the SDK's default is 5 s); OTEL_BSP_SCHEDULE_DELAY still wins when it is set.
            delay = {} if (env.get("OTEL_BSP_SCHEDULE_DELAY") or "").strip() else {
                "schedule_delay_millis": LOCAL_SCHEDULE_DELAY_MS}
            processors.append(MeteredBatchSpanProcessor(LocalSpanExporter(
                config.data_dir, max_bytes=config.local_max_bytes, max_files=config.local_max_files,
            ), "local", counter, **delay))
        elif name == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
    return processors


def metric_exporters(config: TelemetryConfig,
                     environ: Mapping[str, str] | None = None) -> list[tuple[str, MetricExporter]]:
    """The push exporters for ``OTEL_METRICS_EXPORTER`` (``prometheus`` is served, not pushed)."""
    out: list[tuple[str, MetricExporter]] = []
    for name in config.metrics_exporters:
        if name == "otlp":
            out.append(("otlp", otlp_metric_exporter(config.metrics_protocol, environ)))
        elif name == "console":
            out.append(("console", ConsoleMetricExporter()))
    return out


def wants_delta(environ: dict[str, str] | None = None) -> bool:
    """Delta temporality needs a reader of its own; the shared hub is cumulative."""
    env = os.environ if environ is None else environ
    return env.get("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "").strip().lower() in ("delta", "lowmemory")


def separate_reader(exporter: MetricExporter) -> MetricReader:
    return PeriodicExportingMetricReader(exporter)
