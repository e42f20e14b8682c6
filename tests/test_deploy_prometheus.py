"""The Prometheus deployment files: deploy/prometheus.yml, deploy/alerts.yml and their unit tests.

``promtool`` (Debian's prometheus package, installed by scripts/test.sh) checks the
config and the rules and runs deploy/alerts_test.yml; the rest reads the YAML and checks
it against deploy/compose.yaml, deploy/otel-collector.yaml and what a real app exposes.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_otel.plugins import CachingPlugin, DatabasePlugin, NexusPlugin, WebhookPlugin
from nexus_otel.processors.metered import MeteredBatchLogRecordProcessor, log_records_counter
from nexus_otel.telemetry.contract import INSTRUMENTATION_NAME
from nexus_otel.testing import CapturedTelemetry

from .deploy_servers import with_env_defaults
from .promql import metric_names

try:  # tests/ may or may not become a package
    from .webhook_receiver import WebhookReceiver
except ImportError:
    from webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus.yml"
ALERTS_YML = DEPLOY / "alerts.yml"
ALERTS_TEST_YML = DEPLOY / "alerts_test.yml"
COMPOSE_YAML = DEPLOY / "compose.yaml"
SEVERITIES = {"page", "ticket"}

# PromQL words that look like identifiers but are not metric names.
def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool from the repository root and return the finished process."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("`promtool` is not on PATH: run the suite with scripts/test.sh, "
                    "which installs Debian's prometheus package")
    return subprocess.run([binary, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def assert_ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{shlex.join(result.args)} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule in alerts.yml that has ``kind`` ("alert" or "record")."""
    return [rule for group in load(ALERTS_YML)["groups"] for rule in group["rules"] if kind in rule]


def sample_names(exposition: str) -> set[str]:
    """The sample names in a Prometheus text exposition (``_bucket``, ``_count`` ... included)."""
    return {re.split(r"[{\s]", line, maxsplit=1)[0]
            for line in exposition.splitlines() if line and not line.startswith("#")}


def host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


