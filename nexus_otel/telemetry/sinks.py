"""Span sinks and metric outputs chosen by ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``.

Timeouts are converted from the specification's milliseconds (the Python
exporters would read them as seconds) and passed in. When an app is given an
``environ`` mapping instead of the process environment, the OTLP endpoint
(with the specification's rules: the signal's own variable as it is, else the
general one plus ``/v1/<signal>`` for http/protobuf), timeout, headers and
compression are all taken from that mapping, so ``environ=`` and the process
environment behave the same.

The OTLP span exporter writes its requests with nexus-otel's own encoder
(:mod:`nexus_otel.exporters.otlp_encoding`, several times cheaper than the SDK's
message objects) unless ``NEXUS_OTEL_OTLP_ENCODER=stock`` asks for the SDK's
exporter as it is; sending, retries and every ``OTEL_EXPORTER_OTLP_*`` setting are
the SDK's either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

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

from ..errors import ConfigurationError
from .config import OTLP_ENCODER, OTLP_ENCODERS, TelemetryConfig, otlp_encoder

log = logging.getLogger("nexus_otel.telemetry")

LOCAL_SCHEDULE_DELAY_MS = 500
"""How long spans wait in the local store's batch queue at most: `nexus-otel traces` sees them within a second."""


def _first(environ: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` set (non-empty) in ``environ``: a signal's own variable, then the general one."""
    for name in names:
        value = (environ.get(name) or "").strip()
        if value:
            return value
    return None


def otlp_endpoint(environ: Mapping[str, str] | None, signal: str, protocol: str) -> str | None:
    """The endpoint ``environ`` gives for ``signal`` (``traces`` or ``metrics``); None: let the exporter read it."""
    if environ is None:
        return None
    specific = _first(environ, f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific
    general = _first(environ, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if not general:
        return None
    return general if protocol == "grpc" else f"{general.removesuffix('/')}/v1/{signal}"


def otlp_timeout(environ: Mapping[str, str] | None, signal: str) -> float | None:
    """Seconds, from ``OTEL_EXPORTER_OTLP_{SIGNAL_}TIMEOUT`` in milliseconds as the specification says.

    The Python exporters read these variables as seconds (``1000`` waited 1000 s), so the value is
    converted and passed in; None when neither is set (the exporters' default, 10 s).
    """
    raw = _first(os.environ if environ is None else environ,
                 f"OTEL_EXPORTER_OTLP_{signal.upper()}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    return int(raw) / 1000 if raw else None  # checked to be a whole number at start


def _compression(protocol: str, var: str, value: str) -> Any:
    name = value.strip().lower()
    if name not in ("gzip", "deflate", "none"):
        raise ConfigurationError(var, value, "gzip, deflate or none")
    if protocol == "grpc":
        import grpc

        return {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate,
                "none": grpc.Compression.NoCompression}[name]
    from opentelemetry.exporter.otlp.proto.http import Compression

    return Compression(name)


def otlp_options(environ: Mapping[str, str] | None, signal: str, protocol: str) -> dict[str, Any]:
    """Constructor arguments for an OTLP exporter of ``signal``: endpoint, timeout (ms converted), headers and
    compression, from ``environ`` (or the process's), so both behave the same; a bad compression names its variable."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {"endpoint": otlp_endpoint(environ, signal, protocol),
                               "timeout": otlp_timeout(environ, signal)}
    upper = signal.upper()
    headers = _first(env, f"OTEL_EXPORTER_OTLP_{upper}_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
    if headers:
        from opentelemetry.util.re import parse_env_headers

        options["headers"] = dict(parse_env_headers(headers, liberal=True))
    for var in (f"OTEL_EXPORTER_OTLP_{upper}_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"):
        if (env.get(var) or "").strip():
            options["compression"] = _compression(protocol, var, env[var])
            break
    return options


def otlp_span_exporter(protocol: str, environ: Mapping[str, str] | None = None,
                       encoder: str | None = None) -> SpanExporter:
    """The real OTLP span exporter for ``protocol`` (``grpc`` or ``http/protobuf``).

    ``encoder`` is ``fast`` (our bytes, the SDK's sending) or ``stock`` (the SDK's exporter);
    None reads ``NEXUS_OTEL_OTLP_ENCODER`` from ``environ`` (or the process's).
    """
    options = otlp_options(environ, "traces", protocol)
    if encoder is None:
        encoder = otlp_encoder(os.environ if environ is None else environ)
    elif encoder not in OTLP_ENCODERS:
        raise ConfigurationError(OTLP_ENCODER, encoder, "one of " + ", ".join(OTLP_ENCODERS))
    if encoder == "fast":
        from ..exporters.otlp_exporters import OTLPGrpcSpanExporter, OTLPHttpSpanExporter, UnsupportedExporterVersion

        try:
            return (OTLPGrpcSpanExporter if protocol == "grpc" else OTLPHttpSpanExporter)(**options)
        except UnsupportedExporterVersion as exc:  # an SDK release moved what the fast path uses
            log.warning("%s; sending spans with the SDK's OTLP exporter as it is", exc)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter(**options)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter(**options)


def otlp_metric_exporter(protocol: str, environ: Mapping[str, str] | None = None) -> MetricExporter:
    """The real OTLP metric exporter for ``protocol``."""
    options = otlp_options(environ, "metrics", protocol)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(**options)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(**options)


def span_processors(config: TelemetryConfig, counter: Any,
                    environ: Mapping[str, str] | None = None) -> list[SpanProcessor]:
    """One processor per configured traces exporter: batching (and counted) for I/O, simple for the console."""
    from ..processors.metered import MeteredBatchSpanProcessor

    processors: list[SpanProcessor] = []
    for name in config.traces_exporters:
        if name == "otlp":
            processors.append(MeteredBatchSpanProcessor(
                otlp_span_exporter(config.traces_protocol, environ, config.otlp_encoder), "otlp", counter))
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
