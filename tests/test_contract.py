"""The telemetry contract: span names, parentage, attributes, and metrics as users query them."""

import logging
import shutil
import subprocess
import urllib.request

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from nexus_otel import NexusPlugin
from nexus_otel.telemetry import contract as c

from .ports import free_port


class ThreeHooks(NexusPlugin):
    """Registers three workflow hooks."""

    name = "audit"
    version = "2.1.0"

    def setup(self, nexus_app):
        nexus_app.on_workflow_started(lambda event: None)
        nexus_app.on_workflow_completed(lambda event: None)
        nexus_app.on_workflow_completed(lambda event: None)


class BrokenHook(NexusPlugin):
    """A plugin whose started hook always raises."""

    name = "broken"

    def setup(self, nexus_app):
        @nexus_app.on_workflow_started
        def explode(event):
            raise KeyError("no such thing")


def _app(capture):
    app = capture.app("orders")
    app.add_plugin(ThreeHooks())

    @app.workflow("greet")
    def greet(inputs):
        return {"greeting": f"hello {inputs['name']}"}

    return app


def test_one_execution_gives_a_workflow_span_and_three_child_hook_spans(capture):
    """One run: one workflow span, three hook spans parented by it, contract names and attributes."""
    app = _app(capture)
    capture.clear()
    result = app.execute_workflow("greet", {"name": "ada"}, session_id="s1", channel="api")
    assert result == {"greeting": "hello ada"}

    spans = capture.spans
    assert len(spans) == 4
    wf = capture.span("workflow greet")
    assert wf.kind == SpanKind.INTERNAL
    assert wf.parent is None
    assert wf.status.status_code == StatusCode.UNSET
    attrs = dict(wf.attributes)
    assert attrs[c.WORKFLOW_NAME] == "greet"
    assert attrs[c.SESSION_ID] == "s1"
    assert attrs[c.CHANNEL] == "api"
    assert len(attrs[c.WORKFLOW_ID]) == 32
    assert c.ERROR_TYPE not in attrs
    assert wf.resource.attributes["service.name"] == "test"

    hooks = capture.children(wf)
    assert [h.name for h in hooks] == [
        "hook workflow_started audit", "hook workflow_completed audit", "hook workflow_completed audit",
    ]
    for hook in hooks:
        assert hook.context.trace_id == wf.context.trace_id
        assert hook.attributes[c.PLUGIN_NAME] == "audit"
        assert hook.attributes[c.PLUGIN_VERSION] == "2.1.0"
        assert hook.attributes[c.HOOK_EVENT] in ("workflow_started", "workflow_completed")


def test_metrics_carry_contract_names_units_and_attributes(capture):
    """The five instruments exist with the contract's units and attribute keys."""
    app = _app(capture)
    app.add_plugin(BrokenHook())

    @app.workflow("fail")
    def fail(inputs):
        raise ValueError("bad")

    app.execute_workflow("greet", {"name": "x"}, channel="api")
    with pytest.raises(ValueError):
        app.execute_workflow("fail", {}, channel="cli")

    metrics = capture.metrics()
    for spec in c.METRICS:
        assert spec.name in metrics, spec.name
        assert metrics[spec.name].unit == spec.unit
    wanted = {
        "nexus.workflow.executions": {"workflow", "channel", "status"},
        "nexus.workflow.duration": {"workflow", "channel", "status"},
        "nexus.workflow.active": {"workflow"},
        "nexus.plugin.hook.duration": {"plugin", "event"},
        "nexus.plugin.errors": {"plugin", "event"},
    }
    for name, keys in wanted.items():
        for point in metrics[name].data.data_points:
            assert set(point.attributes) == keys, (name, point.attributes)
    assert capture.metric_value("nexus.workflow.executions", workflow="greet", channel="api",
                                status="completed") == 1
    assert capture.metric_value("nexus.workflow.executions", workflow="fail", channel="cli",
                                status="failed") == 1
    assert capture.metric_value("nexus.workflow.duration", workflow="fail", status="failed") == 1
    assert capture.metric_value("nexus.workflow.active", workflow="greet") == 0
    # started (x2 plugins), completed x2 for greet; started x2 for fail: one setup each.
    assert capture.metric_value("nexus.plugin.hook.duration", plugin="audit", event="workflow_completed") == 2
    assert capture.metric_value("nexus.plugin.hook.duration", plugin="audit", event="setup") == 1
    assert capture.metric_value("nexus.plugin.errors", plugin="broken", event="workflow_started") == 2


