"""End to end: the real OTLP exporters, configured only by ``OTEL_*``, deliver to a local receiver."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

from nexus_otel import Nexus, NexusPlugin

try:  # tests/ may or may not become a package
    from .otlp_receivers import GRPCReceiver, HTTPReceiver, ReceivedSpan, receiver_for
except ImportError:
    from otlp_receivers import GRPCReceiver, HTTPReceiver, ReceivedSpan, receiver_for

pytestmark = pytest.mark.timeout(30)

PROTOCOLS = ("http/protobuf", "grpc")
WORKFLOW = "greet"
PLUGIN = "auditor"
SERVICE = "otlp-e2e-service"
HOOK_SPANS = (
    f"hook workflow_started {PLUGIN}",
    f"hook workflow_completed {PLUGIN}",
    "hook workflow_completed app",
)


class AuditorPlugin(NexusPlugin):
    """Registers one started and one completed hook, so their spans carry its name."""

    def __init__(self) -> None:
        """Record which of its hooks ran."""
        self.seen: list[str] = []

    @property
    def name(self) -> str:
        """The plugin name that hook span names and metrics must carry."""
        return PLUGIN

    def setup(self, nexus_app: Nexus) -> None:
        """Register the hooks; being inside setup makes them this plugin's."""
        nexus_app.on_workflow_started(lambda event: self.seen.append("started"))
        nexus_app.on_workflow_completed(lambda event: self.seen.append("completed"))


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Start from no ``OTEL_*`` variables and no process-global SDK providers."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    # A global SDK provider installed by some other test would be borrowed instead of
    # building exporters from the environment; hide it for this test only.
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: trace_api.ProxyTracerProvider())
    monkeypatch.setattr(metrics_api, "get_meter_provider", lambda: metrics_api.NoOpMeterProvider())
    yield monkeypatch


def configure(monkeypatch: pytest.MonkeyPatch, endpoint: str, protocol: str, **extra: str) -> None:
    """Point the OTLP exporters at ``endpoint`` using ``OTEL_*`` variables only."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",  # milliseconds, as the specification says
        **extra,
    }
    for key, value in env.items():
        assert key.startswith("OTEL_")
        monkeypatch.setenv(key, value)


def only(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    """The single received span called ``name``."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"expected one {name!r}, got {len(found)} among {sorted(s.name for s in spans)}"
    return found[0]


