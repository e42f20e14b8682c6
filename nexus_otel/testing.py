"""Tools for testing plugins and apps: in-memory span, log record and metric capture.

The project's own tests use exactly these, so they are kept working::

    from nexus_otel.testing import CapturedTelemetry

    def test_my_plugin():
        capture = CapturedTelemetry()
        app = capture.app("test")
        app.add_plugin(MyPlugin())
        app.register("hello", lambda inputs: {"hi": inputs["name"]})
        app.execute_workflow("hello", {"name": "ada"})
        assert capture.span("workflow hello").status.is_ok
        assert capture.metric_value("nexus.workflow.executions", workflow="hello") == 1

Log records (the request log's, and with ``CapturedTelemetry(capture_logs=True)``
the app's own ``logging`` records) are kept too, behind redaction: ``capture.logs``.

With pytest, the fixtures ``nexus_capture`` and ``nexus_app`` do the set-up
(they are registered automatically when nexus-otel is installed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from .app import Nexus
from .processors.log_redaction import RedactingLogRecordProcessor
from .processors.span_redaction import RedactingSpanProcessor
from .redaction import Redactor
from .telemetry.config import TelemetryConfig
from .telemetry.lean_tracer import SpanProcessors
from .telemetry.metrics_hub import MetricsHub
from .telemetry.telemetry import Telemetry


class CapturedTelemetry:
    """SDK providers that keep every span, log record and metric in memory for assertions.

    Spans and log records are exported synchronously, so they are visible as soon as a span
    ends or a record is emitted; metrics are collected on demand. The apps made here make their spans
    as a served app does, with the lean tracer (the tracer provider is built with the processors it calls).

    ``capture_logs=True`` lets the apps made here bring the process's ``logging`` records in while
    they run (:class:`~nexus_otel.logs.capture.LogCapture`, one root handler per process); off by
    default, so a test's app leaves the root logger as it found it.
    """

    def __init__(self, service_name: str = "test", *, redactor: Redactor | None = None,
                 capture_logs: bool = False) -> None:
        self.resource = Resource.create({"service.name": service_name})
        self.redactor = redactor or Redactor()
        self.span_exporter = InMemorySpanExporter()
        # Built with the processors the apps' lean tracers call, so tests see the spans a served app makes.
        self.span_processors = SpanProcessors()
        self.tracer_provider = TracerProvider(resource=self.resource,
                                              active_span_processor=self.span_processors)  # type: ignore[arg-type]
        # Spans are captured as an exporter would receive them: behind redaction.
        self.tracer_provider.add_span_processor(
            RedactingSpanProcessor(self.redactor, [SimpleSpanProcessor(self.span_exporter)])
        )
        self.log_exporter = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        # Log records too are captured as an exporter would receive them: behind redaction.
        self.logger_provider.add_log_record_processor(
            RedactingLogRecordProcessor(self.redactor, [SimpleLogRecordProcessor(self.log_exporter)])
        )
        self.capture_logs = capture_logs
        # One reader, the hub, as in a served app: it also reports the pre-aggregated hot-path metrics.
        self.prometheus_registry = CollectorRegistry(auto_describe=True)
        self.metrics_hub = MetricsHub(self.prometheus_registry, resource=self.resource)
        self.meter_provider = MeterProvider(resource=self.resource, metric_readers=[self.metrics_hub])

    def telemetry(self, service_name: str = "test", **kwargs: Any) -> Telemetry:
        """A :class:`Telemetry` on these providers, sharing their Prometheus registry."""
        config = kwargs.pop("config", TelemetryConfig())
        if config.capture_logs is None:
            config = dataclasses.replace(config, capture_logs=self.capture_logs)
        return Telemetry(
            service_name, tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider, logger_provider=kwargs.pop("logger_provider", self.logger_provider),
            config=config,
            prometheus_registry=self.prometheus_registry, metrics_hub=self.metrics_hub,
            redactor=kwargs.pop("redactor", self.redactor), span_processors=self.span_processors,
            **kwargs,
        )

    def app(self, name: str = "test", **kwargs: Any) -> Nexus:
        """A fresh :class:`Nexus` whose telemetry lands here."""
        telemetry_kwargs = {"redactor": kwargs.pop("redactor")} if "redactor" in kwargs else {}
        return Nexus(name, telemetry=self.telemetry(name, **telemetry_kwargs), **kwargs)

    def prometheus_text(self, openmetrics: bool = False) -> str:
        """What a Prometheus scrape of these metrics returns."""
        from prometheus_client.exposition import generate_latest
        from prometheus_client.openmetrics.exposition import generate_latest as generate_om

        return (generate_om if openmetrics else generate_latest)(self.prometheus_registry).decode()

    # -- spans -------------------------------------------------------------------
    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self.span_exporter.get_finished_spans())

    def span_names(self) -> list[str]:
        return [s.name for s in self.spans]

    def span(self, name: str) -> ReadableSpan:
        """The one finished span called ``name`` (an AssertionError otherwise)."""
        found = [s for s in self.spans if s.name == name]
        if len(found) != 1:
            raise AssertionError(f"expected one span {name!r}, found {len(found)} among {self.span_names()}")
        return found[0]

    def spans_named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        """Spans whose parent is ``parent``, in start order."""
        pid = parent.context.span_id
        kids = [s for s in self.spans if s.parent is not None and s.parent.span_id == pid]
        return sorted(kids, key=lambda s: s.start_time or 0)

    def traces(self) -> dict[int, list[ReadableSpan]]:
        """Finished spans grouped by trace id."""
        out: dict[int, list[ReadableSpan]] = {}
        for s in self.spans:
            out.setdefault(s.context.trace_id, []).append(s)
        return out

    # -- log records -------------------------------------------------------------
    @property
    def logs(self) -> list[ReadableLogRecord]:
        """Finished log records, in the order they were emitted (``.log_record.body``, ``.log_record.attributes``)."""
        return list(self.log_exporter.get_finished_logs())

    def logs_named(self, event_name: str) -> list[ReadableLogRecord]:
        """The log records whose ``event_name`` is ``event_name``."""
        return [r for r in self.logs if r.log_record.event_name == event_name]

    # -- metrics -----------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """Collect now: ``{metric name: Metric}`` (with ``.unit`` and ``.data.data_points``)."""
        data = self.metrics_hub.snapshot()
        out: dict[str, Any] = {}
        if data is None:
            return out
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = metric
        return out

    def metric_points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return list(metric.data.data_points) if metric is not None else []

    def metric_value(self, name: str, **attributes: str) -> float:
        """Sum of a counter (or count of a histogram) over the points matching ``attributes``."""
        total = 0.0
        for point in self.metric_points(name):
            if all(point.attributes.get(k) == v for k, v in attributes.items()):
                total += point.count if hasattr(point, "count") else point.value
        return total

    def clear(self) -> None:
        """Forget the spans and log records captured so far (metrics are cumulative)."""
        self.span_exporter.clear()
        self.log_exporter.clear()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()


def attribute_sets(points: Iterable[Any]) -> list[dict[str, Any]]:
    """The attributes of each point, as plain dicts (handy in assertions)."""
    return [dict(p.attributes) for p in points]
