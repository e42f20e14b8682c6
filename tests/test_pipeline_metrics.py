"""Telemetry about telemetry: spans exported, failed and dropped are counted per sink."""

import threading

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from nexus_otel import Nexus
from nexus_otel.processors.metered import MeteredBatchSpanProcessor, spans_counter


def _outcomes(reader):
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "nexus.telemetry.spans":
                    for p in m.data.data_points:
                        out[(p.attributes["exporter"], p.attributes["outcome"])] = p.value
    return out


class _Blocking(SpanExporter):
    def __init__(self, result=SpanExportResult.SUCCESS):
        self.release = threading.Event()
        self.entered = threading.Event()
        self.result = result

    def export(self, spans):
        self.entered.set()
        self.release.wait(10)
        return self.result


def test_local_store_exports_are_counted(tmp_path):
    """An app on embedded defaults counts the spans its local store wrote, visible on /metrics."""
    app = Nexus("counted", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.register("w", lambda i: 1)
    app.on_workflow_started(lambda e: None)
    for _ in range(5):
        app.execute_workflow("w")
    app.telemetry.force_flush()
    text = app.telemetry.prometheus_exposition()[0].decode()
    line = next(x for x in text.splitlines()
                if x.startswith("nexus_telemetry_spans_total{") and 'exporter="local"' in x)
    assert 'outcome="exported"' in line and line.endswith(" 10.0")
    app.stop()


def test_failed_and_dropped_spans_are_counted():
    """A failing exporter counts failures; a full queue counts every span it drops."""
    reader = InMemoryMetricReader()
    counter = spans_counter(MeterProvider(metric_readers=[reader]).get_meter("t"))
    exporter = _Blocking(SpanExportResult.FAILURE)
    processor = MeteredBatchSpanProcessor(exporter, "remote", counter, max_queue_size=4, max_export_batch_size=1,
                                          schedule_delay_millis=10)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("first"):
        pass
    assert exporter.entered.wait(5)  # the worker holds one span in a stuck export
    for i in range(19):
        with tracer.start_as_current_span(f"s{i}"):
            pass
    exporter.release.set()
    provider.shutdown()
    outcomes = _outcomes(reader)
    assert outcomes[("remote", "dropped")] == 15  # the queue holds 4
    assert outcomes[("remote", "failed")] == 5
    assert outcomes[("remote", "exported")] == 0
