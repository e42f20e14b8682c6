"""Hook spans on or off, per plugin (``trace_hooks``) and per app (``untraced_hooks``); their metrics stay."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nexus_otel import Nexus, NexusPlugin, PluginManager
from nexus_otel.errors import ConfigurationError, PluginValidationError
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.testing import CapturedTelemetry

from .seed_plugins import MetricsPlugin, PluginLifecycle, RequestLoggerPlugin

pytestmark = pytest.mark.timeout(30)

HOOK_DURATION = "nexus.plugin.hook.duration"
PLUGIN_ERRORS = "nexus.plugin.errors"


class Quiet(NexusPlugin):
    """A plugin with a hook on every event; ``trace_hooks`` set per instance."""

    def __init__(self, trace_hooks=True, name="quiet", fail=False):
        self.trace_hooks = trace_hooks
        self._name = name
        self.fail = fail
        self.seen: list[str] = []

    @property
    def name(self):
        return self._name

    def setup(self, nexus_app):
        for event in ("workflow_started", "workflow_completed", "workflow_failed"):
            getattr(nexus_app, f"on_{event}")(self._hook(event))
        nexus_app.on_startup(lambda: self.seen.append("startup"))
        nexus_app.on_shutdown(lambda: self.seen.append("shutdown"))

    def _hook(self, event):
        def hook(e):
            self.seen.append(event)
            if self.fail:
                raise RuntimeError(f"{self._name} broke in {event}")
        return hook


class PlainPlugin:
    """Not a NexusPlugin: any object with a name and a setup."""

    name = "plain"

    def setup(self, nexus_app):
        nexus_app.on_workflow_started(lambda event: None)


def _run(app, *, fail=False):
    @app.workflow("greet")
    def greet(inputs):
        return {"hi": inputs.get("name")}

    @app.workflow("boom")
    def boom(inputs):
        raise ValueError("boom")

    app.start()
    app.execute_workflow("greet", {"name": "ada"})
    if fail:
        with pytest.raises(ValueError):
            app.execute_workflow("boom", {})
    app.stop()


def _shape(capture, without_plugin=None):
    """Every span as (name, parent's name), leaving out those of ``without_plugin``."""
    spans = capture.spans
    names = {s.context.span_id: s.name for s in spans}
    return sorted(
        (s.name, names.get(s.parent.span_id) if s.parent else None) for s in spans
        if without_plugin is None or s.attributes.get("nexus.plugin.name") != without_plugin)


def _of_plugin(capture, plugin):
    return [s.name for s in capture.spans if s.attributes.get("nexus.plugin.name") == plugin]


def test_untraced_plugin_adds_no_span_and_leaves_the_trace_otherwise_unchanged():
    """trace_hooks = False: no hook, setup or teardown span of it; its metrics counted; other spans as before."""
    shapes = {}
    for traced in (True, False):
        capture = CapturedTelemetry()
        try:
            app = capture.app()
            app.add_plugin(Quiet(name="loud"))
            quiet = app.add_plugin(Quiet(trace_hooks=traced))
            _run(app, fail=True)
            assert quiet.seen == ["startup", "workflow_started", "workflow_completed", "workflow_started",
                                  "workflow_failed", "shutdown"]
            shapes[traced] = _shape(capture), _shape(capture, without_plugin="quiet")
            quiet_spans = _of_plugin(capture, "quiet")
            for event, runs in (("workflow_started", 2), ("workflow_completed", 1), ("workflow_failed", 1),
                                ("startup", 1), ("shutdown", 1), ("setup", 1), ("teardown", 1)):
                assert capture.metric_value(HOOK_DURATION, plugin="quiet", event=event) == runs, event
                assert capture.metric_value(HOOK_DURATION, plugin="loud", event=event) == runs, event
            points = [p for p in capture.metric_points(HOOK_DURATION) if p.attributes["plugin"] == "quiet"]
            loud_points = [p for p in capture.metric_points(HOOK_DURATION) if p.attributes["plugin"] == "loud"]
            assert all(p.exemplars for p in loud_points)  # a traced hook's timing points at its span
            if traced:
                assert len(quiet_spans) == 8  # 6 hook runs, setup, teardown
            else:
                assert quiet_spans == []
                assert all(not p.exemplars for p in points)  # no span to point at
            assert len(_of_plugin(capture, "loud")) == 8
        finally:
            capture.shutdown()
    traced_all, traced_others = shapes[True]
    untraced_all, untraced_others = shapes[False]
    assert untraced_all == untraced_others == traced_others
    assert len(traced_all) == len(untraced_all) + 8


def test_a_collection_of_events_traces_only_those():
    """trace_hooks = {"workflow_failed"}: only that hook's spans, not the others', not setup's."""
    capture = CapturedTelemetry()
    try:
        app = capture.app()
        app.add_plugin(Quiet(trace_hooks={"workflow_failed", "teardown"}))
        _run(app, fail=True)
        assert sorted(_of_plugin(capture, "quiet")) == ["hook workflow_failed quiet", "plugin teardown quiet"]
        assert capture.metric_value(HOOK_DURATION, plugin="quiet", event="workflow_started") == 2
        assert capture.metric_value(HOOK_DURATION, plugin="quiet", event="setup") == 1
    finally:
        capture.shutdown()


@pytest.mark.parametrize("value", ["workflow_failed", {"workflow_failed", "on_startup"}, 1, None])
def test_a_bad_trace_hooks_value_names_the_plugin(capture, value):
    """trace_hooks neither a bool nor a collection of known event names: PluginValidationError, nothing registered."""
    app = capture.app()
    with pytest.raises(PluginValidationError, match="'quiet'.*trace_hooks"):
        app.add_plugin(Quiet(trace_hooks=value))
    assert app.plugins.list() == []
    assert app.hooks.get("workflow_started") == ()


def test_untraced_hooks_variable_switches_spans_off_on_top_of_the_plugins(capture):
    """NEXUS_OTEL_UNTRACED_HOOKS=quiet:workflow_started,*:workflow_completed: those spans go, the rest stay."""
    config = TelemetryConfig.from_env({"NEXUS_OTEL_UNTRACED_HOOKS": "quiet:workflow_started,*:workflow_completed"})
    app = Nexus("test", telemetry=capture.telemetry(config=config))
    app.add_plugin(Quiet())
    app.add_plugin(Quiet(name="loud"))
    app.add_plugin(PlainPlugin())
    app.on_workflow_completed(lambda event: None)
    _run(app)
    names = set(capture.span_names())
    assert "hook workflow_started quiet" not in names
    assert {"hook workflow_started loud", "hook workflow_started plain", "plugin setup quiet",
            "hook startup quiet"} <= names
    assert not [n for n in names if n.startswith("hook workflow_completed")]
    assert capture.metric_value(HOOK_DURATION, plugin="quiet", event="workflow_started") == 1
    assert capture.metric_value(HOOK_DURATION, plugin="app", event="workflow_completed") == 1


def test_nexus_untraced_hooks_setting(capture):
    """Nexus(untraced_hooks=["quiet"]) drops every span of that plugin; ["*"] every plugin span, workflows stay."""
    app = Nexus("test", tracer_provider=capture.tracer_provider, meter_provider=capture.meter_provider,
                environ={}, untraced_hooks=["quiet"])
    app.add_plugin(Quiet())
    app.add_plugin(Quiet(name="loud"))
    _run(app)
    assert _of_plugin(capture, "quiet") == []
    assert len(_of_plugin(capture, "loud")) == 6  # startup, started, completed, shutdown, setup, teardown
    capture.clear()

    app = Nexus("test", tracer_provider=capture.tracer_provider, meter_provider=capture.meter_provider,
                environ={}, untraced_hooks=["*"])
    app.add_plugin(Quiet(name="loud"))
    _run(app)
    assert sorted(capture.span_names()) == ["nexus start", "nexus stop", "workflow greet"]


def test_an_untraced_hooks_entry_naming_no_event_is_a_configuration_error(capture):
    """An entry whose event does not exist fails at construction, naming the setting (a typo keeps spans)."""
    with pytest.raises(ConfigurationError, match="UNTRACED_HOOKS.*quiet:workflow_start"):
        Nexus("test", tracer_provider=capture.tracer_provider, meter_provider=capture.meter_provider,
              environ={}, untraced_hooks=["quiet:workflow_start"])


def test_a_failing_untraced_hook_is_contained_counted_and_logged_once(capture, caplog):
    """An untraced hook that raises: the workflow still succeeds, the error is counted and logged once."""
    app = capture.app()
    app.add_plugin(Quiet(trace_hooks=False, fail=True))

    @app.workflow("greet")
    def greet(inputs):
        return {"ok": True}

    with caplog.at_level(logging.ERROR, logger="nexus_otel.hooks"):
        assert app.execute_workflow("greet", {}) == {"ok": True}
    assert capture.metric_value(PLUGIN_ERRORS, plugin="quiet", event="workflow_started") == 1
    assert capture.metric_value(PLUGIN_ERRORS, plugin="quiet", event="workflow_completed") == 1
    lines = [r.getMessage() for r in caplog.records if "quiet" in r.getMessage()]
    assert len(lines) == 2 and "workflow_started" in lines[0] and "RuntimeError" in lines[0]
    assert capture.span("workflow greet").status.is_ok
    assert _of_plugin(capture, "quiet") == []


def test_kailash_nexus_plugin_examples_work_untraced(capture, capsys):
    """The plugin API's examples work as before with trace_hooks = False; a plain plugin object stays traced."""

    class QuietMetrics(MetricsPlugin):
        trace_hooks = False

    class QuietLogger(RequestLoggerPlugin):
        trace_hooks = {"workflow_completed"}

    class QuietLifecycle(PluginLifecycle):
        trace_hooks = False

    app = capture.app()
    manager = PluginManager(app)
    metrics = manager.register(QuietMetrics())
    manager.register(QuietLogger())
    app.add_plugin(QuietLifecycle())
    app.add_plugin(PlainPlugin())
    _run(app, fail=True)
    assert metrics.get_metrics()["requests_total"] == 2
    assert metrics.get_metrics()["requests_failed"] == 1
    out = capsys.readouterr().out
    assert "[REQUEST] greet - python" in out and "3. Nexus started" in out and "6. Plugin teardown called" in out
    assert manager.list() == ["metrics", "request_logger"]
    assert app.plugins.list() == ["lifecycle_demo", "plain"]
    assert _of_plugin(capture, "metrics") == _of_plugin(capture, "lifecycle_demo") == []
    assert _of_plugin(capture, "request_logger") == ["hook workflow_completed request_logger"]
    assert "hook workflow_started plain" in _of_plugin(capture, "plain")


def test_untraced_hooks_on_the_async_path(capture):
    """aexecute_workflow of an async workflow: untraced async hooks run and are timed, with no span."""

    class AsyncQuiet(NexusPlugin):
        trace_hooks = False
        name = "async_quiet"

        def setup(self, nexus_app):
            async def started(event):
                await asyncio.sleep(0)
                raise RuntimeError("async hook broke")

            nexus_app.on_workflow_started(started)
            nexus_app.on_workflow_completed(lambda event: None)

    app = capture.app()
    app.add_plugin(AsyncQuiet())
    app.add_plugin(Quiet(name="loud"))

    @app.workflow("agreet")
    async def agreet(inputs):
        return {"ok": True}

    assert asyncio.run(app.aexecute_workflow("agreet", {})) == {"ok": True}
    assert _of_plugin(capture, "async_quiet") == []
    assert sorted(_of_plugin(capture, "loud")) == ["hook workflow_completed loud", "hook workflow_started loud",
                                                   "plugin setup loud"]
    assert capture.metric_value(HOOK_DURATION, plugin="async_quiet", event="workflow_started") == 1
    assert capture.metric_value(PLUGIN_ERRORS, plugin="async_quiet", event="workflow_started") == 1
    assert capture.span("workflow agreet").status.is_ok
