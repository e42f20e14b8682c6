"""``nexus-otel serve --workers N``: N processes on one port, exact metrics, records once, graceful restarts.

Every test runs the real command (a supervisor and its worker processes) on a
loopback port, against real receivers: a webhook receiver, SQLite, Redis,
Prometheus and an OTLP receiver.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from nexus_otel.serving import serve

from .otlp_receivers import HTTPReceiver
from .ports import free_port
from .prometheus_server import PrometheusServer, wait_until
from .redis_server import RedisServer
from .served import REPO, Served, cli_env, nexus_otel
from .test_rate_limit import simultaneous, statuses
from .webhook_receiver import WebhookReceiver

APP = "tests.apps.scaled:app"
CLOSE = {"connection": "close"}  # a new connection per request: the kernel spreads them over the workers


@pytest.fixture
def run_dir():
    """A short temporary directory for the server's (Unix socket names are limited to about 100 characters)."""
    path = Path(tempfile.mkdtemp(prefix="nw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serve_workers(tmp_path: Path, run_dir: Path, n: int = 2, extra: tuple[str, ...] = (), **env: str) -> Served:
    """``serve APP --workers n [extra]`` with its own temporary directory; returns once all n workers answer peers."""
    served = Served(APP, cli_env(tmp_path / "data", TMPDIR=str(run_dir), **env), REPO, "--workers", str(n), *extra)
    deadline = time.monotonic() + 30
    while len(list(run_dir.glob("nexus-otel-workers-*/*.sock"))) < n:
        assert time.monotonic() < deadline, f"{n} workers did not start: {served.stop()}"
        time.sleep(0.05)
    return served


def run_requests(url: str, count: int, clients: int = 4, workflow: str = "work",
                 body: dict | None = None) -> collections.Counter:
    """POST ``count`` requests from ``clients`` threads; the pids that answered (every answer must be 200)."""
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        def one(_: int) -> int:
            r = client.post(f"{url}/workflows/{workflow}", json=body or {}, headers=CLOSE)
            assert r.status_code == 200, r.text
            return r.json()["result"]["pid"]

        with ThreadPoolExecutor(clients) as pool:
            return collections.Counter(pool.map(one, range(count)))


def scrape_total(url: str, name: str, workflow: str = "work") -> float:
    """The sum of ``name``'s series for ``workflow`` in one scrape of ``/metrics``."""
    text = httpx.get(f"{url}/metrics", headers=CLOSE, timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'workflow="{workflow}"' in line)


@dataclass
class Loaded:
    """A two-worker server that has answered 1,000 requests from 4 concurrent clients."""

    served: Served
    pids: collections.Counter
    receiver: HTTPReceiver
    monitoring_port: int
    data_dir: Path


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """``serve --workers 2`` with OTLP metrics to a receiver (every 0.5 s), spans to the local store and
    ``MonitoringPlugin`` on a port of its own, after 1,000 requests; stopped with SIGTERM after the module."""
    tmp = tmp_path_factory.mktemp("loaded")
    run = Path(tempfile.mkdtemp(prefix="nw-", dir="/tmp"))
    monitoring_port = free_port()
    try:
        with HTTPReceiver() as receiver:
            served = serve_workers(tmp, run, MONITORING_PORT=str(monitoring_port),
                                   OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_TRACES_EXPORTER="local",
                                   OTEL_METRIC_EXPORT_INTERVAL="500", OTEL_BSP_SCHEDULE_DELAY="100")
            try:
                pids = run_requests(served.url, 1000)
                yield Loaded(served, pids, receiver, monitoring_port, tmp / "data")
            finally:
                code, err = served.stop()
            assert code == 0 and "Traceback" not in err, err
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_both_workers_served(loaded):
    assert sum(loaded.pids.values()) == 1000
    assert len(loaded.pids) == 2 and min(loaded.pids.values()) > 50, f"both workers must have served: {loaded.pids}"


def test_every_scrape_reads_the_exact_total_of_all_workers(loaded, tmp_path):
    url = loaded.served.url
    for _ in range(10):
        assert scrape_total(url, "nexus_workflow_executions_total") == 1000
        assert scrape_total(url, "nexus_workflow_duration_seconds_count") == 1000
    with PrometheusServer(tmp_path / "prometheus", [url.removeprefix("http://")]) as prometheus:
        prometheus.wait_for_targets_up()
        totals = prometheus.wait_until(lambda: prometheus.vector(
            'sum(nexus_workflow_executions_total{workflow="work"})') or None)
        counts = prometheus.vector('sum(nexus_workflow_duration_seconds_count{workflow="work"})')
    assert list(totals.values()) == [1000.0] and list(counts.values()) == [1000.0]


def test_http_metrics_and_target_info_merge_across_workers(loaded):
    lines = httpx.get(f"{loaded.served.url}/metrics", headers=CLOSE, timeout=10).text.splitlines()
    requests = sum(float(line.rsplit(" ", 1)[1]) for line in lines
                   if line.startswith("http_server_request_duration_seconds_count{")
                   and 'http_route="/workflows/{name}"' in line)
    assert requests == 1000
    targets = [line for line in lines if line.startswith("target_info{")]
    assert len(targets) == 1 and 'service_name="scaled"' in targets[0]
    assert "service_instance_id" not in targets[0]  # one per worker over OTLP, not in the merged scrape
    types = [line for line in lines if line.startswith("# TYPE ")]
    assert "# TYPE nexus_workflow_executions_total counter" in types
    assert len(types) == len(set(types)), "one family per metric, not one per worker"


def test_monitoring_plugins_own_port_serves_every_workers_totals(loaded):
    assert scrape_total(f"http://127.0.0.1:{loaded.monitoring_port}", "nexus_workflow_executions_total") == 1000


def test_otlp_metrics_come_from_each_worker_under_its_own_instance_id(loaded):
    def per_instance() -> dict[str, float]:
        """Each instance's newest cumulative count of ``work`` executions."""
        newest: dict[str, tuple[int, float]] = {}
        for metric in loaded.receiver.metrics():
            if metric.name != "nexus.workflow.executions":
                continue
            instance = metric.resource["service.instance.id"]
            for point in metric.points:
                if point.attributes.get("workflow") == "work" and (
                        instance not in newest or point.time_unix_nano >= newest[instance][0]):
                    newest[instance] = (point.time_unix_nano, point.value or 0.0)
        return {instance: value for instance, (_, value) in newest.items()}

    assert loaded.receiver.wait_for(lambda: sum(per_instance().values()) == 1000, timeout=15), per_instance()
    instances = per_instance()
    assert len(instances) == 2, instances  # each worker pushes its own counts, under its own id
    assert sorted(instances.values()) == sorted(loaded.pids.values())


def test_the_local_trace_store_holds_every_workers_traces(loaded, tmp_path):
    env = cli_env(loaded.data_dir)
    deadline = time.monotonic() + 15
    while True:  # spans reach the store within about 0.1 s of their request
        listed = nexus_otel("traces", "-n", "2000", env=env, cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        rows = [line for line in listed.stdout.splitlines()[1:] if " work " in line]
        if len(rows) >= 1000 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(rows) == 1000, listed.stdout[-500:]
    assert "skipping damaged line" not in listed.stderr


def test_each_record_is_delivered_and_written_exactly_once(tmp_path, run_dir):
    with WebhookReceiver() as receiver:
        served = serve_workers(tmp_path, run_dir, TEST_WEBHOOK_URL=receiver.url, TEST_AUDIT="1")
        try:
            pids = run_requests(served.url, 1000)
            assert len(pids) == 2 and min(pids.values()) > 50, pids
            receiver.wait_for_count(1000, timeout=60)
            time.sleep(1.0)  # a second delivery of any of them would arrive by now
        finally:
            code, err = served.stop()
        assert code == 0, err
        ids = [r.headers["webhook-id"] for r in receiver.requests()]
    assert len(ids) == 1000 and len(set(ids)) == 1000, collections.Counter(ids).most_common(3)
    with sqlite3.connect(tmp_path / "data" / "audit.sqlite") as db:
        rows = db.execute("SELECT workflow_id FROM workflow_executions").fetchall()
    assert len(rows) == 1000 and len({r[0] for r in rows}) == 1000
    with sqlite3.connect(tmp_path / "data" / "outbox.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_rate_limits_hold_across_workers_with_redis(tmp_path, run_dir):
    with RedisServer() as redis_server:
        served = serve_workers(tmp_path, run_dir, LIMIT_STORAGE=redis_server.url)
        try:
            responses, took = simultaneous([(served.url, "key-workers")] * 50)
        finally:
            served.stop()
    counts = statuses(responses)
    assert counts.get(200) in (10, 11) and counts[200] + counts.get(429, 0) == 50, f"{counts} in {took:.2f} s"


def test_memory_rate_limits_refuse_to_start_with_several_workers(tmp_path, run_dir):
    result = nexus_otel("serve", APP, "--host", "127.0.0.1", "--port", str(free_port()), "--workers", "2",
                        env=cli_env(tmp_path / "data", LIMIT_STORAGE="memory://", TMPDIR=str(run_dir)), cwd=REPO)
    assert result.returncode != 0
    assert 'storage="redis://127.0.0.1:6379"' in result.stderr and "2 times the limit" in result.stderr
    assert "a worker could not start the app" in result.stderr
    assert result.stderr.count("Traceback") == 0


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_sigterm_lets_every_worker_finish_its_requests_in_flight(tmp_path, run_dir, http):
    served = serve_workers(tmp_path, run_dir, extra=("--http", http))
    results: list[object] = []

    def slow() -> None:
        try:
            with httpx.Client(timeout=30) as client:
                r = client.post(f"{served.url}/workflows/slow", json={"seconds": 2}, headers=CLOSE)
            results.append(r.json()["result"]["pid"] if r.status_code == 200 else r.status_code)
        except httpx.HTTPError as exc:
            results.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.8)  # all 16 are in flight (both workers have some: 2 in 65,536 runs they would not)
    started = time.monotonic()
    code, err = served.stop()
    took = time.monotonic() - started
    for t in threads:
        t.join(30)
    assert code == 0, err
    assert len(results) == 16 and all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 2, f"both workers had requests in flight: {results}"
    assert took < 15, f"stopped in {took:.1f} s"


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_sighup_replaces_the_workers_without_dropping_a_request(tmp_path, run_dir, http):
    served = serve_workers(tmp_path, run_dir, extra=("--http", http))
    stop = threading.Event()
    outcomes: collections.Counter = collections.Counter()
    pids: set[int] = set()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{served.url}/workflows/slow", json={"seconds": 0.02}, headers=CLOSE)
                    outcomes[r.status_code] += 1
                    pids.add(r.json()["result"]["pid"])
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1

    def worker_pids() -> set[int]:
        return {int(p.stem) for p in run_dir.glob("nexus-otel-workers-*/*.sock")}

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)  # the supervisor reaps its workers: a retired one is gone, not a zombie
        except ProcessLookupError:
            return False
        return True

    def replaced(old: set[int]) -> set[int] | None:
        """The new workers once every old one has exited and two new ones have each served a request."""
        new = {pid for pid in worker_pids() - old if alive(pid)}
        if len(new) == 2 and not any(alive(pid) for pid in old) and new <= pids:
            return new
        return None

    try:
        clients = [threading.Thread(target=load) for _ in range(6)]
        for t in clients:
            t.start()
        workers = worker_pids()
        wait_until(lambda: workers <= pids, 15, interval=0.05, what=f"both workers {workers} serving")
        first = set(pids)
        for _ in range(2):  # a second SIGHUP replaces the replacements
            served.process.send_signal(signal.SIGHUP)
            workers = wait_until(lambda old=workers: replaced(old), 30, interval=0.05,
                                 what=f"workers {workers} replaced under load")
        served_before = sum(outcomes.values())
        wait_until(lambda: sum(outcomes.values()) >= served_before + 50, 15, interval=0.05,
                   what="50 more requests answered by the new workers")
        stop.set()
        for t in clients:
            t.join(30)
        total = scrape_total(served.url, "nexus_workflow_executions_total", "slow")
    finally:
        code, err = served.stop()
    assert code == 0, err
    assert set(outcomes) == {200}, outcomes
    assert len(pids - first) >= 2, f"the workers were replaced: {first} then {pids}"
    assert total == outcomes[200], "counters survive the workers that served them"


def test_serving_an_app_object_with_several_workers_is_refused():
    from nexus_otel import Nexus
    from nexus_otel.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="MODULE:APP"):
        serve(Nexus("object"), workers=2)
    for setting, value in (("workers", 0), ("threads", 0), ("threads", True)):
        with pytest.raises(ConfigurationError, match=setting):
            serve(APP, **{setting: value})
