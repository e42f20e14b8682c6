"""HTTP throughput of a served nexus-otel app: full telemetry over telemetry disabled.

Run::

    python benchmarks/http_throughput.py            # full run (about 2.5 minutes)
    python benchmarks/http_throughput.py --quick    # shorter, noisier run (about 45 s)

It prints three ratios. The acceptance figure is the trivial workflow's (target
>= 0.7); the second, measured in the same rounds, is the same app whose
workflow does 1 ms of CPU work (``--extra-work-ms``, default 1), to show how the
ratio depends on what a request does besides telemetry; the third is the
``sdk-floor`` ceiling below.

For each line two uvicorn servers (one worker each, in their own processes, on
free 127.0.0.1 ports) serve the same app, defined below: one workflow and a
plugin with three hooks (one ``workflow_started``, two ``workflow_completed``; ``--hooks N``
sets how many, each one span more per request).

* ``full``: the default environment with every ``OTEL_*`` variable removed, so
  no OTLP endpoint: spans (HTTP server span, workflow span, three hook spans)
  go through a ``BatchSpanProcessor`` to the local span store in a temporary
  ``NEXUS_OTEL_DATA_DIR``; metrics go to the Prometheus registry.
* ``disabled``: the same with ``OTEL_SDK_DISABLED=true``.
* ``sdk-floor`` (first line only; ``--no-sdk-floor`` skips it): the ``disabled`` app
  wrapped so each request makes the same five spans with the raw OpenTelemetry SDK
  and nothing else (see ``sdk_floor_app``). Its ratio over ``disabled`` is a ceiling
  for the ``full`` ratio: what the SDK's own span cost leaves.

The load generator is a third process: ``wrk`` (one thread, keep-alive
connections, ``POST /workflows/bench`` with a small JSON body) when it is on
PATH, else a small stdlib asyncio HTTP/1.1 keep-alive client in this file
(``--client``); ``--client-kind`` chooses. The servers all start at once.
After a warm-up of each, every round measures each server once, one at a time;
within a line the servers take turns going first (A B C, B C A, ...), so drift hits
all alike. The figure per side is the median requests/s over its rounds, and the
ratio is full / disabled (target >= 0.7). Every response must be a 200 or the
round is reported as having errors. Checks: the full server must answer with a
trace id, count the executions on ``/metrics``, write spans to its store and
drop none (the SDK logs each span its full queue drops); the disabled one must
do none of that; the sdk-floor one must have exported spans from its own SDK.

``--work-ms`` gives the first line's workflow some CPU work (the acceptance
figure is for the trivial workflow, 0 ms); ``--extra-work-ms 0`` measures that
line alone (half the time); ``--full-env VAR=VALUE`` changes the full
servers' environment, to see what each part of telemetry costs.

``--profile`` also runs the first line's ``full`` server under cProfile (every thread:
event loop, workflow worker threads, span export) and prints the top
functions when the run ends (profiling slows that server: its figures are
then not comparable; use it to see where time goes, not for the ratio).

``--peers`` measures nexus-otel beside its peers instead, the method being one
machine, one keep-alive connection (requests one after another: ``--connections``,
default 1 here), telemetry exported over OTLP/HTTP (protobuf) to a loopback sink in
its own process (``otlp_sink.py``). Five servers, each a uvicorn process with one
worker on a free 127.0.0.1 port, all started at once, serve the same endpoint and
workflow with ``--hooks`` (default 2 here: SERVER, workflow and two hook spans, 4 a
request): ``nexus-full`` (``nexus_otel.serving.serve``, ``OTEL_EXPORTER_OTLP_ENDPOINT``
the sink), ``nexus-disabled`` (the same with ``OTEL_SDK_DISABLED=true``), and the
FastAPI peers of ``http_peers.py``: ``fastapi-bare``, ``fastapi-native`` (FastAPI's own
telemetry plus the same spans by hand) and ``fastapi-contrib`` (the contrib
instrumentor plus the same spans). Rounds rotate the order (A B C D E, B C D E A,
...). It prints per server the median req/s, the CPU its process used per request,
the spans the sink got and the HTTP protocol and event loop uvicorn picked, then the
ratios: nexus-full / fastapi-native (target >= 1.5), nexus-disabled / fastapi-bare
(>= 1.2), nexus-full / nexus-disabled (>= 0.75), and for information
nexus-full / fastapi-contrib and fastapi-native / fastapi-bare. Checks: every
response 200; each telemetry server's spans reached the sink (spans a request x
requests, plus a few for start, stop and health check) in as many traces as
requests; nexus-disabled and fastapi-bare sent nothing.

The script exits 0 whatever the ratio: it reports, it does not gate. It exits
1 only when it could not measure (a server that does not start, say), or, with
``--smoke`` (one short round, figures meaningless), when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import add_smoke_option, format_ratio, paired_ratio, ratio_of_medians, rotated, smoke_verdict, tree_cpu
from http_app import HOOKS, WORKFLOW, build_app, hook_events
from http_peers import PEERS, announce_protocol, spans_per_request
from otlp_sink import Sink

_HERE = os.path.dirname(os.path.abspath(__file__))

HOST = "127.0.0.1"
PATH = f"/workflows/{WORKFLOW}"
BODY = b'{"name":"ada","count":3,"tags":["x","y"]}'
TARGET = 0.7
VARIANTS = ("full", "disabled")
FLOOR = "sdk-floor"  # telemetry disabled + the raw SDK making the same five spans (see sdk_floor_app)
DISABLED = ("disabled", "nexus-disabled", FLOOR)  # variants served with OTEL_SDK_DISABLED=true
NEXUS_PEERS = ("nexus-full", "nexus-disabled")  # --peers: nexus-otel's two servers, beside http_peers.PEERS
PEER_RATIOS = (  # --peers: (numerator, denominator, target or None for information)
    ("nexus-full", "fastapi-native", 1.5),
    ("nexus-disabled", "fastapi-bare", 1.2),
    ("nexus-full", "nexus-disabled", 0.75),
    ("nexus-full", "fastapi-contrib", None),
    ("fastapi-native", "fastapi-bare", None),
)
PARTS = {  # --parts: nexus-otel with a part of its telemetry left out, to show what each part costs
    "nexus-no-spans": {"OTEL_TRACES_SAMPLER": "always_off"},  # spans started, none recorded: the rest of telemetry
    "nexus-no-export": {"OTEL_TRACES_EXPORTER": "none"},  # spans recorded and redacted, not encoded nor sent
}
PEER_HOOKS = 2  # --peers' default --hooks: 4 spans a request (SERVER, workflow, two hooks)
START_TIMEOUT = 30.0  # seconds for a server to answer /healthz
STOP_TIMEOUT = 15.0
APP_TARGET = "benchmarks.http_app:create"  # what --workers servers import (the repository is on PYTHONPATH)
WORKERS_TARGET = 1.6  # --workers 2 over --workers 1 on a 2-core machine
SMOKE_SECONDS = 0.5  # --smoke's one round per server


# --------------------------------------------------------------------------------------
# The served app (``--serve`` mode runs in the server subprocesses)
# --------------------------------------------------------------------------------------
def sdk_floor_app(asgi: Any, hooks: int = HOOKS) -> Any:
    """``asgi`` wrapped so each request makes, with the raw OpenTelemetry SDK and nothing else, the
    five spans a full server makes: the SERVER span (same attributes), the workflow span under it
    and three hook spans under that, each current while it is open, ended into a
    ``BatchSpanProcessor`` whose exporter drops every batch. No metrics, no redaction, no encoding,
    no file: what any SDK-based implementation of those spans pays at the least."""
    from opentelemetry import context as context_api
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind

    class Discard(SpanExporter):
        received = 0

        def export(self, spans: Any) -> SpanExportResult:
            Discard.received += len(spans)
            return SpanExportResult.SUCCESS

    # The app was built with OTEL_SDK_DISABLED=true; the SDK would hand this provider's
    # tracers out as no-ops too, so the variable goes before it is built.
    os.environ.pop("OTEL_SDK_DISABLED", None)
    provider = TracerProvider(resource=Resource.create({"service.name": "bench-http"}))
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracer = provider.get_tracer("nexus_otel")
    hook_spans = [(f"hook {event} bench-plugin", event) for event in hook_events(hooks)]

    def child(name: str, attributes: dict[str, Any]) -> None:
        span = tracer.start_span(name, attributes=attributes)
        token = context_api.attach(trace_api.set_span_in_context(span))
        context_api.detach(token)
        span.end()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await asgi(scope, receive, send)
            return
        if scope["path"] == "/sdk-floor-spans":  # for the check that the spans were really made
            provider.force_flush()
            body = json.dumps({"exported": Discard.received}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        server = tracer.start_span(scope["method"], kind=SpanKind.SERVER, attributes={
            "http.request.method": scope["method"], "url.path": scope["path"], "url.scheme": "http",
            "network.protocol.version": "1.1", "server.address": HOST, "server.port": scope["server"][1],
            "client.address": scope["client"][0], "user_agent.original": "bench",
        })
        token = context_api.attach(trace_api.set_span_in_context(server))
        workflow = tracer.start_span(f"workflow {WORKFLOW}", attributes={
            "nexus.workflow.name": WORKFLOW, "nexus.workflow.id": "0" * 32, "nexus.channel": "api",
        })
        inner = context_api.attach(trace_api.set_span_in_context(workflow))
        for name, event in hook_spans:
            child(name, {"nexus.plugin.name": "bench-plugin", "nexus.plugin.version": "1.0.0",
                         "nexus.hook.event": event})
        context_api.detach(inner)
        workflow.end()
        try:
            await asgi(scope, receive, send)
        finally:
            server.set_attributes({"http.route": "/workflows/{name}", "http.response.status_code": 200})
            context_api.detach(token)
            server.end()

    return app


def serve_main(port: int, async_workflow: bool, work_ms: float, profile_out: str | None,
               sdk_floor: bool = False, hooks: int = HOOKS, workers: int = 0, threads: int = 0) -> int:
    from nexus_otel.serving import serve

    announce_protocol()
    if workers:  # nexus-otel serve --workers: each worker imports the app (its workload in BENCH_* variables)
        return serve(APP_TARGET, host=HOST, port=port, workers=workers, **({"threads": threads} if threads else {}))

    if sdk_floor:
        import uvicorn

        from nexus_otel.channels.http import create_http_app

        asgi = create_http_app(build_app(async_workflow, work_ms, hooks))  # telemetry disabled (environment)
        uvicorn.run(sdk_floor_app(asgi, hooks), host=HOST, port=port, lifespan="on", log_level="warning",
                    access_log=False)
        return 0
    if not profile_out:
        serve(build_app(async_workflow, work_ms, hooks), host=HOST, port=port)
        return 0
    # cProfile sees one thread; the span processor and the worker threads that run
    # sync workflows matter too, so every thread gets its own profiler, merged at the end.
    import cProfile
    import pstats
    import threading

    profilers: list[cProfile.Profile] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        profiler = cProfile.Profile()
        profilers.append(profiler)
        profiler.enable()
        try:
            original_run(self)
        finally:
            profiler.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    # uvicorn re-raises the SIGTERM it caught once it has shut down; ignore it so the stats get written.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    main_profiler = cProfile.Profile()
    profilers.append(main_profiler)
    main_profiler.enable()
    try:
        serve(build_app(async_workflow, work_ms, hooks), host=HOST, port=port)  # its threads start profiled
    finally:
        main_profiler.disable()
        stats = pstats.Stats(main_profiler)
        for profiler in profilers:
            if profiler is not main_profiler:
                try:
                    stats.add(profiler)
                except (TypeError, ValueError):  # a profiler that never collected anything
                    pass
        stats.dump_stats(profile_out)
    return 0


# --------------------------------------------------------------------------------------
# Fallback load generator (``--client`` mode, its own process): stdlib asyncio, keep-alive
# --------------------------------------------------------------------------------------
_REQUEST_TEMPLATE = (
    "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
    "Content-Length: {length}\r\n\r\n"
)


async def _connection(port: int, deadline: float, max_requests: int, counts: dict[str, int]) -> None:
    request = _REQUEST_TEMPLATE.format(path=PATH, host=HOST, port=port, length=len(BODY)).encode() + BODY
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while time.monotonic() < deadline and counts["ok"] + counts["errors"] < max_requests:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            status = int(head.split(b" ", 2)[1])
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if match is None:
                counts["errors"] += 1
                return  # cannot frame the body: drop this connection
            await reader.readexactly(int(match.group(1)))
            counts["ok" if status == 200 else "errors"] += 1
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
        counts["errors"] += 1
    finally:
        writer.close()


async def _client(port: int, connections: int, duration: float, max_requests: int) -> dict[str, Any]:
    counts = {"ok": 0, "errors": 0}
    start = time.monotonic()
    deadline = start + duration
    await asyncio.gather(*(_connection(port, deadline, max_requests, counts) for _ in range(connections)))
    elapsed = time.monotonic() - start
    return {"requests": counts["ok"], "errors": counts["errors"], "elapsed": elapsed}


def client_main(port: int, connections: int, duration: float) -> int:
    result = asyncio.run(_client(port, connections, duration, max_requests=10_000_000))
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Server:
    variant: str
    port: int
    proc: subprocess.Popen
    data_dir: Path
    profile_out: str | None = None
    rates: list[float] = field(default_factory=list)
    cores: list[float] = field(default_factory=list)  # CPU of its process tree per round, in cores (--workers)
    client_cores: list[float] = field(default_factory=list)  # the load generator's, in the same rounds
    cpu_us: list[float] = field(default_factory=list)  # CPU µs of its process tree per request, per round
    errors: int = 0
    work_ms: float = 0.0
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def name(self) -> str:
        """The variant and its workload, e.g. ``full/1ms``."""
        return f"{self.variant}/{self.work_ms:g}ms"


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NEXUS_OTEL_"))}
    # the repository first, so the subprocesses import this checkout's nexus_otel
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.dirname(_HERE), env.get("PYTHONPATH")) if p)
    return env


def start_server(variant: str, workdir: Path, async_workflow: bool, work_ms: float, profile: bool,
                 extra_env: dict[str, str] | None = None, hooks: int = HOOKS, workers: int = 0, threads: int = 0,
                 sleep_ms: float = 0.0) -> Server:
    port = free_port()
    tag = (f"{variant}-{work_ms:g}ms" + (f"-{sleep_ms:g}ms-blocked" if sleep_ms else "")).replace(" ", "-")
    data_dir = workdir / f"data-{tag}"
    data_dir.mkdir()
    env = _clean_env()
    env["NEXUS_OTEL_DATA_DIR"] = str(data_dir)
    if variant in DISABLED:
        env["OTEL_SDK_DISABLED"] = "true"
    env.update(extra_env or {})
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--port", str(port)]
    if variant == FLOOR:
        cmd.append("--serve-sdk-floor")
    if workers:
        cmd += ["--serve-workers", str(workers)]
        env.update(BENCH_ASYNC_WORKFLOW="1" if async_workflow else "0", BENCH_WORK_MS=str(work_ms),
                   BENCH_HOOKS=str(hooks), BENCH_SLEEP_MS=str(sleep_ms))
    if threads:
        cmd += ["--threads", str(threads)]
    if hooks != HOOKS:
        cmd += ["--hooks", str(hooks)]
    if async_workflow:
        cmd.append("--async-workflow")
    if work_ms:
        cmd += ["--work-ms", str(work_ms)]
    profile_out = str(workdir / f"{tag}.prof") if profile else None
    if profile_out:
        cmd += ["--profile-out", profile_out]
    proc, log_path = _launch(cmd, env, workdir, tag)
    return Server(variant, port, proc, data_dir, profile_out, work_ms=work_ms, log_path=log_path)


def _launch(cmd: list[str], env: dict[str, str], workdir: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    """A server's process, its output in ``<tag>.log``."""
    log_path = workdir / f"{tag}.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT), log_path


