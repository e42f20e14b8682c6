"""The app ``benchmarks/http_throughput.py`` serves: one workflow and a plugin with trivial hooks.

A module of its own so that ``nexus-otel serve --workers N``'s worker
processes can import it (as ``benchmarks.http_app:create``, the repository on
``PYTHONPATH``), which they cannot do with ``http_throughput.py`` (its name is the
standard library's). ``create`` reads the workload from ``BENCH_*`` variables.
"""

from __future__ import annotations

import os
import time
from typing import Any

WORKFLOW = "bench"
HOOKS = 3  # the bench plugin's trivial hooks (http_throughput.py --hooks)


def hook_events(hooks: int) -> list[str]:
    """The events of the plugin's ``hooks`` hooks: one ``workflow_started``, the rest ``workflow_completed``."""
    return ["workflow_started", *["workflow_completed"] * (hooks - 1)][:hooks]


def build_app(async_workflow: bool, work_ms: float = 0.0, hooks: int = HOOKS, sleep_ms: float = 0.0) -> Any:
    """The app; its workflow spins ``work_ms`` of CPU (holding the GIL) and then sleeps ``sleep_ms`` (I/O)."""
    from nexus_otel import Nexus, NexusPlugin

    class BenchPlugin(NexusPlugin):
        """Trivial hooks (by default three: started, completed, completed)."""

        name = "bench-plugin"  # type: ignore[assignment]
        version = "1.0.0"  # type: ignore[assignment]

        def setup(self, nexus_app: Nexus) -> None:
            for event in hook_events(hooks):
                getattr(nexus_app, f"on_{event}")(lambda event: None)

    work_s, sleep_s = work_ms / 1000, sleep_ms / 1000

    def busy() -> None:  # CPU work the workflow does (holds the GIL, like pure-Python work)
        if work_s:
            end = time.perf_counter() + work_s
            while time.perf_counter() < end:
                pass

    app = Nexus("bench-http")
    app.add_plugin(BenchPlugin())
    request_log = os.environ.get("BENCH_REQUEST_LOG")  # benchmarks/logs_cost.py: two request-log records a request
    if request_log in ("lines", "none"):
        import logging
        import sys

        from nexus_otel.plugins import RequestLoggerPlugin

        app.add_plugin(RequestLoggerPlugin(output=sys.stderr if request_log == "lines" else None))
        if request_log == "none":
            logging.getLogger("nexus_otel.requests").setLevel(logging.INFO)  # made whether or not lines are written
    elif request_log == "sdk-floor":
        from sdk_log_floor import SdkLogFloor

        app.records.add(SdkLogFloor(os.environ["BENCH_SDK_LOG_ENDPOINT"]))
    if async_workflow:
        import asyncio

        async def bench(inputs: dict) -> dict:
            busy()
            if sleep_s:
                await asyncio.sleep(sleep_s)
            return {"greeting": f"Hello, {inputs.get('name', 'world')}!"}
    else:
        def bench(inputs: dict) -> dict:  # type: ignore[misc]
            busy()
            if sleep_s:
                time.sleep(sleep_s)  # blocking I/O: holds one of the server's threads
            return {"greeting": f"Hello, {inputs.get('name', 'world')}!"}
    app.register(WORKFLOW, bench)
    return app


def create() -> Any:
    """The app as ``BENCH_ASYNC_WORKFLOW``, ``BENCH_WORK_MS``, ``BENCH_SLEEP_MS`` and ``BENCH_HOOKS`` describe it."""
    return build_app(os.environ.get("BENCH_ASYNC_WORKFLOW") == "1", float(os.environ.get("BENCH_WORK_MS", "0")),
                     int(os.environ.get("BENCH_HOOKS", str(HOOKS))), float(os.environ.get("BENCH_SLEEP_MS", "0")))
