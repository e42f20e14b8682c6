"""Where telemetry goes: injected providers, a global SDK provider, OTEL_SDK_DISABLED, service name."""

import subprocess
import sys
import textwrap

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_otel import Nexus
from nexus_otel.telemetry.config import TelemetryConfig


def test_service_name_defaults_to_the_app_name():
    """With no OTEL_SERVICE_NAME, the app's name is service.name."""
    app = Nexus("orders", environ={})
    assert app.telemetry.service_name == "orders"
    app.stop()


def test_otel_service_name_wins_over_app_name(monkeypatch):
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES behave as the specification says."""
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,team=core")
    app = Nexus("orders")
    attrs = app.telemetry.resource.attributes
    assert attrs["service.name"] == "from-env"
    assert attrs["deployment.environment"] == "staging" and attrs["team"] == "core"
    app.stop()


def test_sdk_disabled_runs_workflows_and_hooks_without_telemetry():
    """OTEL_SDK_DISABLED=true: workflows and hooks run, no spans are made, nothing breaks."""
    app = Nexus("quiet", environ={"OTEL_SDK_DISABLED": "true"})
    assert app.telemetry.enabled is False
    calls = []
    app.on_workflow_started(lambda e: calls.append(("started", e.trace_id)))
    app.on_workflow_failed(lambda e: calls.append(("failed", type(e.error).__name__)))
    app.on_workflow_completed(lambda e: 1 / 0)  # still isolated when disabled
    app.register("ok", lambda i: i["x"] + 1)
    app.register("bad", lambda i: i["missing"])
    with app:
        assert app.execute_workflow("ok", {"x": 1}) == 2
        with pytest.raises(KeyError):
            app.execute_workflow("bad", {})
    assert calls == [("started", None), ("started", None), ("failed", "KeyError")]


def test_sampler_from_env_is_applied():
    """OTEL_TRACES_SAMPLER=always_off: the app's provider samples nothing."""
    config = TelemetryConfig.from_env({"OTEL_TRACES_SAMPLER": "always_off"})
    app = Nexus("s", environ={"OTEL_TRACES_SAMPLER": "always_off"})
    assert type(app.telemetry.tracer_provider.sampler) is type(config.sampler)
    assert app.telemetry.tracer_provider.sampler.get_description() == "AlwaysOffSampler"
    exporter = InMemorySpanExporter()
    app.telemetry.add_span_processor(SimpleSpanProcessor(exporter))
    app.register("w", lambda i: "ran")
    app.on_workflow_started(lambda e: None)
    assert app.execute_workflow("w") == "ran"
    app.stop()
    assert exporter.get_finished_spans() == ()


def test_injected_providers_are_used_and_not_shut_down(capture):
    """Injected providers receive the spans and stay usable after the app stops."""
    app = Nexus("inj", tracer_provider=capture.tracer_provider, meter_provider=capture.meter_provider,
                environ={})
    app.register("w", lambda i: 1)
    app.execute_workflow("w")
    app.stop()
    assert capture.span_names() == ["workflow w", "nexus stop"]
    tracer = capture.tracer_provider.get_tracer("after")
    with tracer.start_as_current_span("still works"):
        pass
    assert "still works" in capture.span_names()


def test_global_sdk_provider_is_used_not_replaced():
    """A process that installed an SDK TracerProvider globally keeps it; the app's spans go there."""
    code = textwrap.dedent(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from nexus_otel import Nexus

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        app = Nexus("g", environ={})
        assert app.telemetry.tracer_provider is provider
        app.register("w", lambda i: 1)
        app.execute_workflow("w")
        app.stop()
        assert trace.get_tracer_provider() is provider
        with trace.get_tracer("x").start_as_current_span("after-stop"):
            pass
        print(sorted(s.name for s in exporter.get_finished_spans()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['after-stop', 'nexus stop', 'workflow w']"


def test_owned_providers_are_not_installed_globally():
    """An app builds its own providers without touching the process-wide ones."""
    from opentelemetry import trace

    before = trace.get_tracer_provider()
    app = Nexus("own", environ={})
    assert isinstance(app.telemetry.tracer_provider, TracerProvider)
    assert trace.get_tracer_provider() is before
    app.stop()
