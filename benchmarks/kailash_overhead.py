"""The cost of nexus-otel on a Kailash Nexus app: instrumented against plain, same workflow, same run.

Run (with the ``kailash`` extra installed)::

    python benchmarks/kailash_overhead.py            # ~1 minute
    python benchmarks/kailash_overhead.py --quick

Two measurements, each alternating plain and instrumented rounds so drift hits both alike:

* ``runtime``: the two-node ``WorkflowBuilder`` workflow (``double`` then
  ``add_one``, two ``PythonCodeNode``s) run by ``AsyncLocalRuntime.execute_workflow_async``
  in this process, the call every Nexus channel ends in. Per execution: CPU
  of the whole process (``time.process_time``: the span export thread too)
  and wall time. Instrumented means ``NexusOtel`` installed with default
  telemetry (spans to the local store, metrics on ``/metrics``) and one
  plugin with a ``workflow_completed`` hook: a workflow span, two node spans,
  a hook span, the contract's metrics and a record per execution.
* ``http``: the same workflow registered on two Kailash Nexus apps, each
  served by uvicorn in its own process on 127.0.0.1, one with ``NexusOtel``;
  a closed-loop client in this process posts ``/workflows/double_then_add/execute``.
  Per request: the server's CPU (its process, from ``/proc``) and the
  client-side latency.

It prints µs per execution and the ratio instrumented / plain. The instrumented side must have counted every
execution on its metrics. It reports; it does not gate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import add_smoke_option, paired_ratio, process_cpu, rotated, smoke_verdict

HOST = "127.0.0.1"
WORKFLOW = "double_then_add"
VARIANTS = ("instrumented", "plain")  # the first goes first in the warm-up round; the order turns every round


def build():
    from kailash.workflow.builder import WorkflowBuilder

    wf = WorkflowBuilder()
    wf.add_node("PythonCodeNode", "double", {"code": "result = {'value': x * 2}"})
    wf.add_node("PythonCodeNode", "add_one", {"code": "result = {'value': v + 1}"})
    wf.add_connection("double", "result.value", "add_one", "v")
    return wf


def make_app(instrumented: bool):
    """A Kailash Nexus app with the workflow; with ``NexusOtel`` (and a one-hook plugin) when ``instrumented``."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    from nexus import Nexus

    root.setLevel(level)  # importing nexus sets the root logger to INFO
    root.handlers[:] = handlers
    logging.getLogger("kailash").setLevel(logging.WARNING)
    logging.getLogger("nexus").setLevel(logging.WARNING)
    app = Nexus(enable_durability=False)
    plugin = None
    if instrumented:
        from nexus_otel import NexusPlugin
        from nexus_otel.kailash import NexusOtel

        class Hook(NexusPlugin):
            name = "bench-hook"

            def setup(self, nexus_app) -> None:
                nexus_app.on_workflow_completed(lambda event: None)

        plugin = NexusOtel(plugins=[Hook()], service_name="kailash-bench")
        app.add_plugin(plugin)
    app.register(WORKFLOW, build())
    return app, plugin


def check_counted(who: str, exposition: str, expected: int, problems: list[str]) -> None:
    """Prints how many executions ``who`` counted in ``exposition`` (Prometheus text); a miscount is a problem."""
    executions = sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
                     if line.startswith("nexus_workflow_executions_total{"))
    print(f"  {who} counted {executions:.0f} executions (expected {expected})")
    if executions != expected:
        problems.append(f"{who} counted {executions:.0f} executions, expected {expected}")


