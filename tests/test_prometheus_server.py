"""End to end: a real Prometheus server scrapes the served demo app and PromQL returns what was sent.

The app runs as ``python -m nexus_otel.cli serve nexus_otel.demo.app:create_app`` in a
subprocess; Debian's ``prometheus`` scrapes it every second on loopback. Nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

try:  # tests/ may or may not become a package
    from .prometheus_server import LOOPBACK, PrometheusServer, free_port, poll, prometheus_binary
except ImportError:
    from prometheus_server import LOOPBACK, PrometheusServer, free_port, poll, prometheus_binary

pytestmark = pytest.mark.timeout(90)

APP_TARGET = "nexus_otel.demo.app:create_app"
SERVICE = "nexus-demo"
WORKFLOW_ROUTE = "/workflows/{name}"
OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"

# (workflow, inputs, HTTP status, how many times)
TRAFFIC = (
    ("greet", {"name": "prom"}, 200, 7),
    ("enrich", {"user": "u1", "upstream_down": True}, 500, 4),
    ("enrich", {"user": "u2"}, 200, 3),
    ("checkout", {"items": [{"sku": "gone", "price": 3.5, "qty": 1, "stock": 0}]}, 500, 2),
)
EXECUTIONS = {
    ("greet", "completed"): 7.0,
    ("enrich", "failed"): 4.0,
    ("enrich", "completed"): 3.0,
    ("checkout", "failed"): 2.0,
}
SCRAPE_WAIT = 30.0


@dataclass
class ServedApp:
    """The demo app served by the real CLI in a subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    stderr_file: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def _app_env(data_dir: Path) -> dict[str, str]:
    """The current environment without any ``OTEL_*`` (no OTLP export, default service name)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["NEXUS_OTEL_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _serve(workdir: Path, timeout: float = 20.0) -> ServedApp:
    """Start ``nexus_otel.cli serve`` and wait until ``/healthz`` answers 200."""
    for attempt in range(3):  # the free port may be taken between choosing and binding
        port = free_port()
        stderr_file = workdir / f"serve-{attempt}.stderr"
        with open(stderr_file, "wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "nexus_otel.cli", "serve", APP_TARGET,
                 "--host", LOOPBACK, "--port", str(port)],
                cwd=workdir, env=_app_env(workdir / "nexus-data"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        app = ServedApp(process, port, stderr_file)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{app.url}/healthz", timeout=2.0).status_code == 200:
                    return app
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        app.stop()
        if "address already in use" in app.stderr().lower():
            continue
        raise RuntimeError(
            f"`nexus_otel.cli serve` did not answer GET /healthz on {app.url} within {timeout:g} s "
            f"(exit code {process.returncode}); its stderr:\n{app.stderr()}")
    raise RuntimeError(f"no free port for `nexus_otel.cli serve`; last stderr:\n{app.stderr()}")


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """The demo app served over HTTP by the CLI, for the whole module."""
    app = _serve(tmp_path_factory.mktemp("served-app"))
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture(scope="module")
def prometheus(served_app: ServedApp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Debian's prometheus, scraping the served app every second, with its target up."""
    try:
        prometheus_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    with PrometheusServer(tmp_path_factory.mktemp("prometheus"), [served_app.address]) as prom:
        prom.wait_for_targets_up()
        yield prom


@dataclass(frozen=True)
class SentTraffic:
    """What the module sent, and what Prometheus held before it was sent."""

    before: dict
    statuses: tuple[tuple[str, int], ...]


@pytest.fixture(scope="module")
def traffic(served_app: ServedApp, prometheus: PrometheusServer) -> SentTraffic:
    """Send the known mix once (after a first successful scrape), checking each HTTP status."""
    before = prometheus.vector(
        "sum by (workflow, status) (nexus_workflow_executions_total)", "workflow", "status")
    statuses = []
    with httpx.Client(base_url=served_app.url, timeout=10.0) as client:
        for workflow, inputs, expected, times in TRAFFIC:
            for _ in range(times):
                response = client.post(f"/workflows/{workflow}", json=inputs)
                assert response.status_code == expected, (
                    f"POST /workflows/{workflow} {inputs}: {response.status_code} {response.text}")
                statuses.append((workflow, response.status_code))
    return SentTraffic(before=before, statuses=tuple(statuses))