def start_peer(peer: str, workdir: Path, sink: Sink, work_ms: float, hooks: int) -> Server:
    """A peer server (``http_peers.py``): one uvicorn worker on a free port, exporting to ``sink``."""
    port = free_port()
    data_dir = workdir / f"data-{peer}"
    data_dir.mkdir()
    cmd = [sys.executable, os.path.join(_HERE, "http_peers.py"), "--peer", peer, "--port", str(port),
           "--sink", sink.url, "--hooks", str(hooks), "--work-ms", str(work_ms)]
    proc, log_path = _launch(cmd, _clean_env(), workdir, peer)
    return Server(peer, port, proc, data_dir, work_ms=work_ms, log_path=log_path)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} server exited with {server.proc.returncode}")
        try:
            with urllib.request.urlopen(server.url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} server did not answer on {server.url} in {START_TIMEOUT:.0f} s")


def post_once(server: Server) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(
        server.url + PATH, data=BODY, method="POST", headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read()), {k.lower(): v for k, v in r.headers.items()}


def check_server(server: Server) -> list[str]:
    """One request: 200, the workflow's result, and a trace id exactly when telemetry is on."""
    problems = []
    status, body, headers = post_once(server)
    if status != 200 or body.get("result") != {"greeting": "Hello, ada!"}:
        problems.append(f"{server.name}: unexpected response {status} {body}")
    has_trace = bool(body.get("trace_id")) and "x-trace-id" in headers
    traced = server.variant not in DISABLED
    if has_trace != traced:
        problems.append(f"{server.name}: trace id present={has_trace}, expected {traced}")
    return problems