def test_failed_workflow_span_has_error_status_exception_and_error_type(capture):
    """A raising workflow: span status ERROR, an exception event, error.type, and failed hooks run."""
    app = capture.app()
    seen = []
    app.on_workflow_failed(lambda event: seen.append((event.status, type(event.error).__name__)))

    @app.workflow("fail")
    def fail(inputs):
        raise ZeroDivisionError("division by zero")

    with pytest.raises(ZeroDivisionError):
        app.execute_workflow("fail", {})
    span = capture.span("workflow fail")
    assert span.status.status_code == StatusCode.ERROR
    assert "ZeroDivisionError" in span.status.description
    assert span.attributes[c.ERROR_TYPE] == "ZeroDivisionError"
    assert [e.name for e in span.events] == ["exception"]
    assert span.events[0].attributes["exception.type"] == "ZeroDivisionError"
    assert seen == [("failed", "ZeroDivisionError")]
    assert capture.children(span)[0].name == "hook workflow_failed app"


def test_failing_hook_never_fails_the_workflow(capture, caplog):
    """A raising hook: the workflow succeeds; error span, counted error, one log line naming plugin and event."""
    app = _app(capture)
    app.add_plugin(BrokenHook())
    capture.clear()
    with caplog.at_level(logging.ERROR, logger="nexus_otel"):
        assert app.execute_workflow("greet", {"name": "z"}) == {"greeting": "hello z"}
    hook = capture.span("hook workflow_started broken")
    assert hook.status.status_code == StatusCode.ERROR
    assert hook.attributes[c.ERROR_TYPE] == "KeyError"
    assert [e.name for e in hook.events] == ["exception"]
    wf = capture.span("workflow greet")
    assert wf.status.status_code == StatusCode.UNSET
    assert hook.parent.span_id == wf.context.span_id
    records = [r for r in caplog.records if r.name.startswith("nexus_otel")]
    assert len(records) == 1
    assert "'broken'" in records[0].getMessage() and "workflow_started" in records[0].getMessage()
    assert capture.metric_value("nexus.plugin.errors", plugin="broken", event="workflow_started") == 1


def test_setup_teardown_startup_and_shutdown_are_spans(capture):
    """Plugin setup and teardown, and startup and shutdown hooks, each get their contract span."""
    app = capture.app()

    class Life(NexusPlugin):
        name = "life"

        def setup(self, nexus_app):
            nexus_app.on_startup(lambda: None)
            nexus_app.on_shutdown(lambda: None)

    app.add_plugin(Life())
    with app:
        pass
    names = capture.span_names()
    assert "plugin setup life" in names
    start = capture.span("nexus start")
    stop = capture.span("nexus stop")
    assert capture.children(start)[0].name == "hook startup life"
    assert [s.name for s in capture.children(stop)] == ["hook shutdown life", "plugin teardown life"]
    teardown = capture.span("plugin teardown life")
    assert teardown.attributes[c.PLUGIN_NAME] == "life"
    assert teardown.attributes[c.HOOK_EVENT] == "teardown"


def test_prometheus_scrape_shows_contract_names(capture):
    """A real HTTP scrape of the app's Prometheus registry shows the contract's Prometheus names and labels."""
    app = _app(capture)
    app.add_plugin(BrokenHook())

    @app.workflow("fail")
    def fail(inputs):
        raise ValueError("bad")

    for _ in range(3):
        app.execute_workflow("greet", {"name": "x"}, channel="api")
    with pytest.raises(ValueError):
        app.execute_workflow("fail", {}, channel="api")

    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=app.telemetry.prometheus_registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()

    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)

    def value(name, **labels):
        return sum(s.value for s in samples.get(name, [])
                   if all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("nexus_workflow_executions_total", workflow="greet", channel="api", status="completed") == 3
    assert value("nexus_workflow_executions_total", workflow="fail", channel="api", status="failed") == 1
    assert value("nexus_workflow_duration_seconds_count", workflow="greet", status="completed") == 3
    assert value("nexus_workflow_duration_seconds_bucket", workflow="greet", le="+Inf") == 3
    assert value("nexus_workflow_active", workflow="greet") == 0
    assert value("nexus_plugin_hook_duration_seconds_count", plugin="audit", event="workflow_completed") == 6
    assert value("nexus_plugin_errors_total", plugin="broken", event="workflow_started") == 4
    assert all(s.labels.get("service_name") == "test" for s in samples["nexus_workflow_executions_total"])
    # Buckets are in seconds, not the SDK's millisecond-sized defaults.
    les = {s.labels["le"] for s in samples["nexus_workflow_duration_seconds_bucket"]}
    assert "0.005" in les and "5000.0" not in les

    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
