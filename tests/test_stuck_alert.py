"""The WorkflowExecutionStuck alert on a real Prometheus scraping a served app with a stuck execution.

An app served over HTTP (uvicorn on loopback) has one execution of ``hang`` blocked on an Event and
has run ``greet`` to its end. Debian's ``prometheus`` scrapes it every second and evaluates a copy of
deploy/alerts.yml's WorkflowExecutionStuck rule, unchanged but for a 1 s threshold and a 1 s ``for``:
the alert fires for ``hang`` only, and is gone once the execution has ended. The dashboard panel
draws the shipped rule's threshold.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nexus_otel import Nexus
from nexus_otel.serving import BackgroundServer

try:  # tests/ may or may not become a package
    from .prometheus_server import PrometheusServer, poll, prometheus_binary
except ImportError:
    from prometheus_server import PrometheusServer, poll, prometheus_binary

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
ALERTS_YML = ROOT / "deploy" / "alerts.yml"
WORKFLOWS_JSON = ROOT / "grafana" / "dashboards" / "workflows.json"
ALERT = "WorkflowExecutionStuck"
PANEL = "Oldest execution in flight"
SERVICE = "stuck-kit"
THRESHOLD = re.compile(r">\s*([0-9.]+)\s*$")
WAIT = 20.0


def shipped_rule() -> dict[str, Any]:
    """The WorkflowExecutionStuck rule as deploy/alerts.yml ships it."""
    groups = yaml.safe_load(ALERTS_YML.read_text())["groups"]
    (rule,) = [r for g in groups for r in g["rules"] if r.get("alert") == ALERT]
    return rule


def shipped_threshold() -> float:
    """The seconds in flight past which the shipped rule's expression holds."""
    match = THRESHOLD.search(shipped_rule()["expr"].strip())
    assert match, f"{ALERT}: no '> <seconds>' at the end of {shipped_rule()['expr']!r}"
    return float(match.group(1))


class RulePrometheus(PrometheusServer):
    """PrometheusServer that also loads one rule file (evaluated every scrape interval)."""

    def __init__(self, workdir: Path, targets: list[str], rule_file: Path) -> None:
        super().__init__(workdir, targets)
        self.rule_file = rule_file

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rule_files": [str(self.rule_file)]}


def test_dashboard_panel_draws_the_alert_threshold() -> None:
    """The "Oldest execution in flight" panel's red threshold is the shipped alert's threshold, in seconds."""
    board = json.loads(WORKFLOWS_JSON.read_text())
    (panel,) = [p for p in board["panels"] if p["title"] == PANEL]
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
    red = [step["value"] for step in defaults["thresholds"]["steps"] if step["color"] == "red"]
    assert red == [shipped_threshold()], (red, shipped_rule()["expr"])
    assert all("nexus_workflow_oldest_active_seconds" in t["expr"] or "nexus_workflow_active" in t["expr"]
               for t in panel["targets"])


@pytest.fixture
def stuck_app(tmp_path: Path) -> Iterator[tuple[str, threading.Event, list[httpx.Response]]]:
    """A served app whose ``hang`` execution is in flight until the Event is set; ``greet`` has run and ended."""
    release = threading.Event()
    app = Nexus(SERVICE, environ={
        "OTEL_SERVICE_NAME": SERVICE, "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path / "data")})

    @app.workflow("hang")
    def hang(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"released": release.wait(WAIT * 2)}

    @app.workflow("greet")
    def greet(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"hello": inputs.get("name")}

    responses: list[httpx.Response] = []
    with BackgroundServer(app) as url:
        assert httpx.post(f"{url}/workflows/greet", json={"name": "ada"}, timeout=10).status_code == 200
        caller = threading.Thread(target=lambda: responses.append(
            httpx.post(f"{url}/workflows/hang", json={}, timeout=WAIT * 3)), daemon=True)
        caller.start()
        try:
            yield url, release, responses
        finally:
            release.set()
            caller.join(WAIT)


def test_stuck_alert_fires_on_a_real_prometheus_and_resolves(
        stuck_app: tuple[str, threading.Event, list[httpx.Response]], tmp_path: Path) -> None:
    """Prometheus fires WorkflowExecutionStuck for the blocked workflow only, and drops it once it has ended."""
    try:
        prometheus_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    url, release, responses = stuck_app
    rule = shipped_rule()
    expr = THRESHOLD.sub("> 1", rule["expr"].strip())
    assert expr != rule["expr"].strip() and expr.endswith("> 1"), expr
    rule_file = tmp_path / "stuck-rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "stuck-test", "rules": [
        {**rule, "expr": expr, "for": "1s"}]}]}))

    target = url.removeprefix("http://")
    with RulePrometheus(tmp_path / "prometheus", [target], rule_file) as prom:
        prom.wait_for_targets_up()

        def firing() -> list[dict[str, Any]]:
            body = prom.client.get("/api/v1/alerts").json()
            assert body["status"] == "success", body
            alerts = body["data"]["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]

        fired = poll(firing, until=bool, timeout=WAIT, interval=0.25)
        assert [(a["labels"]["workflow"], a["labels"]["service_name"], a["labels"]["instance"],
                 a["labels"]["severity"]) for a in fired] == [("hang", SERVICE, target, "ticket")], fired
        assert float(fired[0]["value"]) > 1
        assert fired[0]["annotations"]["summary"].startswith(f"Workflow hang ({SERVICE}) on {target} ")
        assert f"nexus-otel top http://{target} --once" in fired[0]["annotations"]["runbook"]
        in_flight = prom.vector(expr, "workflow")
        assert set(in_flight) == {"hang"}, in_flight  # greet ran and ended: never a candidate
        assert responses == []  # still blocked

        release.set()
        ended = poll(lambda: responses, until=bool, timeout=WAIT)
        assert [r.status_code for r in ended] == [200] and ended[0].json()["result"] == {"released": True}
        gone = poll(lambda: (firing(), prom.vector(expr, "workflow")), until=lambda r: r == ([], {}),
                    timeout=WAIT, interval=0.25)
        assert gone == ([], {}), gone
