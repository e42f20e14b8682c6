"""Per-workflow head sampling: a listed workflow's new traces kept at its ratio, by trace id; records never sampled."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from nexus_otel import Nexus, TailSampling
from nexus_otel.errors import ConfigurationError
from nexus_otel.records import RecordProcessor
from nexus_otel.serving import BackgroundServer
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.telemetry.workflow_sampler import workflow_in_path

pytestmark = pytest.mark.timeout(30)

QUIET_ENV = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
SERVER_SPAN = "POST /workflows/{name}"


@pytest.fixture(autouse=True)
def own_providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* from the machine and no global SDK provider: each app builds its own (and its head sampler)."""
    for key in list(os.environ):
        if key.startswith("OTEL_") or key.startswith("NEXUS_OTEL_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: trace_api.ProxyTracerProvider())
    monkeypatch.setattr(metrics_api, "get_meter_provider", lambda: metrics_api.NoOpMeterProvider())
    yield


class Records(RecordProcessor):
    """Every execution's end record: what audit, webhooks and the request log see."""

    def __init__(self) -> None:
        self.ended: list = []

    def on_end(self, record) -> None:
        self.ended.append(record)


def _app(environ=None, **kwargs):
    """An app building its own tracer provider, its spans in memory, its records counted."""
    app = Nexus("shop", environ={**QUIET_ENV, **(environ or {})}, **kwargs)
    exporter = InMemorySpanExporter()
    app.telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    records = Records()
    app.records.add(records)
    for name in ("checkout", "health", "coin", "other", "fragile"):
        def fn(inputs, name=name):
            if inputs.get("fail"):
                raise RuntimeError(f"{name} failed")
            return {"workflow": name}
        app.register(name, fn)
    app.on_workflow_started(lambda event: None)  # a hook span in every kept trace
    return app, exporter, records


def _traces(exporter) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(f"{span.context.trace_id:032x}", []).append(span.name)
    return out


def _passes(trace_id_hex: str, ratio: float) -> bool:
    """The SDK's TraceIdRatioBased test of a trace id."""
    return int(trace_id_hex, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < TraceIdRatioBased.get_bound_for_rate(ratio)


def test_ratio_zero_drops_a_workflows_traces_while_its_records_flow():
    """health=0: not one span of its traces; checkout=1 and unlisted workflows kept; every record delivered."""
    app, exporter, records = _app(workflow_sampling={"health": 0.0, "checkout": 1.0})
    with app:
        for _ in range(20):
            app.execute_workflow("health", {})
            app.execute_workflow("checkout", {})
        app.execute_workflow("other", {})
    traces = _traces(exporter)
    by_workflow = {w: [r for r in records.ended if r.workflow == w] for w in ("health", "checkout", "other")}
    assert [len(v) for v in by_workflow.values()] == [20, 20, 1]
    assert not {r.trace_id for r in by_workflow["health"]} & set(traces)
    assert not any(r.trace_sampled for r in by_workflow["health"])
    for record in by_workflow["checkout"] + by_workflow["other"]:
        assert sorted(traces[record.trace_id]) == ["hook workflow_started app", f"workflow {record.workflow}"]
    assert not [n for names in traces.values() for n in names if "health" in n]


def test_a_ratio_keeps_about_that_share_decided_by_trace_id():
    """coin=0.5: about half of 400 traces kept, exactly those whose trace id passes the ratio test."""
    app, exporter, records = _app({"NEXUS_OTEL_WORKFLOW_SAMPLING": "coin=0.5"})
    with app:
        for _ in range(400):
            app.execute_workflow("coin", {})
    kept = {t for t, names in _traces(exporter).items() if "workflow coin" in names}
    assert len(records.ended) == 400
    assert 140 <= len(kept) <= 260
    assert kept == {r.trace_id for r in records.ended if _passes(r.trace_id, 0.5)}
    assert all(r.trace_sampled == (r.trace_id in kept) for r in records.ended)


def test_over_http_the_server_span_and_the_workflow_span_are_kept_or_dropped_together():
    """HTTP: the SERVER span roots the trace; it and its workflow span share one decision, by the workflow's ratio."""
    app, exporter, records = _app(workflow_sampling={"coin": 0.5, "health": 0})
    trace_ids = []
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(40):
            response = client.post("/workflows/coin", json={})
            assert response.status_code == 200
            trace_ids.append(response.headers["x-trace-id"])
        for _ in range(5):
            assert client.post("/workflows/health", json={}).status_code == 200
        assert client.get("/workflows").status_code == 200  # names no workflow: the head sampler keeps it
    traces = _traces(exporter)
    kept = [t for t in trace_ids if t in traces]
    assert 5 <= len(kept) <= 35
    assert set(kept) == {t for t in trace_ids if _passes(t, 0.5)}
    for trace_id in kept:
        assert sorted(traces[trace_id]) == [SERVER_SPAN, "hook workflow_started app", "workflow coin"]
    assert not [n for names in traces.values() for n in names if "health" in n]
    assert ["GET /workflows"] in traces.values()
    assert len(records.ended) == 45


def test_a_callers_traceparent_keeps_deciding():
    """A listed workflow at ratio 0 called with a sampled traceparent is kept whole; an unsampled one is not."""
    app, exporter, _ = _app(workflow_sampling={"health": 0})
    sampled, unsampled = secrets.token_hex(16), secrets.token_hex(16)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        for trace_id, flags in ((sampled, "01"), (unsampled, "00")):
            response = client.post("/workflows/health", json={},
                                   headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"})
            assert response.status_code == 200
    traces = _traces(exporter)
    assert sorted(traces[sampled]) == [SERVER_SPAN, "hook workflow_started app", "workflow health"]
    assert unsampled not in traces


def test_inside_tail_sampling_a_dropped_workflows_failures_are_still_kept():
    """With tail sampling on, a ratio-0 workflow's ordinary traces are dropped, its failed ones kept (error)."""
    app, exporter, _ = _app(workflow_sampling={"fragile": 0}, tail_sampling=TailSampling(ratio=1.0))
    with app:
        for _ in range(5):
            app.execute_workflow("fragile", {})
        with pytest.raises(RuntimeError):
            app.execute_workflow("fragile", {"fail": True})
    spans = [s for s in exporter.get_finished_spans() if not s.name.startswith("nexus ")]  # start, stop
    assert sorted(s.name for s in spans) == ["hook workflow_started app", "workflow fragile"]
    assert next(s for s in spans if s.name == "workflow fragile").attributes["nexus.sampling.reason"] == "error"


def test_warnings_for_a_borrowed_provider_and_an_unregistered_workflow(caplog):
    """A borrowed tracer provider: one warning naming the setting; a listed workflow never registered: one at start."""
    with caplog.at_level(logging.WARNING, logger="nexus_otel.telemetry"):
        app = Nexus("shop", environ=QUIET_ENV, tracer_provider=TracerProvider(), workflow_sampling={"checkout": 0.1})
    warned = [r.getMessage() for r in caplog.records if "NEXUS_OTEL_WORKFLOW_SAMPLING" in r.getMessage()]
    assert len(warned) == 1 and "tracer provider" in warned[0]
    assert app.telemetry.workflow_sampler is None
    caplog.clear()
    app, _, _ = _app(workflow_sampling={"chekout": 0.1, "checkout": 0.5})
    with caplog.at_level(logging.WARNING, logger="nexus_otel.telemetry"):
        app.start()
        app.stop()
    warned = [r.getMessage() for r in caplog.records if "NEXUS_OTEL_WORKFLOW_SAMPLING" in r.getMessage()]
    assert len(warned) == 1 and "chekout" in warned[0] and "checkout," not in warned[0]


@pytest.mark.parametrize("value", [{"checkout": 1.5}, {"checkout": -0.1}, {"checkout": "often"}, ["checkout"]])
def test_bad_setting_values_are_configuration_errors(value):
    """Nexus(workflow_sampling=...) with a ratio outside 0..1, not a number, or not a mapping: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="workflow_sampling"):
        Nexus("shop", environ=QUIET_ENV, workflow_sampling=value)


@pytest.mark.parametrize("raw", ["checkout", "checkout=2", "=0.5", "checkout=half"])
def test_bad_variable_values_are_configuration_errors(raw):
    """NEXUS_OTEL_WORKFLOW_SAMPLING that is not workflow=ratio pairs with ratios 0..1: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_WORKFLOW_SAMPLING"):
        TelemetryConfig.from_env({"NEXUS_OTEL_WORKFLOW_SAMPLING": raw})


@pytest.mark.parametrize(("path", "workflow"), [
    ("/workflows/checkout", "checkout"), ("/workflows/checkout/execute", "checkout"),
    ("/api/workflows/checkout", "checkout"), ("/workflows", None), ("/healthz", None), ("/workflows/a/b", None),
])
def test_the_workflow_a_request_path_names(path, workflow):
    """The HTTP channel's /workflows/{name} and Kailash Nexus's /workflows/{name}/execute name a workflow."""
    assert workflow_in_path(path) == workflow