def test_prometheus_scrapes_the_served_app(prometheus: PrometheusServer, served_app: ServedApp) -> None:
    """Prometheus reports the app's /metrics as one healthy target, labelled with the app's address."""
    targets = [t for t in prometheus.active_targets() if t["labels"].get("job") == "nexus"]
    assert [(t["labels"]["instance"], t["health"], t["lastError"]) for t in targets] == [
        (served_app.address, "up", "")]
    assert targets[0]["scrapeUrl"] == f"{served_app.url}/metrics"
    up = prometheus.vector('up{job="nexus"}', "instance")
    assert up == {served_app.address: 1.0}


def test_executions_by_workflow_and_status_match_what_was_sent(
        prometheus: PrometheusServer, traffic: SentTraffic) -> None:
    """PromQL `sum by (workflow, status) (nexus_workflow_executions_total)` returns exactly the sent counts."""
    assert traffic.before == {}, "executions were counted before the test sent any"
    query = "sum by (workflow, status) (nexus_workflow_executions_total)"
    got = poll(lambda: prometheus.vector(query, "workflow", "status"),
               until=lambda v: v == EXECUTIONS, timeout=SCRAPE_WAIT)
    assert got == EXECUTIONS


def test_duration_histogram_counts_every_execution(prometheus: PrometheusServer, traffic: SentTraffic) -> None:
    """`nexus_workflow_duration_seconds_count` by workflow equals the executions sent to each workflow."""
    expected = {"greet": 7.0, "enrich": 7.0, "checkout": 2.0}
    query = "sum by (workflow) (nexus_workflow_duration_seconds_count)"
    got = poll(lambda: prometheus.vector(query, "workflow"), until=lambda v: v == expected, timeout=SCRAPE_WAIT)
    assert got == expected
    by_status = prometheus.vector(
        "sum by (workflow, status) (nexus_workflow_duration_seconds_count)", "workflow", "status")
    assert by_status == EXECUTIONS


def test_workflow_series_carry_the_service_name(
        prometheus: PrometheusServer, served_app: ServedApp, traffic: SentTraffic) -> None:
    """Every workflow series scraped from the app has service_name="nexus-demo" (and Prometheus's job/instance)."""
    query = "count by (service_name, job, instance) (nexus_workflow_executions_total)"
    got = poll(lambda: prometheus.vector(query, "service_name", "job", "instance"),
               until=lambda v: v.get((SERVICE, "nexus", served_app.address)) == len(EXECUTIONS),
               timeout=SCRAPE_WAIT)
    assert got == {(SERVICE, "nexus", served_app.address): float(len(EXECUTIONS))}


def test_http_server_duration_has_the_workflow_route(prometheus: PrometheusServer, traffic: SentTraffic) -> None:
    """`http_server_request_duration_seconds_count` has the route template "/workflows/{name}", per status code."""
    expected = {"200": 10.0, "500": 6.0}
    assert sorted(code for _, code in traffic.statuses) == [200] * 10 + [500] * 6
    query = ('sum by (http_response_status_code) '
             f'(http_server_request_duration_seconds_count{{http_route="{WORKFLOW_ROUTE}"}})')
    got = poll(lambda: prometheus.vector(query, "http_response_status_code"),
               until=lambda v: v == expected, timeout=SCRAPE_WAIT)
    assert got == expected
    routes = prometheus.vector(
        'count by (http_route) (http_server_request_duration_seconds_count{http_route=~"/workflows/.+"})',
        "http_route")
    assert set(routes) == {WORKFLOW_ROUTE}, "workflow requests must be labelled by route template, not raw path"


def test_metrics_answers_openmetrics_when_asked(served_app: ServedApp) -> None:
    """GET /metrics with an OpenMetrics Accept header answers OpenMetrics ending in "# EOF"; plain text otherwise."""
    om = httpx.get(f"{served_app.url}/metrics", headers={"Accept": OPENMETRICS_ACCEPT}, timeout=10.0)
    assert om.status_code == 200
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    assert f'service_name="{SERVICE}"' in om.text

    plain = httpx.get(f"{served_app.url}/metrics", headers={"Accept": "text/plain"}, timeout=10.0)
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    assert "# EOF" not in plain.text
