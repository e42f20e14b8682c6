"""A real Prometheus server (Debian's ``prometheus``) on a loopback port, for end-to-end tests.

    with PrometheusServer(tmp_path, ["127.0.0.1:8000"]) as prom:
        prom.wait_for_targets_up()
        prom.vector('sum by (workflow) (nexus_workflow_executions_total)', "workflow")

It scrapes its targets every second, keeps its data in a temporary directory,
runs as the current user and is always terminated on exit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .ports import free_port

LOOPBACK = "127.0.0.1"
INSTALL_HINT = (
    "the `prometheus` binary is not on PATH: run the suite with scripts/test.sh, "
    "which installs Debian's prometheus package"
)

T = TypeVar("T")


def prometheus_binary() -> str:
    """The path of ``prometheus``, or a clear error naming scripts/test.sh."""
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError(INSTALL_HINT)
    return found


def wait_until(fn: Callable[[], T], timeout: float = 30.0, *, interval: float = 0.2,
               what: str = "condition") -> T:
    """Call ``fn`` until it returns something truthy and return that; raise ``TimeoutError`` otherwise.

    Transport errors count as "not yet" (the server may still be starting).
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except httpx.TransportError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not true after {timeout:g} s; last result: {last!r}")
        time.sleep(interval)


def poll(fn: Callable[[], T], until: Callable[[T], bool], timeout: float = 30.0, *,
         interval: float = 0.2) -> T:
    """Call ``fn`` until ``until(result)`` holds or ``timeout`` passes; return the last result.

    Never raises on timeout: the caller asserts on what it got, so a failure shows the real value.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if until(result) or time.monotonic() > deadline:
            return result
        time.sleep(interval)


class PrometheusServer:
    """One ``prometheus`` process scraping ``targets`` (``host:port``) every ``scrape_interval``."""

    def __init__(self, workdir: Path | str, targets: Iterable[str], *, job: str = "nexus",
                 metrics_path: str = "/metrics", scrape_interval: str = "1s",
                 port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.targets = list(targets)
        self.job = job
        self.metrics_path = metrics_path
        self.scrape_interval = scrape_interval
        self.port = port or free_port()
        self.config_file = self.workdir / "prometheus.yml"
        self.data_dir = self.workdir / "data"
        self.log_file = self.workdir / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(base_url=self.url, timeout=5.0)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def config(self) -> dict[str, Any]:
        """The configuration written to ``prometheus.yml``."""
        return {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": [{
                "job_name": self.job,
                "metrics_path": self.metrics_path,
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "static_configs": [{"targets": self.targets}],
            }],
        }

    def log(self) -> str:
        """What Prometheus has written to its log so far."""
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 20.0) -> PrometheusServer:
        """Write the config, start the process and wait until ``/-/ready`` answers 200."""
        binary = prometheus_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML library needed to write the config.
        self.config_file.write_text(json.dumps(self.config(), indent=2))
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [binary,
                 f"--config.file={self.config_file}",
                 f"--storage.tsdb.path={self.data_dir}",
                 f"--web.listen-address={LOOPBACK}:{self.port}",
                 "--log.level=info"],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"prometheus exited before it was ready:\n{self.log()}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready on {self.url} after {timeout:g} s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL if it lingers)."""
        self.client.close()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP API -------------------------------------------------------------------------------

    def _api(self, path: str, **params: str) -> Any:
        response = self.client.get(path, params=params)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params} answered {response.status_code}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through ``/api/v1/query``: the result vector (``metric`` and ``value`` each)."""
        data = self._api("/api/v1/query", query=promql)
        if data["resultType"] != "vector":
            raise AssertionError(f"{promql!r} gave a {data['resultType']}, not a vector")
        return data["result"]

    def vector(self, promql: str, *labels: str) -> dict[Any, float]:
        """The query's samples keyed by the values of ``labels`` (one label: the bare value)."""
        out: dict[Any, float] = {}
        for sample in self.query(promql):
            key = tuple(sample["metric"].get(label, "") for label in labels)
            out[key[0] if len(labels) == 1 else key] = float(sample["value"][1])
        return out

    def active_targets(self) -> list[dict[str, Any]]:
        """``/api/v1/targets``: the active targets, each with ``health``, ``lastError``, ``labels``."""
        return self._api("/api/v1/targets", state="active")["activeTargets"]

    def targets_up(self) -> bool:
        """Whether every configured target has been scraped successfully."""
        active = [t for t in self.active_targets() if t["labels"].get("job") == self.job]
        return len(active) == len(self.targets) and all(t["health"] == "up" for t in active)

    def wait_for_targets_up(self, timeout: float = 15.0) -> None:
        """Wait until every target is "up"; on timeout the error shows the targets' state."""
        try:
            wait_until(self.targets_up, timeout, what=f"targets {self.targets} up")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\ntargets: {self.active_targets()}\nlog:\n{self.log()}") from None

    def wait_until(self, fn: Callable[[], T], timeout: float = 30.0, **kwargs: Any) -> T:
        """:func:`wait_until`, for symmetry with the server's other helpers."""
        return wait_until(fn, timeout, **kwargs)
