"""The deploy kit's real servers for end-to-end tests: our Collector distribution, Jaeger v2 and VictoriaLogs.

The binaries are built from source by ``scripts/build-binaries.sh`` (the test
command runs it first; the build is cached outside the repository). Every
server here listens on 127.0.0.1 only, on free ports passed to the shipped
configs through the environment variables they read, and is always stopped.

    with Jaeger(tmp_path) as jaeger, \
            Collector(tmp_path, "otel-collector.yaml", jaeger_endpoint=jaeger.otlp_grpc_endpoint) as col:
        ...  # send OTLP to col.otlp_http_url, then jaeger.trace(trace_id)

    with VictoriaLogs(tmp_path) as logs, \
            Collector(tmp_path, "otel-collector.yaml", victorialogs_endpoint=logs.otlp_endpoint) as col:
        ...  # send OTLP logs to col.otlp_http_url, then logs.query('trace_id:="..."')
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .ports import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
BUILD_SCRIPT = REPO / "scripts" / "build-binaries.sh"
LOOPBACK = "127.0.0.1"
INSTALL_HINT = ("needs Go 1.26 or newer (https://go.dev/dl/) to build the OpenTelemetry Collector, "
                "Jaeger and VictoriaLogs once: run scripts/test.sh, or bash scripts/build-binaries.sh")


# ${env:NAME:-default} in a Collector or Jaeger config: the server reads NAME, falling back to default.
ENV_DEFAULT = re.compile(r"\$\{env:[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")


def with_env_defaults(node: Any) -> Any:
    """``node`` (parsed YAML) with every ``${env:NAME:-default}`` replaced by its default: what runs with NAME unset."""
    if isinstance(node, dict):
        return {k: with_env_defaults(v) for k, v in node.items()}
    if isinstance(node, list):
        return [with_env_defaults(v) for v in node]
    if isinstance(node, str):
        return ENV_DEFAULT.sub(lambda m: m.group(1), node)
    return node


def versions() -> dict[str, str]:
    """``deploy/versions.env`` as a dict (the versions the tests build and run)."""
    out = {}
    for line in (DEPLOY / "versions.env").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def binary_paths() -> dict[str, Path]:
    """Where ``scripts/build-binaries.sh`` puts (or has put) the binaries: otelcol, jaeger, victorialogs, kustomize."""
    out = subprocess.run(["bash", str(BUILD_SCRIPT), "--where"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    return {k: Path(v) for k, v in (line.split("=", 1) for line in out.splitlines() if "=" in line)}


def require_binary(name: str) -> Path:
    """The built binary, or a skip naming what to install (a failure under ``CI=true``: CI must run these)."""
    path = binary_paths()[name]
    if path.is_file() and os.access(path, os.X_OK):
        return path
    message = f"{name} is not built at {path}: {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_binary(name: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one of the binaries to completion (``validate``, ``components``, ``version``)."""
    return subprocess.run([str(require_binary(name)), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=REPO)


class _Server:
    """One binary run with ``--config`` (or the arguments of :meth:`arguments`) and an environment, on loopback
    ports; restartable on the same ports."""

    binary = ""
    health_path = "/"

    def __init__(self, workdir: Path, config: Path | None, env: dict[str, str], health_port: int,
                 name: str) -> None:
        self.workdir = Path(workdir)
        self.config = config
        self.env = env
        self.health_port = health_port
        self.name = name
        self.log_file = self.workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def arguments(self) -> list[str]:
        return [f"--config={self.config}"]

    def healthy(self) -> bool:
        return httpx.get(f"http://{LOOPBACK}:{self.health_port}{self.health_path}", timeout=1).status_code == 200

    def start(self, timeout: float = 30.0) -> _Server:
        binary = require_binary(self.binary)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [str(binary), *self.arguments()], cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if self.healthy():
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not healthy after {timeout:g} s:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the Collector drains its pipelines), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Jaeger(_Server):
    """Jaeger v2 running ``deploy/jaeger.yaml`` (in-memory storage) on free loopback ports."""

    binary = "jaeger"
    health_path = "/status"  # healthcheckv2

    def __init__(self, workdir: Path, name: str = "jaeger") -> None:
        self.otlp_grpc_port = free_port()
        self.otlp_http_port = free_port()
        self.query_port = free_port()
        env = {
            "JAEGER_LISTEN_HOST": LOOPBACK,
            "JAEGER_OTLP_GRPC_PORT": str(self.otlp_grpc_port),
            "JAEGER_OTLP_HTTP_PORT": str(self.otlp_http_port),
            "JAEGER_QUERY_HTTP_PORT": str(self.query_port),
            "JAEGER_QUERY_GRPC_PORT": str(free_port()),
            "JAEGER_HEALTH_PORT": str(free_port()),
            "JAEGER_METRICS_PORT": str(free_port()),
            # Jaeger traces its own queries to an OTLP endpoint (localhost:4317 by default) that no test
            # runs; on SIGTERM it would wait its export timeout (10 s) for the spans it could not send.
            "OTEL_TRACES_SAMPLER": "always_off",
        }
        super().__init__(workdir, DEPLOY / "jaeger.yaml", env, int(env["JAEGER_HEALTH_PORT"]), name)
        self.client = httpx.Client(base_url=f"http://{LOOPBACK}:{self.query_port}", timeout=10)

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.otlp_grpc_port}"

    # --- query API ------------------------------------------------------------------------------

    def services(self) -> list[str]:
        return self.client.get("/api/services").json().get("data") or []

    def traces(self, service: str, limit: int = 1000, **params: str) -> list[dict]:
        """``/api/traces?service=``: Jaeger's JSON traces (``spans``, ``processes``)."""
        response = self.client.get("/api/traces", params={"service": service, "limit": str(limit),
                                                          "lookback": "1h", **params})
        response.raise_for_status()
        return response.json().get("data") or []

    def trace(self, trace_id: str) -> dict | None:
        """``/api/traces/{id}``: one trace, or None while Jaeger does not have it."""
        response = self.client.get(f"/api/traces/{trace_id}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        data = response.json().get("data") or []
        return data[0] if data else None

    def trace_v3(self, trace_id: str) -> list[dict]:
        """``/api/v3/traces/{id}``: the trace as OTLP/JSON spans (resource and scope folded in), or []."""
        response = self.client.get(f"/api/v3/traces/{trace_id}")
        if response.status_code == 404:
            return []
        response.raise_for_status()
        spans = []
        for resource_spans in response.json().get("result", {}).get("resourceSpans", []):
            resource = {a["key"]: _any_value(a["value"]) for a in resource_spans.get("resource", {})
                        .get("attributes", [])}
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    spans.append({**span, "resource": resource,
                                  "attrs": {a["key"]: _any_value(a["value"]) for a in span.get("attributes", [])}})
        return spans


def _any_value(value: dict) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in value["arrayValue"].get("values", [])]
    return value


