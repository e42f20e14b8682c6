"""The shipped Collector and Jaeger configs are valid for the real binaries; the distribution is exactly what they use.

``validate`` is the Collector's own check: every component type exists in the
binary, every setting is known to it and of the right type, pipelines are
well-formed. It runs with the configs as shipped (environment variables
unset, so the defaults apply) and with test-style loopback settings.
"""

from __future__ import annotations

import pytest
import yaml

from .deploy_servers import DEPLOY, run_binary

COLLECTOR_CONFIGS = ("otel-collector.yaml", "otel-collector-gateway.yaml", "otel-collector-sampler.yaml")
SECTIONS = ("receivers", "processors", "exporters", "connectors", "extensions")
LOOPBACK_ENV = {"OTELCOL_LISTEN_HOST": "127.0.0.1", "JAEGER_OTLP_ENDPOINT": "127.0.0.1:14317",
                "SAMPLERS_HOSTNAME": "localhost", "SAMPLERS_PORT": "24317",
                "VICTORIALOGS_ENDPOINT": "http://127.0.0.1:19428/insert/opentelemetry"}


def _types_used() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {s: set() for s in SECTIONS}
    for name in COLLECTOR_CONFIGS:
        config = yaml.safe_load((DEPLOY / name).read_text())
        for section in SECTIONS:
            used[section] |= {key.split("/", 1)[0] for key in config.get(section) or {}}
    return used


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
@pytest.mark.parametrize("env", [{}, LOOPBACK_ENV], ids=["as-shipped", "loopback"])
def test_collector_config_validates_with_our_distribution(name, env):
    result = run_binary("otelcol", "validate", f"--config={DEPLOY / name}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_misspelt_setting_fails_validation(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((DEPLOY / "otel-collector.yaml").read_text().replace("decision_wait:", "decision_wiat:"))
    result = run_binary("otelcol", "validate", f"--config={broken}")
    assert result.returncode != 0 and "decision_wiat" in result.stdout + result.stderr


def test_the_distribution_holds_exactly_the_components_the_configs_use():
    result = run_binary("otelcol", "components")
    assert result.returncode == 0, result.stderr
    listed = yaml.safe_load(result.stdout)
    have = {section: {c["name"] for c in listed.get(section) or []} for section in SECTIONS}
    assert have == _types_used()


@pytest.mark.parametrize("name", COLLECTOR_CONFIGS)
def test_every_component_of_a_pipeline_handles_its_signal(name):
    """Each receiver, processor and exporter in a pipeline supports that pipeline's signal in our distribution
    (`components` lists a stability for it): the redaction and attributes processors process log records."""
    listed = yaml.safe_load(run_binary("otelcol", "components").stdout)
    stability = {(section, c["name"]): c.get("stability") or {} for section in SECTIONS
                 for c in listed.get(section) or []}
    config = yaml.safe_load((DEPLOY / name).read_text())
    connectors = set(config.get("connectors") or {})
    for pid, pipeline in config["service"]["pipelines"].items():
        signal = pid.split("/", 1)[0]
        for role in ("receivers", "processors", "exporters"):
            for component in pipeline.get(role) or []:
                if component in connectors:
                    continue  # a connector's signal pair is the Collector's own check (validate)
                level = stability[(role, component.split("/", 1)[0])].get(signal, "Undefined")
                assert level != "Undefined", f"{name}: pipeline {pid}: {component} does not handle {signal}"


@pytest.mark.parametrize("env", [{}, {"JAEGER_LISTEN_HOST": "127.0.0.1"}], ids=["as-shipped", "loopback"])
def test_jaeger_config_validates(env):
    result = run_binary("jaeger", "validate", f"--config={DEPLOY / 'jaeger.yaml'}", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
