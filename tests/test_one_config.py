"""One parsed configuration: every OTLP setting, the temporality and the resource come from TelemetryConfig,
so an app given ``environ=`` and one reading the process environment build the same thing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nexus_otel import ConfigurationError, Nexus
from nexus_otel.telemetry.config import OtlpTarget, TelemetryConfig

from .otlp_receivers import receiver_for

PACKAGE = Path(__file__).resolve().parents[1] / "nexus_otel"


def test_each_signal_takes_its_own_variable_else_the_general_one():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9999/custom",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "300",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=abc%20def,team=core",
        "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": "GZIP",
    }
    config = TelemetryConfig.from_env(env)
    assert config.otlp_traces == OtlpTarget(
        endpoint="http://127.0.0.1:4318/v1/traces", timeout=0.3,
        headers=(("api-key", "abc def"), ("team", "core")))
    assert config.otlp_metrics == OtlpTarget(
        endpoint="http://127.0.0.1:9999/custom", timeout=2.5, headers=(("api-key", "abc def"), ("team", "core")),
        compression="gzip")
    grpc = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                                     "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc.otlp_traces.endpoint == grpc.otlp_metrics.endpoint == "http://127.0.0.1:4317"  # no path for gRPC
    assert TelemetryConfig.from_env({}).otlp_traces == OtlpTarget()  # unset: the exporters' defaults


def test_an_app_given_environ_sends_where_and_how_it_says(monkeypatch, tmp_path):
    """The process environment points elsewhere, with other headers: spans and metrics follow ``environ=``,
    with its headers and compression, to a real OTLP receiver."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "team=process")
    with receiver_for("http/protobuf") as receiver:
        app = Nexus("configured", environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_HEADERS": "team=environ",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
            "OTEL_BSP_SCHEDULE_DELAY": "50", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
        app.register("greet", lambda inputs: "hi")
        app.start()
        try:
            app.execute_workflow("greet", {})
            app.telemetry.force_flush()
        finally:
            app.stop()
        assert receiver.wait_for(lambda: "workflow greet" in {s.name for s in receiver.spans()}
                                 and receiver.metrics(), timeout=10)
        assert {h.get("team") for h in receiver.request_headers} == {"environ"}
        assert set(receiver.content_encodings) == {"gzip"}


@pytest.mark.parametrize("variable, value, expected", [
    ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli", "gzip, deflate or none"),
    ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zip", "gzip, deflate or none"),
    ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "sometimes", "cumulative, delta, lowmemory"),
])
def test_a_bad_otlp_setting_fails_at_start_naming_it(variable, value, expected):
    """Checked when the configuration is read, whichever exporters are on."""
    with pytest.raises(ConfigurationError, match=variable) as info:
        Nexus("bad", environ={variable: value, "OTEL_TRACES_EXPORTER": "none"})
    assert expected in info.value.expected


def test_temporality_preference_is_parsed_once():
    variable = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
    assert not TelemetryConfig.from_env({}).metrics_delta
    assert not TelemetryConfig.from_env({variable: "Cumulative"}).metrics_delta
    for value in ("delta", "LowMemory"):
        assert TelemetryConfig.from_env({variable: value}).metrics_delta


def test_an_app_given_environ_takes_its_resource_from_it(monkeypatch, tmp_path):
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES in environ= win over the process's and the app's name."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-process")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "team=process,owner=process")
    app = Nexus("named", environ={"OTEL_SERVICE_NAME": "from-environ",
                                  "OTEL_RESOURCE_ATTRIBUTES": "team=core,region=eu%2Dwest",
                                  "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                  "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    try:
        attributes = app.telemetry.resource.attributes
        assert attributes["service.name"] == "from-environ" == app.telemetry.service_name
        assert attributes["team"] == "core" and attributes["region"] == "eu-west"
        assert "owner" not in attributes  # the process's variable is not this app's configuration
        assert attributes["telemetry.sdk.language"] == "python"  # the SDK's own attributes stay
    finally:
        app.stop()


def test_no_module_but_the_configuration_reads_the_environment():
    """``os.environ`` / ``os.getenv`` appear only in telemetry/config.py, and in serving.py, which writes the
    workers' environment (they are new processes), and in exporters/proxies.py, which names the proxy
    variable as the user spelled it in an error (the proxies themselves are read by urllib, as every HTTP
    client reads them: README, "Layout"): everything else reads the parsed configuration."""
    allowed = {"telemetry/config.py", "serving.py", "exporters/proxies.py"}
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os" \
                    and node.attr in ("environ", "getenv", "environb"):
                readers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert [r for r in readers if r.split(":")[0] not in allowed] == []
    assert any(r.startswith("telemetry/config.py") for r in readers)  # the check sees what it looks for
