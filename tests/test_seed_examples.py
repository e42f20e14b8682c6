"""The plugin examples of Kailash Nexus's plugin API run unchanged but for their import."""

import pytest

from nexus_otel import PluginManager
from nexus_otel.errors import DuplicatePluginError

from .seed_plugins import (
    ConfigurablePlugin,
    MetricsPlugin,
    MyCustomPlugin,
    PluginLifecycle,
    RequestLoggerPlugin,
)


def _workflows(app):
    @app.workflow("ok")
    def ok(inputs):
        return {"echo": inputs.get("n")}

    @app.workflow("boom")
    def boom(inputs):
        raise RuntimeError("boom")


def test_my_custom_plugin_sets_up_and_tears_down(capture, capsys):
    """MyCustomPlugin prints on setup and on teardown, and is listed with its version."""
    app = capture.app()
    plugin = MyCustomPlugin()
    app.add_plugin(plugin)
    assert capsys.readouterr().out == "Setting up my_custom_plugin\n"
    assert plugin.app is app
    assert app.plugins.list() == ["my_custom_plugin"]
    assert app.plugins.get("my_custom_plugin").version == "1.0.0"
    assert plugin.description == "My custom Nexus plugin"
    app.stop()
    assert capsys.readouterr().out == "Tearing down my_custom_plugin\n"


def test_request_logger_prints_request_and_response(capture, capsys):
    """RequestLoggerPlugin prints the request with inputs, then the response with duration and success."""
    app = capture.app()
    _workflows(app)
    app.add_plugin(RequestLoggerPlugin())
    app.execute_workflow("ok", {"n": 1}, channel="api")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[REQUEST] ok - api"
    assert lines[1] == "  Inputs: {'n': 1}"
    assert lines[2] == "[RESPONSE] ok"
    assert lines[3].startswith("  Duration: ") and lines[3].endswith("s")
    assert float(lines[3].split()[1][:-1]) >= 0
    assert lines[4] == "  Success: True"


def test_metrics_plugin_figures_after_mixed_runs(capture):
    """MetricsPlugin.get_metrics() counts 7 passes and 3 failures exactly."""
    app = capture.app()
    _workflows(app)
    plugin = MetricsPlugin()
    app.add_plugin(plugin)
    for i in range(7):
        app.execute_workflow("ok", {"n": i})
    for _ in range(3):
        with pytest.raises(RuntimeError, match="boom"):
            app.execute_workflow("boom", {})
    m = plugin.get_metrics()
    assert m["requests_total"] == 10
    assert m["requests_success"] == 7
    assert m["requests_failed"] == 3
    assert m["success_rate"] == pytest.approx(0.7)
    assert m["total_duration"] > 0
    assert m["avg_duration"] == pytest.approx(m["total_duration"] / 7)
    # The executions counter agrees with the plugin.
    assert capture.metric_value("nexus.workflow.executions", status="completed") == 7
    assert capture.metric_value("nexus.workflow.executions", status="failed") == 3


def test_plugin_lifecycle_prints_one_to_six_in_order(capture, capsys):
    """PluginLifecycle prints 1 to 6 across instantiate, add_plugin, start, a run, stop."""
    app = capture.app()
    _workflows(app)
    plugin = PluginLifecycle()
    app.add_plugin(plugin)
    app.start()
    print("4. Workflow ran:", app.execute_workflow("ok", {"n": 4}))
    app.stop()
    out = capsys.readouterr().out.splitlines()
    assert [line.split(".")[0] for line in out] == ["1", "2", "3", "4", "5", "6"]
    assert out[0] == "1. Plugin instantiated"
    assert out[5] == "6. Plugin teardown called"


def test_configurable_plugin_reads_its_config(capture, capsys):
    """ConfigurablePlugin uses its config dict; disabled config prints nothing."""
    app = capture.app()
    app.add_plugin(ConfigurablePlugin({"enabled": True, "log_level": "DEBUG", "max_retries": 5}))
    assert capsys.readouterr().out == "Plugin enabled with log_level=DEBUG\n"
    other = capture.app("other")
    other.add_plugin(ConfigurablePlugin({"enabled": False}))
    assert capsys.readouterr().out == ""


def test_plugin_manager_register_duplicate_unregister(capture, capsys):
    """PluginManager: duplicate name raises ValueError; unregister calls teardown."""
    app = capture.app()
    pm = PluginManager(app)
    pm.register(MyCustomPlugin())
    pm.register(MetricsPlugin())
    assert pm.list() == ["my_custom_plugin", "metrics"]
    with pytest.raises(ValueError, match="my_custom_plugin.*already registered") as info:
        pm.register(MyCustomPlugin())
    assert isinstance(info.value, DuplicatePluginError)
    capsys.readouterr()
    pm.unregister("my_custom_plugin")
    assert capsys.readouterr().out == "Tearing down my_custom_plugin\n"
    assert pm.list() == ["metrics"]
    assert pm.get("my_custom_plugin") is None
    assert isinstance(pm.get("metrics"), MetricsPlugin)
    assert pm.unregister("never-registered") is None


def test_unregister_removes_the_plugins_hooks(capture):
    """After unregister, the plugin's hooks no longer run."""
    app = capture.app()
    _workflows(app)
    plugin = MetricsPlugin()
    app.add_plugin(plugin)
    app.execute_workflow("ok", {})
    app.plugins.unregister("metrics")
    app.execute_workflow("ok", {})
    assert plugin.get_metrics()["requests_total"] == 1