def stop_server(server: Server) -> None:
    """SIGTERM (graceful: the app stops and flushes its spans), then SIGKILL if it lingers."""
    if server.proc.poll() is not None:
        return
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(5)


def metric_total(server: Server, name: str) -> float | None:
    """Sum of a Prometheus metric's samples on the server (None when absent)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + "{") or line.startswith(name + " ")]
    return sum(values) if values else None


WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


class Load:
    """Runs one timed round of load against a server; returns (requests/s, errors)."""

    def __init__(self, kind: str, connections: int, workdir: Path) -> None:
        self.kind = kind
        self.connections = connections
        self.requests: dict[int, int] = {}  # by server port: requests answered 200, over every run so far
        if kind == "wrk":
            self.script = workdir / "post.lua"
            self.script.write_text(WRK_SCRIPT.format(body=BODY.decode()))

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
            first = (version.stdout + version.stderr).strip().splitlines()[:1]
            return f"wrk -t1 -c{self.connections} ({first[0] if first else 'wrk'})"
        return f"asyncio keep-alive client, {self.connections} connections (own process)"

    def run(self, server: Server, seconds: float) -> tuple[float, int]:
        if self.kind == "wrk":
            return self._wrk(server, seconds)
        return self._client(server, seconds)

    def _wrk(self, server: Server, seconds: float) -> tuple[float, int]:
        cmd = ["wrk", "-t1", f"-c{self.connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(self.script), server.url + PATH]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
        rate = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if rate is None:
            raise RuntimeError(f"cannot read wrk output:\n{out}")
        errors = 0
        non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        if non2xx:
            errors += int(non2xx.group(1))
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if sock:
            errors += sum(int(g) for g in sock.groups())
        total = re.search(r"(\d+) requests in", out)
        self._count(server, (int(total.group(1)) if total else 0) - (int(non2xx.group(1)) if non2xx else 0))
        return float(rate.group(1)), errors

    def _count(self, server: Server, answered: int) -> None:
        self.requests[server.port] = self.requests.get(server.port, 0) + answered

    def _client(self, server: Server, seconds: float) -> tuple[float, int]:
        cmd = [sys.executable, os.path.abspath(__file__), "--client", "--port", str(server.port),
               "--connections", str(self.connections), "--seconds", str(seconds)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, env=_clean_env())
        try:
            result = json.loads(out.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"client failed:\n{out.stdout}\n{out.stderr}") from None
        self._count(server, result["requests"])
        return result["requests"] / result["elapsed"], result["errors"]


def _versions() -> str:
    from importlib.metadata import version

    parts = []
    for dist in ("nexus-otel", "opentelemetry-sdk", "uvicorn", "starlette", "h11", "httptools", "uvloop", "fastapi",
                 "opentelemetry-instrumentation-fastapi"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except Exception:
            pass
    return ", ".join(parts)


# Calls that mostly wait (for I/O, for work, or for the GIL after a system call): wall time, not CPU.
_WAITS = ("poll", "select", "get' of '_queue", "acquire", "wait", "send", "recv", "sleep", "urandom")


def print_profile(path: str, top: int) -> None:
    import pstats

    stats = pstats.Stats(path)
    rows = [(tt, nc, fn, line, name) for (fn, line, name), (cc, nc, tt, ct, callers) in stats.stats.items()
            if not any(w in name for w in _WAITS)]
    busy = sum(r[0] for r in rows)
    by_area: dict[str, float] = {}
    for tt, _nc, fn, _line, _name in rows:
        if "site-packages/" in fn:
            parts = fn.split("site-packages/", 1)[1].split("/")
            area = "/".join(parts[:3]) if parts[0] == "opentelemetry" else parts[0]
        elif "nexus_otel/" in fn:
            area = "nexus_otel/" + fn.split("nexus_otel/", 1)[1]
        elif fn == "~":
            area = "(builtins)"
        else:
            area = "(stdlib) " + os.path.basename(fn)
        by_area[area] = by_area.get(area, 0.0) + tt
    print(f"\ncProfile of the full-telemetry server, all threads; own time outside waits {busy:.1f} s "
          f"(waits excluded: {', '.join(_WAITS)})")
    print("by area:")
    for area, tt in sorted(by_area.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {tt / busy * 100:5.1f}%  {tt:7.2f} s  {area}")
    print(f"top {top} functions by own time:")
    for tt, nc, fn, line, name in sorted(rows, reverse=True)[:top]:
        where = fn.split("site-packages/", 1)[-1].split("/work/main/", 1)[-1]
        print(f"  {tt / busy * 100:5.1f}%  {tt:7.2f} s  {nc:>9}  {where}:{line}({name})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (noisier)")
    add_smoke_option(parser, "the first line alone (or the mode given), 1 round of 0.5 s, no warm-up")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per server (default 8, quick 4, smoke 1)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="seconds per round (default 3, quick 2, smoke 0.5)")
    parser.add_argument("--connections", type=int, default=None,
                        help="keep-alive connections (default 16; 64 with --workers, so the kernel spreads them "
                             "over the workers: a burst of a few lands on whichever worker wakes first)")
    parser.add_argument("--client-kind", choices=("auto", "wrk", "asyncio"), default="auto",
                        help="load generator: wrk if on PATH (auto), or the built-in asyncio client")
    parser.add_argument("--async-workflow", action="store_true",
                        help="serve an async workflow (default: a sync one, run in a worker thread)")
    parser.add_argument("--work-ms", type=float, default=0.0,
                        help="CPU work per workflow run in ms (default 0: a trivial workflow, the acceptance case)")
    parser.add_argument("--extra-work-ms", type=float, default=1.0,
                        help="also measure, in the same rounds, a workflow doing this much CPU work "
                             "(default 1; 0 to measure --work-ms alone)")
    parser.add_argument("--profile", action="store_true", help="cProfile the full-telemetry server")
    parser.add_argument("--full-env", action="append", default=[], metavar="VAR=VALUE",
                        help="extra environment for the full server only, for diagnosis "
                             "(e.g. OTEL_TRACES_EXPORTER=none); the ratio is then not the acceptance figure")
    # internal modes: the server and client subprocesses
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hooks", type=int, default=None,
                        help=f"trivial hooks of the bench plugin, each a span (default {HOOKS}, the acceptance case; "
                             f"{PEER_HOOKS} with --peers)")
    parser.add_argument("--no-sdk-floor", dest="sdk_floor", action="store_false",
                        help="skip the sdk-floor server (the raw SDK making the same spans; see the docstring)")
    parser.add_argument("--serve-sdk-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-workers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=0,
                        help="instead: full telemetry served by `serve --workers N` against `--workers 1`, "
                             f"the throughput ratio (target >= {WORKERS_TARGET} for N=2 on 2 cores)")
    parser.add_argument("--threads", type=int, default=0,
                        help="with --workers or --threads-sweep: threads per worker running sync workflows")
    parser.add_argument("--threads-sweep", default="", metavar="N,N,...",
                        help="instead: one full-telemetry server per thread count, each also with a workflow "
                             "that blocks --sleep-ms (I/O), to choose the default of serve --threads")
    parser.add_argument("--sleep-ms", type=float, default=20.0,
                        help="with --threads-sweep: the blocking workflow's sleep (default 20)")
    parser.add_argument("--peers", action="store_true",
                        help="instead: nexus-otel (full telemetry over OTLP/HTTP, and disabled) beside FastAPI "
                             "bare, FastAPI's native telemetry and the contrib instrumentor, one connection")
    parser.add_argument("--parts", action="store_true",
                        help="with --peers: also nexus-otel without recorded spans and without span export, "
                             "to show what each part of telemetry costs")
    args = parser.parse_args(argv)
    if args.hooks is None:
        args.hooks = PEER_HOOKS if args.peers else HOOKS
    if args.hooks < 0:
        parser.error("--hooks must be 0 or more")
    if args.workers < 0 or args.threads < 0:
        parser.error("--workers and --threads must be 0 or more")
    if args.peers and (args.workers or args.threads_sweep or args.async_workflow or args.profile):
        parser.error("--peers serves the sync workflow on one worker: no --workers, --threads-sweep, "
                     "--async-workflow or --profile")
    if args.parts and not args.peers:
        parser.error("--parts goes with --peers")
    if args.connections is None:
        args.connections = 1 if args.peers else 64 if args.workers or args.threads_sweep else 16

    if args.serve:
        return serve_main(args.port, args.async_workflow, args.work_ms, args.profile_out, args.serve_sdk_floor,
                          args.hooks, args.serve_workers, args.threads)
    if args.client:
        return client_main(args.port, args.connections, args.seconds or 3.0)

    t0 = time.monotonic()
    rounds = max(1, min(args.rounds or (1 if args.smoke else 4 if args.quick else 8), 50))
    seconds = max(1.0, min(args.seconds or (2.0 if args.quick else 3.0), 30.0))
    warmup = 2.0 if args.quick else 3.0
    if args.smoke:  # one short round, no warm-up: only that every part works and every check holds
        seconds, warmup = args.seconds or SMOKE_SECONDS, 0.0
    if args.smoke:
        args.extra_work_ms = 0.0  # the first line only
    kind = args.client_kind
    full_env = dict(item.split("=", 1) for item in args.full_env if "=" in item)
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") and not args.peers else "asyncio"
    elif kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not on PATH")

    print(f"nexus-otel HTTP throughput benchmark  python {platform.python_version()}  nproc {os.cpu_count()}")
    print(f"  {_versions()}")
    workdir = Path(tempfile.mkdtemp(prefix="nexus-otel-http-bench-"))
    try:
        if args.peers:
            problems = measure_peers(args, kind, rounds, seconds, warmup, workdir)
        elif args.workers or args.threads_sweep:
            problems = measure_servers(args, kind, rounds, seconds, warmup, workdir)
        else:
            problems = measure(args, kind, full_env, rounds, seconds, warmup, workdir)
        return smoke_verdict(problems) if args.smoke else 0
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"benchmark could not run: {exc}")
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name} (last lines)")
            print("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"total elapsed: {time.monotonic() - t0:.1f} s")


@dataclass
class Line:
    """One reported line: a workload (the workflow's CPU work) served by a full and a disabled server."""

    work_ms: float
    full: Server
    disabled: Server
    floor: Server | None = None  # the sdk-floor server, first line only
    floor_spans: int = 0  # spans its exporter received
    executions: float | None = None
    store: int = 0  # bytes the full server wrote to its local span store
    dropped: int = 0  # spans the full server's batch processor dropped
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "trivial workflow" if not self.work_ms else f"{self.work_ms:g} ms CPU work"

    @property
    def ratio(self) -> float:
        return ratio_of(self.full, self.disabled)[0]

    @property
    def paired(self) -> float:
        return ratio_of(self.full, self.disabled)[1]

    @property
    def servers(self) -> list[Server]:
        return [self.full, self.disabled] + ([self.floor] if self.floor else [])


def measure(args: argparse.Namespace, kind: str, full_env: dict[str, str], rounds: int, seconds: float,
            warmup: float, workdir: Path) -> list[str]:
    """The full / disabled lines (and the sdk-floor server) in turning rounds; prints the table, the ratios and
    the checks, and returns the checks' problems."""
    load = Load(kind, args.connections, workdir)
    workloads = [args.work_ms]
    if args.extra_work_ms > 0 and args.extra_work_ms != args.work_ms:
        workloads.append(args.extra_work_ms)
    flavour = "async" if args.async_workflow else "sync"
    described = " and ".join("trivial" if not w else f"{w:g} ms of CPU work" for w in workloads)
    print(f"  load: {load.describe()}; POST {PATH} ({flavour} workflow: {described}; {args.hooks} hooks); "
          f"{rounds} rounds x {seconds:g} s per server, alternating, after {warmup:g} s warm-up"
          + ("; full server under cProfile" if args.profile else "")
          + (f"; full server env {full_env}" if full_env else ""))

    lines: list[Line] = []
    servers: list[Server] = []
    problems: list[str] = []
    try:
        for i, work_ms in enumerate(workloads):
            pair = {}
            for variant in VARIANTS:
                pair[variant] = start_server(variant, workdir, args.async_workflow, work_ms,
                                             args.profile and variant == "full" and i == 0,
                                             full_env if variant == "full" else None, args.hooks)
                servers.append(pair[variant])
            line = Line(work_ms, pair["full"], pair["disabled"])
            if i == 0 and args.sdk_floor:
                line.floor = start_server(FLOOR, workdir, args.async_workflow, work_ms, False, None, args.hooks)
                servers.append(line.floor)
            lines.append(line)
        for server in servers:
            wait_ready(server)
            problems += check_server(server)
        for server in servers if warmup else ():
            load.run(server, warmup)  # warm-up: discarded
        # Each round measures every server once; within each workload the servers take
        # turns going first (A B C, B C A, ...), so drift and other jobs' load hit all alike.
        for r in range(rounds):
            for line in lines:
                for server in rotated(line.servers, r):
                    measure_once(load, server, seconds)
            print(f"  round {r + 1}/{rounds}: " + "   ".join(
                f"[{line.label}] " + ", ".join(f"{s.variant} {s.rates[-1]:6.0f} req/s" for s in line.servers)
                for line in lines), flush=True)
        for line in lines:
            line.executions = metric_total(line.full, "nexus_workflow_executions_total")
            if line.floor is not None:
                with urllib.request.urlopen(line.floor.url + "/sdk-floor-spans", timeout=30) as r:
                    line.floor_spans = int(json.loads(r.read())["exported"])
    finally:
        for server in servers:
            stop_server(server)

    for line in lines:
        full = line.full
        store = sum(f.stat().st_size for f in full.data_dir.glob("*.jsonl"))
        line.store = store
        if line.executions is None or line.executions < 1:
            line.problems.append(f"{full.name}: no nexus_workflow_executions_total on /metrics")
        if store == 0 and not full_env:
            line.problems.append(f"{full.name}: the local span store is empty")
        if line.floor is not None and line.floor_spans < 5:
            line.problems.append(f"{line.floor.name}: its SDK exported {line.floor_spans} spans: it made none")
        for quiet in line.servers[1:]:
            if any(quiet.data_dir.glob("*.jsonl")):
                line.problems.append(f"{quiet.name}: spans were written to the local store")
        # The SDK's batch processor logs each span it drops when its queue is full.
        assert full.log_path is not None
        dropped = full.log_path.read_text(errors="replace").count("dropping Span")
        line.dropped = dropped
        if dropped:
            line.problems.append(f"{full.name}: the batch span processor dropped {dropped} spans (queue full): "
                                 "export cannot keep up, so the full server did less than full telemetry")
        for server in line.servers:
            if server.errors:
                line.problems.append(f"{server.name}: {server.errors} non-200 responses or socket errors")

    print()
    header = f"{'workload':<18} {'variant':<9} {'median req/s':>12} {'min':>8} {'max':>8} {'errors':>7}"
    print(header)
    print("-" * len(header))
    for line in lines:
        for server in line.servers:
            print(f"{line.label if server is line.full else '':<18} {server.variant:<9} "
                  f"{statistics.median(server.rates):>12.0f} {min(server.rates):>8.0f} "
                  f"{max(server.rates):>8.0f} {server.errors:>7}")
    print()
    for i, line in enumerate(lines):
        passed = line.ratio >= TARGET and not line.problems and not problems
        role = ("acceptance figure" if not line.work_ms else "workload under test") if i == 0 else "for comparison"
        ratio, paired = (format_ratio(value, TARGET, at_least=True) for value in (line.ratio, line.paired))
        print(f"ratio full/disabled, {line.label + ':':<20} {ratio}  (paired, median of per-round "
              f"ratios: {paired})  target >= {TARGET}  {'PASS' if passed else 'FAIL'}  [{role}]")
    for line in lines:
        if line.floor is not None:
            floor, paired = (format_ratio(v, TARGET, at_least=True) for v in ratio_of(line.floor, line.disabled))
            print(f"ratio sdk-floor/disabled, {line.label + ':':<15} {floor}  (paired: {paired})  "
                  f"[ceiling: the raw SDK making the same {args.hooks + 2} spans, nothing else "
                  f"({line.floor_spans} spans exported); full telemetry cannot beat it]")
    for line in lines:
        print(f"full telemetry, {line.label}: {line.executions or 0:.0f} workflow executions counted on /metrics, "
              f"{line.store / 1e6:.1f} MB of spans in the local store (bounded by rotation), "
              f"{line.dropped} spans dropped")
    problems += [p for line in lines for p in line.problems]
    for p in problems:
        print(f"CHECK FAILED: {p}")
    full = lines[0].full
    if args.profile and full.profile_out and os.path.exists(full.profile_out):
        print("(the full server ran under cProfile: its req/s are depressed; do not quote this ratio)")
        print_profile(full.profile_out, 30)
    return problems


def children_cpu() -> float:
    """CPU seconds of this process's ended children (each load generator run, once it is reaped)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_once(load: Load, server: Server, seconds: float) -> None:
    """One timed run against ``server``: its req/s and errors, and the CPU its process tree (and the load
    generator) used meanwhile, in cores and per request answered."""
    answered = load.requests.get(server.port, 0)
    cpu, client, started = tree_cpu(server.proc.pid), children_cpu(), time.monotonic()
    rate, errors = load.run(server, seconds)
    took = time.monotonic() - started
    used = tree_cpu(server.proc.pid) - cpu
    server.cores.append(used / took)
    server.client_cores.append((children_cpu() - client) / took)
    server.cpu_us.append(1e6 * used / max(1, load.requests.get(server.port, 0) - answered))
    server.rates.append(rate)
    server.errors += errors


def ratio_of(a: Server, b: Server) -> tuple[float, float]:
    """``a``'s median req/s over ``b``'s, and the median of the per-round ratios (each round's pair)."""
    return ratio_of_medians(a.rates, b.rates), paired_ratio(a.rates, b.rates)


def measure_servers(args: argparse.Namespace, kind: str, rounds: int, seconds: float, warmup: float,
                    workdir: Path) -> list[str]:
    """``--workers N``: 1 worker against N; ``--threads-sweep``: one server per thread count. Full telemetry."""
    load = Load(kind, args.connections, workdir)
    if args.workers:
        if args.workers < 2:
            raise RuntimeError("--workers compares N >= 2 workers with 1")
        workloads = [(args.work_ms, 0.0)] + ([(args.extra_work_ms, 0.0)] if args.extra_work_ms > 0 else [])
        plans = [(f"{n} worker{'s' if n > 1 else ''}", {"workers": n, "threads": args.threads})
                 for n in (1, args.workers)]
        what = f"serve --workers {args.workers} over --workers 1, full telemetry"
    else:
        counts = [int(n) for n in args.threads_sweep.split(",") if n.strip()]
        if not counts or min(counts) < 1:
            raise RuntimeError("--threads-sweep takes thread counts of 1 or more, e.g. 4,8,16,32,64")
        workloads = [(args.work_ms, 0.0), (0.0, args.sleep_ms)]
        plans = [(f"{n} threads", {"workers": 1, "threads": n}) for n in counts]
        what = f"serve --threads N, full telemetry, sync workflow (CPU, then blocking {args.sleep_ms:g} ms)"
    print(f"  load: {load.describe()}; POST {PATH}; {what}; {rounds} rounds x {seconds:g} s per server, "
          f"alternating, after {warmup:g} s warm-up")
    lines: list[tuple[str, list[Server]]] = []
    servers: list[Server] = []
    problems: list[str] = []
    try:
        for work_ms, sleep_ms in workloads:
            label = f"{work_ms:g} ms CPU" + (f" + {sleep_ms:g} ms blocked" if sleep_ms else "")
            line = [start_server(name, workdir, args.async_workflow, work_ms, False, None, args.hooks,
                                 sleep_ms=sleep_ms, **plan) for name, plan in plans]
            servers += line
            lines.append((label, line))
        for server in servers:
            wait_ready(server)
            problems += check_server(server)
        for server in servers if warmup else ():
            load.run(server, warmup)
        for r in range(rounds):
            for _label, line in lines:
                for server in rotated(line, r):
                    measure_once(load, server, seconds)
            print(f"  round {r + 1}/{rounds}: " + "   ".join(
                f"[{label}] " + ", ".join(f"{s.variant} {s.rates[-1]:6.0f}" for s in line) for label, line in lines),
                flush=True)
        counted = {server.name: metric_total(server, "nexus_workflow_executions_total") for server in servers}
    finally:
        for server in servers:
            stop_server(server)
    print()
    for label, line in lines:
        for server in line:
            median = statistics.median(server.rates)
            ratio, paired = ratio_of(server, line[0])
            print(f"{label:<24} {server.variant:<12} median {median:7.0f} req/s  (min {min(server.rates):6.0f}, "
                  f"max {max(server.rates):6.0f})  ratio to {line[0].variant}: {ratio:.3f} "
                  f"(paired {paired:.3f})  errors {server.errors}  CPU: server {statistics.median(server.cores):.2f} "
                  f"cores, load generator {statistics.median(server.client_cores):.2f} cores")
            if server.errors:
                problems.append(f"{server.name}: {server.errors} non-200 responses or socket errors")
            if not counted.get(server.name):
                problems.append(f"{server.name}: no nexus_workflow_executions_total on /metrics")
    if args.workers:
        label, line = lines[0]
        ratio = ratio_of(line[1], line[0])[0]
        verdict = "PASS" if ratio >= WORKERS_TARGET and not problems else "FAIL"
        print(f"throughput ratio --workers {args.workers} / --workers 1, {label}: {ratio:.3f}  "
              f"target >= {WORKERS_TARGET}  {verdict}  [acceptance figure]")
        # The ceiling: the CPU the machine has left beside the load generator, over what one worker uses.
        one, many = line
        spare = min(args.workers, os.cpu_count() or 1) - statistics.median(many.client_cores)
        per_request = statistics.median(one.cores) / statistics.median(one.rates)
        many_per_request = statistics.median(many.cores) / statistics.median(many.rates)
        print(f"ceiling: {spare:.2f} cores left beside the load generator / {statistics.median(one.cores):.2f} cores "
              f"one worker uses = {spare / statistics.median(one.cores):.3f}; the {args.workers} workers used "
              f"{statistics.median(many.cores):.2f} cores, {1e6 * many_per_request:.0f} µs of CPU a request "
              f"(one worker: {1e6 * per_request:.0f} µs)")
    for p in problems:
        print(f"CHECK FAILED: {p}")
    return problems


# --------------------------------------------------------------------------------------
# --peers: nexus-otel beside the FastAPI peers (http_peers.py), telemetry to an OTLP/HTTP sink
# --------------------------------------------------------------------------------------
def start_peer_servers(args: argparse.Namespace, workdir: Path, sink: Sink, servers: list[Server]) -> None:
    """nexus-full, nexus-disabled and the peers, all started at once (appended to ``servers`` as they start)."""
    parts = list(PARTS) if args.parts else []
    for variant in [*NEXUS_PEERS, *parts]:  # all with the sink's endpoint: the disabled one must send nothing to it
        otlp = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": variant, **PARTS.get(variant, {})}
        servers.append(start_server(variant, workdir, False, args.work_ms, False, otlp, args.hooks))
    for peer in PEERS:
        servers.append(start_peer(peer, workdir, sink, args.work_ms, args.hooks))


def peer_spans(server: Server, hooks: int) -> int:
    """Spans a request to ``server`` makes (0 without telemetry)."""
    if server.variant in NEXUS_PEERS:
        return 0 if server.variant in DISABLED else 2 + hooks
    if server.variant in PARTS:
        return 0
    return spans_per_request(server.variant, hooks)


def traced(server: Server, hooks: int) -> bool:
    """Whether ``server`` answers with a trace id (a --parts server does, though it sends no span)."""
    return server.variant in PARTS or peer_spans(server, hooks) > 0


def check_peer(server: Server, traced: bool) -> list[str]:
    """One request: 200 and the same answer from every server, with a trace id exactly when it makes spans."""
    status, body, _headers = post_once(server)
    problems = []
    if status != 200 or body.get("result") != {"greeting": "Hello, ada!"} or body.get("workflow") != WORKFLOW:
        problems.append(f"{server.variant}: unexpected response {status} {body}")
    if bool(body.get("trace_id")) != traced:
        problems.append(f"{server.variant}: trace id {body.get('trace_id')!r}, expected one: {traced}")
    return problems


def protocol_of(server: Server) -> str:
    """The HTTP protocol class and event loop the server's log says uvicorn picked (``announce_protocol``)."""
    assert server.log_path is not None
    found = re.search(r"HTTP protocol: (\S+); event loop: (\S+)", server.log_path.read_text(errors="replace"))
    return f"{found.group(1)} on {found.group(2)}" if found else "(not announced)"


def check_sink(servers: list[Server], counts: dict[str, Any], answered: dict[int, int], hooks: int) -> list[str]:
    """Each telemetry server's spans reached the sink, about spans-a-request x requests (its start, stop and
    health check make a few more); the others sent nothing."""
    problems = []
    services = counts["services"]
    for server in servers:
        per_request, got = peer_spans(server, hooks), services.get(server.variant)
        requests = answered.get(server.port, 0) + 1  # the check request too
        if not per_request:
            if server.variant in PARTS and (got or {}).get("spans", 0):
                problems.append(f"{server.variant}: sent spans to the sink: {got}")
            elif server.variant not in PARTS and got:
                problems.append(f"{server.variant}: sent telemetry to the sink: {got}")
            continue
        spans, traces = (got or {}).get("spans", 0), (got or {}).get("traces", 0)
        if not per_request * requests <= spans <= per_request * requests + 20:
            problems.append(f"{server.variant}: {spans} spans at the sink, expected {per_request} x {requests} "
                            f"requests = {per_request * requests} (+ a few for start, stop, health check)")
        if traces < requests:
            problems.append(f"{server.variant}: {traces} traces at the sink for {requests} requests")
    names = {s.variant for s in servers}
    for service in set(services) - names:
        problems.append(f"the sink received telemetry from an unexpected service {service!r}")
    if counts["undecoded"]:
        problems.append(f"the sink could not decode {counts['undecoded']} exports")
    return problems


def print_peers(servers: list[Server], protocols: dict[str, str], counts: dict[str, Any], hooks: int) -> None:
    """The table (medians over the rounds) and the ratios with their targets."""
    header = (f"{'server':<16} {'median req/s':>12} {'min':>7} {'max':>7} {'CPU µs/req':>10} {'errors':>6} "
              f"{'spans at sink':>13}  HTTP protocol, event loop")
    print(header)
    print("-" * len(header))
    for server in servers:
        spans = counts["services"].get(server.variant, {}).get("spans", 0)
        print(f"{server.variant:<16} {statistics.median(server.rates):>12.0f} {min(server.rates):>7.0f} "
              f"{max(server.rates):>7.0f} {statistics.median(server.cpu_us):>10.0f} {server.errors:>6} "
              f"{spans:>13}  {protocols[server.variant]}")
    print(f"(spans a request: {', '.join(f'{s.variant} {peer_spans(s, hooks)}' for s in servers)}; "
          f"exports at the sink by signal: " + "; ".join(
              f"{name} {got['exports']}" for name, got in counts["services"].items()) + ")")
    print()
    by_name = {server.variant: server for server in servers}
    parts = [(part, "nexus-disabled", None) for part in PARTS if part in by_name]
    for a, b, target in [*PEER_RATIOS, *parts]:
        ratio, paired = ratio_of(by_name[a], by_name[b])
        verdict = (f"target >= {target}  {'PASS' if ratio >= target else 'FAIL'}" if target is not None
                   else "[for information]")
        shown = format_ratio(ratio, target, at_least=True)
        print(f"ratio {a + ' / ' + b + ':':<34} {shown}  (paired, median of per-round ratios: {paired:.3f})  "
              f"{verdict}")


def measure_peers(args: argparse.Namespace, kind: str, rounds: int, seconds: float, warmup: float,
                  workdir: Path) -> list[str]:
    """``--peers``: every server started at once, measured in rotating rounds; the table, ratios and checks."""
    load = Load(kind, args.connections, workdir)
    work = "trivial" if not args.work_ms else f"{args.work_ms:g} ms of CPU work"
    print(f"  load: {load.describe()}; POST {PATH} (sync workflow: {work}; {args.hooks} hooks); {rounds} rounds "
          f"x {seconds:g} s per server, rotating, after {warmup:g} s warm-up; telemetry over OTLP/HTTP "
          f"(protobuf) to a loopback sink (its own process)")
    sink = Sink()
    servers: list[Server] = []
    problems: list[str] = []
    try:
        try:
            start_peer_servers(args, workdir, sink, servers)
            for server in servers:
                wait_ready(server)
                problems += check_peer(server, traced(server, args.hooks))
            protocols = {server.variant: protocol_of(server) for server in servers}
            for server in servers if warmup else ():
                load.run(server, warmup)  # warm-up: discarded (its requests are counted for the sink's check)
            for r in range(rounds):
                for server in rotated(servers, r):
                    measure_once(load, server, seconds)
                print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{s.variant} {s.rates[-1]:.0f}" for s in servers),
                      flush=True)
        finally:
            for server in servers:
                stop_server(server)  # SIGTERM: each flushes its telemetry to the sink
        counts = sink.counts()
    finally:
        sink.stop()
    print()
    print_peers(servers, protocols, counts, args.hooks)
    problems += [f"{s.variant}: {s.errors} non-200 responses or socket errors" for s in servers if s.errors]
    problems += check_sink(servers, counts, load.requests, args.hooks)
    for p in problems:
        print(f"CHECK FAILED: {p}")
    if not problems:
        print("checks passed: the same answer from every server, every response a 200, each telemetry server's "
              "spans at the sink (one trace a request), none from nexus-disabled or fastapi-bare")
    return problems


if __name__ == "__main__":
    sys.exit(main())
