"""Bad input gets an exception or message naming what is wrong, and never a half-started app."""

import logging

import pytest

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.errors import (
    AppStateError,
    ConfigurationError,
    DuplicatePluginError,
    DuplicateWorkflowError,
    InvalidInputsError,
    NexusOtelError,
    PluginLoadError,
    PluginSetupError,
    PluginValidationError,
    UnknownWorkflowError,
    WorkflowRegistrationError,
)


class Nameless(NexusPlugin):
    """A plugin that forgot its name."""

    def setup(self, nexus_app):
        pass


class Named(NexusPlugin):
    name = "named"


def test_plugin_without_a_name_is_rejected_naming_the_class(capture):
    """A plugin with no name: PluginValidationError naming the class and what to define."""
    app = capture.app()
    with pytest.raises(PluginValidationError, match=r"'Nameless'.*has no name.*`name` property"):
        app.add_plugin(Nameless())
    assert app.plugins.list() == []


def test_plugin_class_instead_of_instance_is_rejected(capture):
    """Passing the class, not an instance, says so."""
    app = capture.app()
    with pytest.raises(PluginValidationError, match=r"pass an instance.*Named\(\)"):
        app.add_plugin(Named)


def test_duplicate_plugin_is_rejected_and_first_kept(capture):
    """A second plugin of the same name: ValueError naming it; the first stays."""
    app = capture.app()
    first = Named()
    app.add_plugin(first)
    with pytest.raises(DuplicatePluginError, match="'named'.*already registered"):
        app.add_plugin(Named())
    assert app.plugins.get("named") is first


def test_failing_setup_leaves_no_hooks_or_middleware_behind(capture):
    """setup() that raises halfway: PluginSetupError naming the plugin; its hooks and middleware are gone."""
    app = capture.app()

    class HalfWay(NexusPlugin):
        name = "halfway"

        def setup(self, nexus_app):
            nexus_app.on_workflow_started(lambda e: None)
            nexus_app.use(lambda call, call_next: "intercepted")
            raise OSError("config file missing")

    with pytest.raises(PluginSetupError, match=r"'halfway'.*setup failed.*OSError.*config file missing"):
        app.add_plugin(HalfWay())
    assert app.plugins.list() == []
    assert app.hooks.get("workflow_started") == ()
    assert app.middleware == []
    app.register("w", lambda inputs: "real")
    assert app.execute_workflow("w") == "real"
    setup_span = capture.span("plugin setup halfway")
    assert setup_span.status.status_code.name == "ERROR"
    assert capture.metric_value("nexus.plugin.errors", plugin="halfway", event="setup") == 1


def test_unknown_workflow_names_it_and_lists_known(capture):
    """Unknown workflow: UnknownWorkflowError (a LookupError) naming it and the registered ones."""
    app = capture.app()
    app.register("known", lambda inputs: 1)
    with pytest.raises(UnknownWorkflowError, match=r"workflow 'nope': not registered \(registered: known\)") as info:
        app.execute_workflow("nope", {})
    assert isinstance(info.value, LookupError)
    assert capture.spans == []


def test_non_callable_and_badly_named_workflows_are_rejected(capture):
    """A non-callable or a bad name: WorkflowRegistrationError naming the workflow."""
    app = capture.app()
    with pytest.raises(WorkflowRegistrationError, match="'greet'.*expected a function"):
        app.register("greet", "not a function")
    with pytest.raises(WorkflowRegistrationError, match="workflow name"):
        app.register("has spaces", lambda i: i)
    with pytest.raises(WorkflowRegistrationError):
        app.register("", lambda i: i)
    app.register("greet", lambda i: i)
    with pytest.raises(DuplicateWorkflowError, match="'greet'.*already registered"):
        app.register("greet", lambda i: i)


def test_inputs_must_be_a_mapping(capture):
    """Inputs that are not a dict: InvalidInputsError naming the workflow and the type."""
    app = capture.app()
    app.register("w", lambda inputs: inputs)
    with pytest.raises(InvalidInputsError, match="'w'.*must be a dict, got list"):
        app.execute_workflow("w", [1, 2])
    assert app.execute_workflow("w") == {}