def tags_of(span: dict) -> dict[str, Any]:
    """A Jaeger JSON span's tags as a dict."""
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def parent_of(span: dict) -> str | None:
    """A Jaeger JSON span's parent span id (its CHILD_OF reference), or None for a root."""
    for ref in span.get("references", []):
        if ref.get("refType") == "CHILD_OF":
            return ref["spanID"]
    return None


class VictoriaLogs(_Server):
    """VictoriaLogs (the kit's logs backend) on a free loopback port, its data in ``workdir/<name>-data``.

    It takes OTLP log records over HTTP at :attr:`otlp_endpoint` (the Collector's otlp_http exporter appends
    ``/v1/logs``) and answers LogsQL at ``/select/logsql/query``.
    """

    binary = "victorialogs"
    health_path = "/health"

    def __init__(self, workdir: Path, name: str = "victorialogs") -> None:
        self.port = free_port()
        self.data_dir = Path(workdir) / f"{name}-data"
        super().__init__(workdir, None, {}, self.port, name)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def arguments(self) -> list[str]:
        return [f"-storageDataPath={self.data_dir}", f"-httpListenAddr={LOOPBACK}:{self.port}",
                "-loggerLevel=WARN"]

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """The base URL for an OTLP/HTTP exporter's ``endpoint`` (the deploy configs' VICTORIALOGS_ENDPOINT)."""
        return f"{self.url}/insert/opentelemetry"

    def query_response(self, logsql: str, **params: str) -> httpx.Response:
        """``/select/logsql/query`` as sent: a bad query answers HTTP 400."""
        return self.client.post("/select/logsql/query", data={"query": logsql, **params})

    def query(self, logsql: str, **params: str) -> list[dict[str, Any]]:
        """The log entries a LogsQL query selects (one JSON object per line, every field a string)."""
        response = self.query_response(logsql, **params)
        response.raise_for_status()
        return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def gateway_config_with_static_samplers(dest: Path, samplers: list[str]) -> Path:
    """deploy/otel-collector-gateway.yaml with only the load_balancing resolver replaced.

    The shipped file finds the samplers through a Kubernetes headless Service (DNS); two samplers on one
    machine cannot share a name and port, so tests list them with the exporter's ``static`` resolver.
    """
    config = yaml.safe_load((DEPLOY / "otel-collector-gateway.yaml").read_text())
    resolver = config["exporters"]["load_balancing"]["resolver"]
    assert set(resolver) == {"dns"}, resolver
    config["exporters"]["load_balancing"]["resolver"] = {"static": {"hostnames": samplers}}
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