def measure_runtime(rounds: int, per_round: int, problems: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Per round and variant: (CPU µs, wall µs) per execution of the workflow by the async runtime; a miscount
    of the instrumented side's executions goes into ``problems``."""
    from kailash.runtime.async_local import AsyncLocalRuntime

    from nexus_otel.kailash.runtime import INSTRUMENTATION

    _, plugin = make_app(True)
    assert plugin is not None
    INSTRUMENTATION.remove(plugin)  # rounds below add it back for the instrumented side
    workflow = build().build(name=WORKFLOW)
    runtime = AsyncLocalRuntime()
    out: dict[str, list[tuple[float, float]]] = {"plain": [], "instrumented": []}

    async def run(n: int) -> None:
        for i in range(n):
            results, _ = await runtime.execute_workflow_async(workflow, {"x": i})
            assert results["add_one"]["result"]["value"] == 2 * i + 1

    for r in range(rounds + 1):  # round 0 warms both up
        for variant in rotated(VARIANTS, r):
            if variant == "instrumented":
                INSTRUMENTATION.add(plugin)
            cpu, wall = time.process_time(), time.perf_counter()
            asyncio.run(run(per_round))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if variant == "instrumented":
                INSTRUMENTATION.remove(plugin)
            if r:
                out[variant].append((1e6 * cpu / per_round, 1e6 * wall / per_round))
    counted = plugin.app.telemetry.prometheus_exposition()[0].decode()
    check_counted("runtime: the instrumented side", counted, (rounds + 1) * per_round, problems)
    plugin.on_shutdown()
    return out


def serve_main(port: int, instrumented: bool) -> int:
    import uvicorn

    app, _ = make_app(instrumented)
    uvicorn.run(app.fastapi_app, host=HOST, port=port, log_level="warning", access_log=False)
    return 0


def measure_http(rounds: int, per_round: int, workdir: Path,
                 problems: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Per round and variant: (server CPU µs, client latency µs) per request, closed loop, one connection; a
    miscount of the instrumented server's executions goes into ``problems``."""
    import httpx

    from nexus_otel.serving import free_port

    servers = {}
    for variant in ("plain", "instrumented"):
        port = free_port()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NEXUS_OTEL_"))},
               "NEXUS_OTEL_DATA_DIR": str(workdir / variant)}
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port)]
                                + (["--instrumented"] if variant == "instrumented" else []),
                                env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers[variant] = (proc, f"http://{HOST}:{port}")
    out: dict[str, list[tuple[float, float]]] = {"plain": [], "instrumented": []}
    try:
        with httpx.Client(timeout=30) as client:
            for proc, url in servers.values():
                deadline = time.monotonic() + 60
                while True:
                    try:
                        client.get(f"{url}/health")
                        break
                    except httpx.TransportError:
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError(f"the server on {url} did not start") from None
                        time.sleep(0.2)
            for r in range(rounds + 1):
                for variant in rotated(VARIANTS, r):
                    proc, url = servers[variant]
                    cpu, wall = process_cpu(proc.pid), time.perf_counter()
                    for i in range(per_round):
                        reply = client.post(f"{url}/workflows/{WORKFLOW}/execute", json={"inputs": {"x": i}})
                        assert reply.status_code == 200, reply.text
                    cpu, wall = process_cpu(proc.pid) - cpu, time.perf_counter() - wall
                    if r:
                        out[variant].append((1e6 * cpu / per_round, 1e6 * wall / per_round))
            metrics = client.get(f"{servers['instrumented'][1]}/metrics").text
        check_counted("http: the instrumented server (Nexus's /metrics)", metrics, (rounds + 1) * per_round,
                      problems)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    return out


def report(label: str, data: dict[str, list[tuple[float, float]]], what: tuple[str, str]) -> None:
    for k, name in enumerate(what):
        plain = statistics.median(v[k] for v in data["plain"])
        inst = statistics.median(v[k] for v in data["instrumented"])
        paired = paired_ratio((i[k] for i in data["instrumented"]), (p[k] for p in data["plain"]))
        print(f"{label:<8} {name:<22} plain {plain:9.0f} µs   instrumented {inst:9.0f} µs   "
              f"cost {inst - plain:+8.0f} µs   ratio {inst / plain:.3f} (paired {paired:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    add_smoke_option(parser, "1 round of 4 executions (2 requests) per side")
    parser.add_argument("--serve", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--instrumented", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve_main(args.serve, args.instrumented)
    rounds, per_round = (1, 4) if args.smoke else (4, 200) if args.quick else (8, 300)
    from importlib.metadata import version

    print(f"Kailash Nexus with nexus-otel: python {sys.version.split()[0]}, kailash-nexus {version('kailash-nexus')}, "
          f"kailash {version('kailash')}, nexus-otel {version('nexus-otel')}; {rounds} rounds x {per_round} "
          "executions per side, alternating")
    problems: list[str] = []
    runtime = measure_runtime(rounds, per_round, problems)
    with tempfile.TemporaryDirectory(prefix="nexus-otel-kailash-bench-") as workdir:
        http = measure_http(rounds, per_round // 2, Path(workdir), problems)
    print()
    report("runtime", runtime, ("CPU per execution", "wall per execution"))
    report("http", http, ("server CPU per request", "latency per request"))
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    return smoke_verdict(problems) if args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
