"""Span sinks and metric outputs chosen by ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``.

The OTLP exporters read headers, compression and timeouts from the
``OTEL_EXPORTER_OTLP_*`` variables exactly as the specification says. When an
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


def otlp_span_exporter(protocol: str, environ: Mapping[str, str] | None = None) -> SpanExporter:
    """The real OTLP span exporter for ``protocol`` (``grpc`` or ``http/protobuf``)."""
    endpoint = otlp_endpoint(environ, "traces", protocol)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(endpoint=endpoint)


def otlp_metric_exporter(protocol: str, environ: Mapping[str, str] | None = None) -> MetricExporter:
    """The real OTLP metric exporter for ``protocol``."""
    endpoint = otlp_endpoint(environ, "metrics", protocol)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(endpoint=endpoint)


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

            processors.append(MeteredBatchSpanProcessor(LocalSpanExporter(
                config.data_dir, max_bytes=config.local_max_bytes, max_files=config.local_max_files,
            ), "local", counter))
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