def option(argv: Iterable[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in a command line."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def command_of(service: dict[str, Any]) -> list[str]:
    """A compose service's command: its own, or the CMD of the Dockerfile it builds."""
    command = service.get("command")
    if command:
        return shlex.split(command) if isinstance(command, str) else list(command)
    build = service["build"]
    dockerfile = (DEPLOY / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()
    cmd_lines = [line for line in dockerfile.read_text().splitlines() if line.startswith("CMD ")]
    assert cmd_lines, f"{dockerfile} has no CMD"
    return yaml.safe_load(cmd_lines[-1][4:])  # exec form: a JSON list, which is YAML


def mounted_file(service: dict[str, Any], container_path: str) -> Path:
    """The file of deploy/ that a compose service mounts at ``container_path``."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if target == container_path:
            return (DEPLOY / source).resolve()
    raise AssertionError(f"nothing is mounted at {container_path}: {service.get('volumes')}")


def scrape_targets() -> dict[str, list[str]]:
    """``{job: [host:port, ...]}`` from prometheus.yml."""
    jobs: dict[str, list[str]] = {}
    for job in load(PROMETHEUS_YML)["scrape_configs"]:
        jobs[job["job_name"]] = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    return jobs


# --- promtool ----------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    """`promtool check config deploy/prometheus.yml` passes, rule files included."""
    result = promtool("check", "config", str(PROMETHEUS_YML.relative_to(ROOT)))
    assert_ok(result)
    assert "alerts.yml" in result.stdout + result.stderr, "check config did not check the rule file"


def test_promtool_check_rules() -> None:
    """`promtool check rules deploy/alerts.yml` passes."""
    assert_ok(promtool("check", "rules", str(ALERTS_YML.relative_to(ROOT))))


def test_promtool_rule_unit_tests() -> None:
    """`promtool test rules deploy/alerts_test.yml` passes: each alert fires and stays quiet as meant."""
    assert_ok(promtool("test", "rules", str(ALERTS_TEST_YML.relative_to(ROOT))))


# --- the files' content ------------------------------------------------------------------------


def test_prometheus_config_intervals_and_rule_files() -> None:
    """prometheus.yml scrapes and evaluates every 15s and loads alerts.yml, which compose mounts beside it."""
    config = load(PROMETHEUS_YML)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    prometheus = load(COMPOSE_YAML)["services"]["prometheus"]
    assert option(prometheus["command"], "--config.file") == "/etc/prometheus/prometheus.yml"
    assert mounted_file(prometheus, "/etc/prometheus/prometheus.yml") == PROMETHEUS_YML
    for rule_file in config["rule_files"]:
        assert mounted_file(prometheus, f"/etc/prometheus/{rule_file}") == DEPLOY / rule_file


def test_every_alert_has_severity_summary_and_runbook() -> None:
    """Every alert has a severity label (page or ticket) and one-line summary and runbook annotations."""
    alerts = rules("alert")
    assert alerts, "alerts.yml defines no alerts"
    problems = []
    for rule in alerts:
        name = rule["alert"]
        severity = rule.get("labels", {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} not in {sorted(SEVERITIES)}")
        annotations = rule.get("annotations", {})
        for key in ("summary", "runbook"):
            text = annotations.get(key)
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{name}: no {key} annotation")
            elif "\n" in text.strip():
                problems.append(f"{name}: {key} is not one line")
    assert not problems, "\n".join(problems)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """alerts_test.yml has, for every alert, a case where it fires and one where it stays quiet."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load(ALERTS_TEST_YML)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules("alert")}
    assert names - fires == set(), f"alerts never shown firing: {sorted(names - fires)}"
    assert names - quiet == set(), f"alerts never shown quiet: {sorted(names - quiet)}"
    assert (fires | quiet) - names == set(), f"tests for alerts that do not exist: {sorted((fires | quiet) - names)}"


def test_scrape_targets_are_compose_services_and_ports() -> None:
    """Each scrape target names a compose service and a port it serves metrics on, and every such port is scraped."""
    services = load(COMPOSE_YAML)["services"]

    # The app: the port its `nexus-otel serve` command listens on (metrics at /metrics).
    app_command = command_of(services["app"])
    assert app_command[:2] == ["nexus-otel", "serve"], app_command
    app_ports = {int(option(app_command, "--port") or 8000)}

    # The collector: its own telemetry reader and its prometheus exporter, read from the
    # config file compose actually mounts at the path given by --config.
    collector = services["otel-collector"]
    collector_config = with_env_defaults(load(mounted_file(collector, option(collector["command"], "--config"))))
    collector_ports = set()
    for reader in collector_config["service"]["telemetry"]["metrics"]["readers"]:
        collector_ports.add(int(reader["pull"]["exporter"]["prometheus"]["port"]))
    for name, exporter in collector_config["exporters"].items():
        if name.split("/")[0] == "prometheus":
            collector_ports.add(host_port(exporter["endpoint"])[1])
    assert collector_ports == {8888, 8889}, collector_ports

    metrics_ports = {"app": app_ports, "otel-collector": collector_ports}
    jobs = scrape_targets()
    assert set(jobs) == {"nexus", "otel-collector"}, jobs
    assert {host_port(t)[0] for t in jobs["nexus"]} == {"app"}
    assert {host_port(t)[0] for t in jobs["otel-collector"]} == {"otel-collector"}
    scraped: dict[str, set[int]] = {}
    for targets in jobs.values():
        for target in targets:
            host, port = host_port(target)
            assert host in services, f"{target}: no compose service {host!r} (services: {sorted(services)})"
            assert port in metrics_ports.get(host, set()), (
                f"{target}: {host} serves metrics on {sorted(metrics_ports.get(host, set()))}, not {port}")
            scraped.setdefault(host, set()).add(port)
    assert scraped == metrics_ports, f"scraped {scraped}, metrics served on {metrics_ports}"
    nexus_job = next(j for j in load(PROMETHEUS_YML)["scrape_configs"] if j["job_name"] == "nexus")
    assert nexus_job.get("metrics_path", "/metrics") == "/metrics"


def panel_titles(panels: list[dict[str, Any]]) -> set[str]:
    """Titles of these panels and of any panels nested in rows."""
    titles = set()
    for panel in panels:
        titles.add(panel.get("title", ""))
        titles |= panel_titles(panel.get("panels", []))
    return titles


def test_runbooks_name_dashboards_and_panels_that_exist() -> None:
    """Each `Grafana dashboard "D", panel "P"` a runbook cites is a dashboard in grafana/dashboards/ with that panel."""
    dashboards = {}
    for path in sorted((ROOT / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        dashboards[board["title"]] = panel_titles(board.get("panels", []))
    cited = [(rule["alert"], match) for rule in rules("alert")
             for match in re.findall(r'Grafana dashboard "([^"]+)"(?:, panel "([^"]+)")?',
                                     rule["annotations"].get("runbook", ""))]
    assert cited, "no runbook cites a Grafana dashboard"
    problems = []
    for alert, (board, panel) in cited:
        if board not in dashboards:
            problems.append(f"{alert}: no dashboard titled {board!r} (have {sorted(dashboards)})")
        elif panel and panel not in dashboards[board]:
            problems.append(f"{alert}: dashboard {board!r} has no panel {panel!r}")
    assert not problems, "\n".join(problems)


# --- the metrics the alerts use exist ----------------------------------------------------------


class FailingHook(NexusPlugin):
    """A plugin whose workflow_completed hook always raises."""

    name = "failing_hook"
    version = "1.0.0"

    def setup(self, nexus_app: Any) -> None:
        @nexus_app.on_workflow_completed
        def explode(event: Any) -> None:
            raise RuntimeError("hook failed on purpose")


def test_metric_names_extracted_from_promql() -> None:
    """The PromQL name extractor keeps metric names and drops functions, labels, keywords and numbers."""
    expr = ('histogram_quantile(0.95, sum by (service_name, le) (rate(a_bucket{le="1.0"}[5m]))) > 1e3 '
            'and on (job) b_total unless ignoring (x) c offset 10m or d:rec:ratio_rate5m > (14.4 * (1 - 0.99))')
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:rec:ratio_rate5m"}


def test_alert_metrics_are_exposed_by_the_app(tmp_path: Path) -> None:
    """Every metric alerts.yml reads (besides otelcol_* and recording rules) is on a real app's /metrics."""
    records = {rule["record"] for rule in rules("record")}
    used: set[str] = set()
    for rule in rules("record") + rules("alert"):
        used |= metric_names(rule["expr"])
    wanted = {n for n in used - records if not n.startswith("otelcol_") and n != "up"}
    assert "nexus_workflow_executions_total" in wanted, f"name extraction is broken: {sorted(used)}"

    capture = CapturedTelemetry("deploy-check")
    try:
        with WebhookReceiver() as receiver:
            app = capture.app("deploy-check")
            # A served app always has a trace exporter (local store or OTLP): its outcomes are counted.
            app.telemetry.add_span_processor(app.telemetry.batch_processor(InMemorySpanExporter(), "memory"))
            # And a logs exporter (local store or OTLP, OTEL_LOGS_EXPORTER), counted the same way.
            log_counter = log_records_counter(capture.meter_provider.get_meter(INSTRUMENTATION_NAME))
            app.telemetry.add_log_record_processor(
                MeteredBatchLogRecordProcessor(InMemoryLogRecordExporter(), "memory", log_counter))
            app.add_plugin(WebhookPlugin(receiver.url, outbox_path=tmp_path / "webhook-outbox.sqlite"))
            app.add_plugin(DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}",
                                          spool_path=str(tmp_path / "audit-spool.sqlite")))
            app.add_plugin(CachingPlugin(ttl=60))
            app.add_plugin(FailingHook())
            app.register("greet", lambda inputs: {"greeting": f"hello {inputs['name']}"})

            def broken(inputs: dict[str, Any]) -> dict[str, Any]:
                raise ValueError("fails on purpose")

            app.register("broken", broken)
            # One execution in flight while scraping: nexus_workflow_oldest_active_seconds exists only then.
            release = threading.Event()
            app.register("hang", lambda inputs: {"released": release.wait(30)})
            with app:
                for i in range(3):
                    app.execute_workflow("greet", {"name": f"n{i % 2}"}, channel="api")
                    with pytest.raises(ValueError):
                        app.execute_workflow("broken", {}, channel="api")
                hanging = threading.Thread(target=app.execute_workflow, args=("hang", {}), daemon=True)
                hanging.start()
                receiver.wait_for_count(1, timeout=10)
                # A webhook left pending while scraping: nexus_records_outbox_oldest_age_seconds exists only then.
                receiver.set_status(503)
                app.execute_workflow("greet", {"name": "pending"}, channel="api")
                # Exports and observable gauges settle asynchronously: scrape until all are there.
                deadline = time.monotonic() + 10
                try:
                    while True:
                        exposed = sample_names(capture.prometheus_text())
                        if wanted <= exposed or time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
                finally:
                    release.set()
                    hanging.join(10)
    finally:
        capture.shutdown()
    missing = sorted(wanted - exposed)
    assert not missing, (f"alerts.yml uses metrics the app does not expose: {missing}\n"
                         f"the app exposes: {sorted(exposed)}")