def test_broken_plugin_file_is_named_and_others_still_load(capture, tmp_path, caplog):
    """A plugin file that fails to import is reported by path and line; the good file still loads."""
    (tmp_path / "good.py").write_text(
        "from nexus_otel import NexusPlugin\n"
        "class Good(NexusPlugin):\n"
        "    name = 'good'\n"
    )
    (tmp_path / "bad.py").write_text("import os\nraise RuntimeError('cannot start')\n")
    app = capture.app()
    with caplog.at_level(logging.ERROR):
        result = app.load_plugins(tmp_path)
    assert app.plugins.list() == ["good"]
    assert result.registered == ["good"]
    assert len(result.errors) == 1
    assert str(tmp_path / "bad.py") + ":2" in str(result.errors[0])
    assert "RuntimeError: cannot start" in str(result.errors[0])
    assert any("bad.py" in r.getMessage() for r in caplog.records)


def test_strict_loading_registers_nothing_on_a_broken_file(capture, tmp_path):
    """strict=True: one broken file raises PluginLoadError and no plugin is registered."""
    (tmp_path / "a_good.py").write_text(
        "from nexus_otel import NexusPlugin\nclass Good(NexusPlugin):\n    name = 'good'\n"
    )
    (tmp_path / "b_bad.py").write_text("def broken(:\n")
    app = capture.app()
    with pytest.raises(PluginLoadError, match=r"b_bad\.py:1.*SyntaxError"):
        app.load_plugins(tmp_path, strict=True)
    assert app.plugins.list() == []


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("OTEL_SDK_DISABLED", "yes", '"true" or "false"'),
        ("OTEL_TRACES_SAMPLER", "sometimes", "one of always_on"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "a number from 0 to 1"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "do not support http/json"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "udp", "one of http/protobuf, grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317", "a URL"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:99999", "a URL"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "comma-separated list of otlp, local, console, none"),
        ("OTEL_METRICS_EXPORTER", "none,otlp", '"none" alone'),
        ("OTEL_BSP_SCHEDULE_DELAY", "soon", "a whole number"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "-5", "zero or more"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=core,broken", "bad item 'broken'"),
    ],
)
def test_invalid_otel_variable_fails_at_start_naming_it(var, value, needle):
    """Each bad OTEL_* value: ConfigurationError naming the variable, the value and what was expected."""
    env = {"OTEL_TRACES_SAMPLER_ARG": "0.5", "OTEL_TRACES_SAMPLER": "traceidratio"} if var.endswith("ARG") else {}
    env[var] = value
    with pytest.raises(ConfigurationError) as info:
        Nexus("svc", environ=env)
    message = str(info.value)
    assert var in message and repr(value) in message and needle in message
    assert info.value.setting == var
    assert isinstance(info.value, ValueError) and isinstance(info.value, NexusOtelError)


def test_stopped_app_refuses_work_clearly(capture):
    """After stop(): executing or adding a plugin raises AppStateError; stop again is harmless."""
    app = capture.app("shop")
    app.register("w", lambda i: 1)
    app.start()
    with pytest.raises(AppStateError, match="already started"):
        app.start()
    app.stop()
    app.stop()
    with pytest.raises(AppStateError, match="'shop' is stopped; cannot execute_workflow"):
        app.execute_workflow("w")
    with pytest.raises(AppStateError, match="cannot add_plugin"):
        app.add_plugin(Named())
    with pytest.raises(AppStateError, match="create a new app"):
        app.start()


def test_bad_middleware_is_rejected(capture):
    """use() with a non-callable or a class says what it expected."""
    app = capture.app()
    with pytest.raises(TypeError, match="Middleware or a callable"):
        app.use(42)

    class MW:
        def __call__(self, call, call_next):
            return call_next(call)

    with pytest.raises(TypeError, match="instance, got the class MW"):
        app.use(MW)


def test_a_config_dict_sets_what_keywords_set_and_names_an_unknown_key():
    """Kailash Nexus's plugin API passes MonitoringPlugin and RequestLoggerPlugin a ``config`` dict."""
    from nexus_otel.plugins import MonitoringPlugin, RequestLoggerPlugin

    monitoring = MonitoringPlugin(config={"backend": "otlp", "interval": 5})
    assert (monitoring.backend, monitoring.interval, monitoring.port) == ("otlp", 5, None)
    logger = RequestLoggerPlugin("plain", config={"format": "json", "logger": "shop.requests"})
    assert (logger.format, logger.logger_name, logger.level) == ("json", "shop.requests", "INFO")
    with pytest.raises(TypeError, match=r"MonitoringPlugin: unknown settings \['bakend'\]"):
        MonitoringPlugin(config={"bakend": "otlp"})
    with pytest.raises(TypeError, match=r"RequestLoggerPlugin: unknown settings \['colour', 'fmt'\]"):
        RequestLoggerPlugin(config={"fmt": "json", "colour": True})
