"""Span sinks, log sinks and metric outputs chosen by ``OTEL_TRACES_EXPORTER``, ``OTEL_LOGS_EXPORTER`` and
``OTEL_METRICS_EXPORTER``.

Everything is built from the app's one parsed configuration
(:class:`~nexus_otel.telemetry.config.TelemetryConfig`): the OTLP exporters get
their endpoint, timeout (converted from the specification's milliseconds),
headers and compression passed in from its :class:`~nexus_otel.telemetry.config.OtlpTarget`,
so an app given an ``environ`` mapping and one reading the process environment
behave the same.

The OTLP span and log record exporters write their requests with nexus-otel's own
encoders (:mod:`nexus_otel.exporters.otlp_encoding`, several times cheaper than the
SDK's message objects) unless ``NEXUS_OTEL_OTLP_ENCODER=stock`` asks for the SDK's
exporters as they are; sending and retries are the SDK's either way.

Log records go through the SDK's own batch processor and OTLP log exporter; what
each log sink exported, failed to export or dropped (its queue full) is counted
in ``nexus.telemetry.log_records{exporter, outcome}``, as spans are in
``nexus.telemetry.spans``.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    ConsoleLogRecordExporter,
    LogRecordExporter,
    SimpleLogRecordProcessor,
)
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
from ..processors.metered import MeteredBatchLogRecordProcessor
from .config import OTLP_ENCODER, OTLP_ENCODERS, OtlpTarget, TelemetryConfig

log = logging.getLogger("nexus_otel.telemetry")

LOCAL_SCHEDULE_DELAY_MS = 500
"""How long spans wait in the local store's batch queue at most: `nexus-otel traces` sees them within a second."""


def _compression(protocol: str, name: str) -> Any:
    if protocol == "grpc":
        import grpc

        return {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate,
                "none": grpc.Compression.NoCompression}[name]
    from opentelemetry.exporter.otlp.proto.http import Compression

    return Compression(name)


def otlp_options(target: OtlpTarget, protocol: str) -> dict[str, Any]:
    """Constructor arguments for an OTLP exporter sending with ``protocol`` to ``target``."""
    options: dict[str, Any] = {"endpoint": target.endpoint, "timeout": target.timeout}
    if target.headers:
        options["headers"] = dict(target.headers)
    if target.compression is not None:
        options["compression"] = _compression(protocol, target.compression)
    return options


def _encoder(config: TelemetryConfig, encoder: str | None) -> str:
    """``encoder`` checked (``fast`` or ``stock``), or the configuration's when None."""
    if encoder is None:
        return config.otlp_encoder
    if encoder not in OTLP_ENCODERS:
        raise ConfigurationError(OTLP_ENCODER, encoder, "one of " + ", ".join(OTLP_ENCODERS))
    return encoder


def otlp_span_exporter(config: TelemetryConfig, encoder: str | None = None) -> SpanExporter:
    """The real OTLP span exporter ``config`` asks for (``grpc`` or ``http/protobuf``, its endpoint and options).

    ``encoder`` is ``fast`` (our bytes, the SDK's sending) or ``stock`` (the SDK's exporter);
    None takes the configuration's (``NEXUS_OTEL_OTLP_ENCODER``).
    """
    protocol = config.traces_protocol
    options = otlp_options(config.otlp_traces, protocol)
    if _encoder(config, encoder) == "fast":
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


def otlp_metric_exporter(config: TelemetryConfig) -> MetricExporter:
    """The real OTLP metric exporter ``config`` asks for."""
    options = otlp_options(config.otlp_metrics, config.metrics_protocol)
    if config.metrics_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter

        return GrpcMetricExporter(**options)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

    return HttpMetricExporter(**options)