# The only changes tests make to a shipped Collector config's timing, each asked for by name (``short_waits``,
# ``quick_span_metrics``); every other test runs the file as shipped. The shipped waits are sized for production
# traffic, not for a test that sends its traffic at once and then has nothing to do but wait:
SHORT_WAITS = (
    # The tail sampler decides a trace decision_wait (shipped: 10 s) after its first span, ticking every second,
    # so a trace is decided 2 to 3 s after its first span: still longer than any test here takes to send one
    # trace's spans (a few hundred ms), and spans arriving after the decision follow it (the shipped
    # decision_cache), so traces stay whole.
    ("tail_sampling", "--set=processors::tail_sampling::decision_wait=3s"),
    # The batch processor holds spans and records for up to 2 s (1 s at the gateway) before it exports them.
    ("batch", "--set=processors::batch::timeout=200ms"),
)
QUICK_SPAN_METRICS = (
    # The span_metrics connector exports every metrics_flush_interval (shipped: 15 s), and its first export after
    # the Collector starts reads 0 for every series: with the shipped interval the counts reach the Prometheus
    # exporter 30 s after start.
    ("span_metrics", "--set=connectors::span_metrics::metrics_flush_interval=1s"),
)


class Collector(_Server):
    """Our Collector distribution running a shipped config from ``deploy/`` on free loopback ports.

    ``short_waits`` and ``quick_span_metrics`` shorten the timings named in :data:`SHORT_WAITS` and
    :data:`QUICK_SPAN_METRICS` (those the config defines), through the Collector's ``--set``; for tests whose
    subject is not the shipped timing.
    """

    binary = "otelcol"

    def __init__(self, workdir: Path, config: str, *, jaeger_endpoint: str = "", victorialogs_endpoint: str = "",
                 name: str = "otelcol", short_waits: bool = False, quick_span_metrics: bool = False,
                 **extra_env: str) -> None:
        self.otlp_grpc_port = free_port()
        self.otlp_http_port = free_port()
        self.metrics_port = free_port()
        self.prometheus_port = free_port()
        env = {
            "OTELCOL_LISTEN_HOST": LOOPBACK,
            "OTELCOL_OTLP_GRPC_PORT": str(self.otlp_grpc_port),
            "OTELCOL_OTLP_HTTP_PORT": str(self.otlp_http_port),
            "OTELCOL_HEALTH_PORT": str(free_port()),
            "OTELCOL_METRICS_PORT": str(self.metrics_port),
            "OTELCOL_PROMETHEUS_PORT": str(self.prometheus_port),
            **({"JAEGER_OTLP_ENDPOINT": jaeger_endpoint} if jaeger_endpoint else {}),
            **({"VICTORIALOGS_ENDPOINT": victorialogs_endpoint} if victorialogs_endpoint else {}),
            **extra_env,
        }
        super().__init__(workdir, DEPLOY / config, env, int(env["OTELCOL_HEALTH_PORT"]), name)
        overrides = (SHORT_WAITS if short_waits else ()) + (QUICK_SPAN_METRICS if quick_span_metrics else ())
        components = _component_names(self.config)
        # Only for components the config defines: --set would otherwise add one (a gateway has no tail sampler).
        self.overrides = [flag for component, flag in overrides if component in components]

    def arguments(self) -> list[str]:
        return [*super().arguments(), *self.overrides]

    @property
    def otlp_http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.otlp_http_port}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.otlp_grpc_port}"


def _component_names(config: Path) -> set[str]:
    """The processors and connectors a Collector config defines (``batch``, ``tail_sampling``, ``span_metrics``)."""
    parsed = yaml.safe_load(Path(config).read_text())
    return {name for section in ("processors", "connectors") for name in (parsed.get(section) or {})}