def run_app(protocol: str, workflow_fn, *, fail: bool = False) -> Nexus:
    """Build a Nexus from the environment, run ``WORKFLOW`` once, and stop it (flushing)."""
    app = Nexus("ignored-name")
    assert app.telemetry.config.traces_exporters == ("otlp",)
    assert app.telemetry.config.traces_protocol == protocol
    assert app.telemetry.config.metrics_protocol == protocol
    app.register(WORKFLOW, workflow_fn)
    app.on_workflow_completed(lambda event: None)
    plugin = app.add_plugin(AuditorPlugin())
    app.start()
    try:
        if fail:
            with pytest.raises(ValueError, match="boom"):
                app.execute_workflow(WORKFLOW, {"name": "ada"}, channel="api")
        else:
            assert app.execute_workflow(WORKFLOW, {"name": "ada"}, channel="api") == {"hi": "ada"}
            assert plugin.seen == ["started", "completed"]
    finally:
        app.stop()
    return app


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [("http/protobuf", None), ("grpc", None), ("http/protobuf", "gzip")],
    ids=["http-protobuf", "grpc", "http-protobuf-gzip"],
)
def test_spans_and_metrics_reach_a_local_otlp_receiver(otel_env, protocol, compression):
    """Spans and metrics arrive over OTLP with the env's service name, span names, parentage and metric attributes."""
    extra = {"OTEL_EXPORTER_OTLP_COMPRESSION": compression} if compression else {}
    with receiver_for(protocol) as receiver:
        configure(otel_env, receiver.endpoint, protocol, **extra)
        run_app(protocol, lambda inputs: {"hi": inputs["name"]})
        expected = {f"workflow {WORKFLOW}", *HOOK_SPANS}
        assert receiver.wait_for(lambda: expected <= {s.name for s in receiver.spans()}, timeout=5), (
            f"spans received: {sorted(s.name for s in receiver.spans())}; errors: {receiver.errors}"
        )
        assert receiver.wait_for(lambda: "nexus.plugin.hook.duration" in receiver.metric_names(), timeout=5)
        spans = receiver.spans()
        assert not receiver.errors

    # The right transport carried it.
    assert receiver.trace_requests and receiver.metric_requests
    if isinstance(receiver, HTTPReceiver):
        assert set(receiver.content_encodings) == {compression or ""}
    else:
        assert isinstance(receiver, GRPCReceiver)

    # Resource: OTEL_SERVICE_NAME wins over the app's name, on every span.
    assert len(spans) >= 4
    assert {s.resource.get("service.name") for s in spans} == {SERVICE}
    assert {s.scope for s in spans} == {"nexus_otel"}

    # The workflow span is a root; each hook span is its child in the same trace.
    workflow = only(spans, f"workflow {WORKFLOW}")
    assert len(workflow.trace_id) == 32 and workflow.trace_id != "0" * 32
    assert len(workflow.span_id) == 16 and workflow.span_id != "0" * 16
    assert workflow.parent_span_id == ""
    assert workflow.attributes["nexus.workflow.name"] == WORKFLOW
    assert workflow.attributes["nexus.channel"] == "api"
    assert workflow.status_code != PbStatus.STATUS_CODE_ERROR
    assert workflow.kind == PbSpan.SPAN_KIND_INTERNAL
    for name in HOOK_SPANS:
        hook = only(spans, name)
        assert hook.parent_span_id == workflow.span_id, name
        assert hook.trace_id == workflow.trace_id, name
        assert hook.span_id != workflow.span_id
    plugin_hook = only(spans, HOOK_SPANS[0])
    assert plugin_hook.attributes["nexus.plugin.name"] == PLUGIN
    assert plugin_hook.attributes["nexus.hook.event"] == "workflow_started"
    assert only(spans, "hook workflow_completed app").attributes["nexus.plugin.name"] == "app"

    # Metrics: same resource, right units, right attributes, right values.
    metrics = receiver.metrics()
    assert metrics
    assert {m.resource.get("service.name") for m in metrics} == {SERVICE}
    done = frozenset({"workflow": WORKFLOW, "channel": "api", "status": "completed"}.items())

    executions = receiver.latest_points("nexus.workflow.executions")
    assert set(executions) == {done}
    metric, point = executions[done]
    assert metric.kind == "sum" and metric.is_monotonic is True
    assert point.value == 1

    durations = receiver.latest_points("nexus.workflow.duration")
    assert set(durations) == {done}
    metric, point = durations[done]
    assert metric.kind == "histogram" and metric.unit == "s"
    assert point.count == 1 and point.sum >= 0
    assert point.explicit_bounds[:3] == (0.001, 0.0025, 0.005)

    active = receiver.latest_points("nexus.workflow.active")
    key = frozenset({"workflow": WORKFLOW}.items())
    assert set(active) == {key}
    metric, point = active[key]
    assert metric.kind == "sum" and metric.is_monotonic is False
    assert point.value == 0  # up by one during the run, down by one after

    hooks = receiver.latest_points("nexus.plugin.hook.duration")
    hook_keys = {dict(k)["plugin"] + "/" + dict(k)["event"]: v for k, v in hooks.items()}
    assert {f"{PLUGIN}/workflow_started", f"{PLUGIN}/workflow_completed", "app/workflow_completed"} <= set(hook_keys)
    for name in (f"{PLUGIN}/workflow_started", f"{PLUGIN}/workflow_completed", "app/workflow_completed"):
        metric, point = hook_keys[name]
        assert metric.unit == "s" and metric.kind == "histogram"
        assert point.count == 1
        assert set(point.attributes) == {"plugin", "event"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_failed_workflow_arrives_as_error_span(otel_env, protocol):
    """A workflow that raises arrives over OTLP with status ERROR, error.type and a failed-status metric."""

    def explode(inputs):
        """Fail the way a workflow's own code fails."""
        raise ValueError("boom")

    with receiver_for(protocol) as receiver:
        configure(otel_env, receiver.endpoint, protocol)
        run_app(protocol, explode, fail=True)
        assert receiver.wait_for(
            lambda: f"workflow {WORKFLOW}" in {s.name for s in receiver.spans()}
            and "nexus.workflow.executions" in receiver.metric_names(),
            timeout=5,
        ), f"errors: {receiver.errors}"
        spans = receiver.spans()

    workflow = only(spans, f"workflow {WORKFLOW}")
    assert workflow.resource["service.name"] == SERVICE
    assert workflow.status_code == PbStatus.STATUS_CODE_ERROR
    assert workflow.attributes["error.type"] == "ValueError"
    assert "boom" in workflow.status_message
    started = only(spans, HOOK_SPANS[0])
    assert started.parent_span_id == workflow.span_id and started.trace_id == workflow.trace_id
    assert not [s for s in spans if s.name.startswith("hook workflow_completed")]

    failed = frozenset({"workflow": WORKFLOW, "channel": "api", "status": "failed"}.items())
    executions = receiver.latest_points("nexus.workflow.executions")
    assert set(executions) == {failed}
    assert executions[failed][1].value == 1


@pytest.mark.parametrize(("preference", "temporality"), [("cumulative", 2), ("delta", 1)])
def test_metric_temporality_preference_reaches_the_receiver(otel_env, preference, temporality):
    """Contract metrics arrive cumulative by default and as deltas when the environment prefers delta."""
    with HTTPReceiver() as receiver:
        configure(otel_env, receiver.endpoint, "http/protobuf",
                  OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=preference)
        app = Nexus("temporality")
        # Pre-bound series report through the app's hub, which is cumulative; a delta
        # exporter reads the SDK's instruments through a reader of its own.
        assert (app.telemetry.bound_metrics is None) == (preference == "delta")
        app.register(WORKFLOW, lambda inputs: {"hi": inputs["name"]})
        for _ in range(3):
            app.execute_workflow(WORKFLOW, {"name": "ada"}, channel="api")
        app.stop()
        assert receiver.wait_for(lambda: "nexus.workflow.executions" in receiver.metric_names(), 10)
        received = [m for m in receiver.metrics() if m.name == "nexus.workflow.executions"]
        assert {m.temporality for m in received} == {temporality}
        values = [p.value for m in received for p in m.points]
        assert (sum(values) if preference == "delta" else max(values)) == 3