def span_processors(config: TelemetryConfig, counter: Any) -> list[SpanProcessor]:
    """One processor per configured traces exporter: batching (and counted) for I/O, simple for the console."""
    from ..processors.metered import MeteredBatchSpanProcessor

    processors: list[SpanProcessor] = []
    for name in config.traces_exporters:
        if name == "otlp":
            processors.append(MeteredBatchSpanProcessor(
                otlp_span_exporter(config), "otlp", counter))
        elif name == "local":
            from ..exporters.local import LocalSpanExporter

            # A trace is on disk within half a second of its request, for `nexus-otel traces` right after
            # it (the SDK's default is 5 s); OTEL_BSP_SCHEDULE_DELAY still wins when it is set.
            delay = config.bsp_schedule_delay_ms or LOCAL_SCHEDULE_DELAY_MS
            processors.append(MeteredBatchSpanProcessor(LocalSpanExporter(
                config.data_dir, max_bytes=config.local_max_bytes, max_files=config.local_max_files,
            ), "local", counter, schedule_delay_millis=delay))
        elif name == "console":
            processors.append(SimpleSpanProcessor(ConsoleSpanExporter()))
    return processors


def metric_exporters(config: TelemetryConfig) -> list[tuple[str, MetricExporter]]:
    """The push exporters for ``OTEL_METRICS_EXPORTER`` (``prometheus`` is served, not pushed)."""
    out: list[tuple[str, MetricExporter]] = []
    for name in config.metrics_exporters:
        if name == "otlp":
            out.append(("otlp", otlp_metric_exporter(config)))
        elif name == "console":
            out.append(("console", ConsoleMetricExporter()))
    return out


def separate_reader(exporter: MetricExporter) -> MetricReader:
    return PeriodicExportingMetricReader(exporter)


def otlp_log_exporter(config: TelemetryConfig, encoder: str | None = None) -> LogRecordExporter:
    """The real OTLP log exporter ``config`` asks for (``grpc`` or ``http/protobuf``, its endpoint and options).

    ``encoder`` is ``fast`` (our bytes, the SDK's sending) or ``stock`` (the SDK's exporter);
    None takes the configuration's (``NEXUS_OTEL_OTLP_ENCODER``).
    """
    options = otlp_options(config.otlp_logs, config.logs_protocol)
    if _encoder(config, encoder) == "fast":
        from ..exporters.otlp_exporters import OTLPGrpcLogExporter, OTLPHttpLogExporter, UnsupportedExporterVersion

        try:
            return (OTLPGrpcLogExporter if config.logs_protocol == "grpc" else OTLPHttpLogExporter)(**options)
        except UnsupportedExporterVersion as exc:  # an SDK release moved what the fast path uses
            log.warning("%s; sending log records with the SDK's OTLP exporter as it is", exc)
    if config.logs_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter

        return GrpcLogExporter(**options)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

    return HttpLogExporter(**options)


def log_processors(config: TelemetryConfig, counter: Any = None) -> list[LogRecordProcessor]:
    """One processor per configured logs exporter: batching (and counted, given ``counter``) for I/O, simple for
    the console. The local store waits ``OTEL_BLRP_SCHEDULE_DELAY`` if set, else half a second (as spans do)."""
    processors: list[LogRecordProcessor] = []
    for name in config.logs_exporters:
        if name == "otlp":
            # The configuration's delay, so an app given ``environ=`` waits what it says (the SDK reads os.environ).
            given = {"schedule_delay_millis": config.blrp_schedule_delay_ms} if config.blrp_schedule_delay_ms else {}
            processors.append(_batch(otlp_log_exporter(config), "otlp", counter, **given))
        elif name == "local":
            from ..exporters.local_logs import LocalLogExporter

            delay = config.blrp_schedule_delay_ms or LOCAL_SCHEDULE_DELAY_MS
            processors.append(_batch(LocalLogExporter(
                config.data_dir, max_bytes=config.local_max_bytes, max_files=config.local_max_files,
            ), "local", counter, schedule_delay_millis=delay))
        elif name == "console":
            processors.append(SimpleLogRecordProcessor(ConsoleLogRecordExporter()))
    return processors


def _batch(exporter: LogRecordExporter, name: str, counter: Any, **kwargs: Any) -> LogRecordProcessor:
    if counter is None:
        return BatchLogRecordProcessor(exporter, **kwargs)
    return MeteredBatchLogRecordProcessor(exporter, name, counter, **kwargs)
