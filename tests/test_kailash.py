"""``nexus_otel.kailash``: a real Kailash Nexus app (the ``kailash-nexus`` and ``kailash`` packages from PyPI).

The app is Kailash Nexus's own FastAPI app, served by uvicorn on a loopback
port (``BackgroundServer``: ``Nexus.start()`` always binds 0.0.0.0), with a two-node
``WorkflowBuilder`` workflow. Spans go to a real OTLP receiver, webhooks to a
real receiver, audit rows to SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

_root = logging.getLogger()
_saved = (_root.level, list(_root.handlers))
from kailash.runtime.async_local import AsyncLocalRuntime  # noqa: E402
from kailash.runtime.local import LocalRuntime  # noqa: E402
from kailash.workflow.builder import WorkflowBuilder  # noqa: E402
from nexus import Nexus as KailashNexus  # noqa: E402

_root.setLevel(_saved[0])  # importing nexus configures the root logger at INFO
_root.handlers[:] = _saved[1]

from nexus_otel import NexusPlugin  # noqa: E402
from nexus_otel.errors import IntegrationError  # noqa: E402
from nexus_otel.kailash import NexusOtel, check_points  # noqa: E402
from nexus_otel.kailash.runtime import ASYNC_WORKFLOW, INSTRUMENTATION  # noqa: E402
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin  # noqa: E402
from nexus_otel.serving import BackgroundServer  # noqa: E402

from .otlp_receivers import HTTPReceiver  # noqa: E402
from .ports import free_port  # noqa: E402
from .webhook_receiver import WebhookReceiver  # noqa: E402

CALLER_TRACE, CALLER_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
SERVER, INTERNAL, ERROR = 2, 1, 2  # OTLP span kinds and status code


def two_node(fail: bool = False) -> WorkflowBuilder:
    """``double`` then ``add_one`` (which raises with ``fail``)."""
    wf = WorkflowBuilder()
    wf.add_node("PythonCodeNode", "double", {"code": "result = {'value': x * 2}"})
    wf.add_node("PythonCodeNode", "add_one",
                {"code": "raise ValueError('kaboom')" if fail else "result = {'value': v + 1}"})
    wf.add_connection("double", "result.value", "add_one", "v")
    return wf


class Recorder(NexusPlugin):
    """A nexus-otel plugin written as for a ``nexus_otel.Nexus`` app: its hooks record what they saw."""

    name = "recorder"
    version = "1.0.0"

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def setup(self, nexus_app) -> None:
        nexus_app.on_workflow_completed(lambda e: self.seen.append(("completed", e.workflow_name, e.channel)))
        nexus_app.on_workflow_failed(lambda e: self.seen.append(("failed", e.workflow_name, type(e.error).__name__)))
        nexus_app.on_startup(lambda: self.seen.append(("startup", "", "")))
        nexus_app.on_shutdown(lambda: self.seen.append(("shutdown", "", "")))


def environ(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "50", "NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), **extra}


def by_name(spans, name):
    return [s for s in spans if s.name == name]


def test_a_kailash_nexus_app_is_traced_metered_and_recorded(tmp_path):
    recorder = Recorder()
    with HTTPReceiver() as otlp, WebhookReceiver() as hooks:
        plugin = NexusOtel(plugins=[recorder, WebhookPlugin(hooks.url, statuses=("completed", "failed")),
                                    DatabasePlugin()],
                           service_name="kshop", environ=environ(tmp_path, otlp.endpoint))
        app = KailashNexus(api_port=free_port(), enable_durability=False)
        app.add_plugin(plugin)  # the three lines: Nexus(), add_plugin(NexusOtel(...)), register
        app.register("double_then_add", two_node())
        with BackgroundServer(app.fastapi_app) as url:
            r = httpx.post(f"{url}/workflows/double_then_add/execute", json={"inputs": {"x": 20}},
                           headers={"traceparent": TRACEPARENT}, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["outputs"]["add_one"]["result"]["value"] == 41
            assert r.headers["x-trace-id"] == CALLER_TRACE
            # The Python path: the same workflow run by Kailash's runtimes, no HTTP.
            built = two_node().build(name="double_then_add")
            results, _ = asyncio.run(AsyncLocalRuntime().execute_workflow_async(built, {"x": 3}))
            assert results["add_one"]["result"]["value"] == 7
            with LocalRuntime(enable_monitoring=False) as runtime:
                results, _ = runtime.execute(two_node().build(name="double_then_add"), parameters={"x": 4})
            assert results["add_one"]["result"]["value"] == 9
            # Kailash Nexus's CLI (it posts to the HTTP API: channel api).
            cli = subprocess.run([sys.executable, "-m", "nexus.cli", "--url", url, "run", "double_then_add",
                                  "--param", "x=5"], capture_output=True, text=True, timeout=60)
            assert cli.returncode == 0 and "value: 11" in cli.stdout, cli.stdout + cli.stderr
            scrape = httpx.get(f"{url}/metrics", timeout=10).text  # Kailash Nexus's own endpoint
            hooks.wait_for_count(4, timeout=20)
        assert otlp.wait_for(lambda: len(by_name(otlp.spans(), "workflow double_then_add")) == 4, timeout=10)
        spans = otlp.spans()

    executions = {line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                  if line.startswith("nexus_workflow_executions_total{")}
    assert executions == {
        'channel="api",service_name="kshop",status="completed",workflow="double_then_add"': 2.0,
        'channel="python",service_name="kshop",status="completed",workflow="double_then_add"': 2.0,
    }, executions
    assert "kailash_" in scrape, "Kailash Nexus's own metrics are still served beside ours"

    # HTTP server span (the caller's child) -> workflow span -> the two node spans and the plugin's hook span.
    trace = [s for s in spans if s.trace_id == CALLER_TRACE]
    (server,) = [s for s in trace if s.kind == SERVER]
    assert server.parent_span_id == CALLER_SPAN and server.name == "POST /workflows/double_then_add/execute"
    assert server.attributes["http.route"] == "/workflows/double_then_add/execute"
    (workflow,) = by_name(trace, "workflow double_then_add")
    assert workflow.parent_span_id == server.span_id
    assert workflow.attributes["nexus.channel"] == "api" and workflow.attributes["nexus.workflow.inputs"] == '{"x": 20}'
    nodes = sorted((s for s in trace if s.name.startswith("node ")), key=lambda s: s.name)
    assert [(s.name, s.attributes["nexus.node.type"], s.attributes["nexus.node.status"]) for s in nodes] == [
        ("node add_one", "PythonCodeNode", "completed"), ("node double", "PythonCodeNode", "completed")]
    assert {s.parent_span_id for s in nodes} == {workflow.span_id}
    (hook,) = by_name(trace, "hook workflow_completed recorder")
    assert hook.parent_span_id == workflow.span_id and workflow.resource["service.name"] == "kshop"
    other_runs = [s for s in by_name(spans, "workflow double_then_add") if s.trace_id != CALLER_TRACE]
    assert sorted(s.attributes["nexus.channel"] for s in other_runs) == ["api", "python", "python"]
    for run in other_runs:
        assert sorted(s.name for s in spans if s.parent_span_id == run.span_id and s.name.startswith("node ")) == [
            "node add_one", "node double"]

    assert recorder.seen == [("startup", "", ""), ("completed", "double_then_add", "api"),
                             ("completed", "double_then_add", "python"), ("completed", "double_then_add", "python"),
                             ("completed", "double_then_add", "api"), ("shutdown", "", "")]
    ids = [r.headers["webhook-id"] for r in hooks.requests()]
    assert len(ids) == 4 and len(set(ids)) == 4
    with sqlite3.connect(tmp_path / "data" / "audit.sqlite") as db:
        rows = db.execute("SELECT workflow_name, channel, status FROM workflow_executions ORDER BY started_at"
                          ).fetchall()
    assert rows == [("double_then_add", "api", "completed"), ("double_then_add", "python", "completed"),
                    ("double_then_add", "python", "completed"), ("double_then_add", "api", "completed")]


def test_a_failing_node_fails_its_workflow_span_hooks_and_records(tmp_path):
    recorder = Recorder()
    with HTTPReceiver() as otlp, WebhookReceiver() as hooks:
        plugin = NexusOtel(plugins=[recorder, WebhookPlugin(hooks.url, statuses=("failed",)), DatabasePlugin()],
                           environ=environ(tmp_path, otlp.endpoint))
        app = KailashNexus(api_port=free_port(), enable_durability=False)
        app.add_plugin(plugin)
        app.register("breaks", two_node(fail=True))
        with BackgroundServer(app.fastapi_app) as url:
            r = httpx.post(f"{url}/workflows/breaks/execute", json={"inputs": {"x": 1}}, timeout=30)
            assert r.status_code == 500
            (delivered,) = hooks.wait_for_count(1, timeout=20)
        assert otlp.wait_for(lambda: by_name(otlp.spans(), "workflow breaks"), timeout=10)
        spans = otlp.spans()
    (workflow,) = by_name(spans, "workflow breaks")
    assert workflow.status_code == ERROR
    assert workflow.attributes["error.type"] == "kailash.sdk_exceptions.WorkflowExecutionError"
    (failed_node,) = by_name(spans, "node add_one")
    assert failed_node.status_code == ERROR and failed_node.attributes["nexus.node.status"] == "failed"
    assert failed_node.parent_span_id == workflow.span_id
    assert by_name(spans, "node double")[0].attributes["nexus.node.status"] == "completed"
    (server,) = [s for s in spans if s.kind == SERVER and s.trace_id == workflow.trace_id]
    assert server.status_code == ERROR and server.attributes["http.response.status_code"] == 500
    assert ("failed", "breaks", "WorkflowExecutionError") in recorder.seen
    assert delivered.json()["status"] == "failed" and delivered.json()["workflow"] == "breaks"
    with sqlite3.connect(tmp_path / "data" / "audit.sqlite") as db:
        assert db.execute("SELECT status FROM workflow_executions").fetchall() == [("failed",)]


def test_a_node_that_fails_without_raising_is_recorded_as_failed(tmp_path):
    """``LocalRuntime`` returns a failed last node in its results instead of raising: still a failed execution."""
    recorder = Recorder()
    plugin = NexusOtel(plugins=[recorder], environ=environ(tmp_path, "http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none"))
    app = KailashNexus(api_port=free_port(), enable_durability=False)
    app.add_plugin(plugin)
    try:
        with LocalRuntime(enable_monitoring=False) as runtime:
            results, _ = runtime.execute(two_node(fail=True).build(name="breaks"), parameters={"x": 1})
        assert results["add_one"]["failed"] is True  # what Kailash returns is unchanged
        assert ("failed", "breaks", "NodeFailed") in recorder.seen
    finally:
        plugin.on_shutdown()


def test_the_wrap_points_are_where_this_kailash_release_has_them():
    check_points()  # the installed kailash: every point present, with the parameters the wrappers pass on


def test_a_release_that_moved_a_wrap_point_fails_at_install_naming_it(monkeypatch, tmp_path):
    monkeypatch.delattr(AsyncLocalRuntime, "execute_workflow_async")
    app = KailashNexus(api_port=free_port(), enable_durability=False)
    plugin = NexusOtel(environ=environ(tmp_path, "http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none"))
    with pytest.raises(IntegrationError, match="kailash.runtime.async_local.AsyncLocalRuntime.execute_workflow_async"):
        app.add_plugin(plugin)
    assert not INSTRUMENTATION.active
    plugin.app.stop(1.0)


def test_a_release_without_the_registered_workflows_fails_at_install_naming_it(monkeypatch, tmp_path):
    app = KailashNexus(api_port=free_port(), enable_durability=False)
    monkeypatch.setattr(KailashNexus, "_workflows", property(lambda self: None))  # a release that dropped it
    plugin = NexusOtel(environ=environ(tmp_path, "http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none"))
    with pytest.raises(IntegrationError, match="nexus.Nexus._workflows"):
        app.add_plugin(plugin)
    assert not INSTRUMENTATION.active
    plugin.app.stop(1.0)


def test_shutdown_restores_kailash_as_it_was(tmp_path):
    original = AsyncLocalRuntime.__dict__[ASYNC_WORKFLOW.method]
    plugin = NexusOtel(environ=environ(tmp_path, "http://127.0.0.1:9", OTEL_TRACES_EXPORTER="none"))
    app = KailashNexus(api_port=free_port(), enable_durability=False)
    app.add_plugin(plugin)
    assert AsyncLocalRuntime.__dict__[ASYNC_WORKFLOW.method] is not original
    plugin.on_shutdown()
    assert AsyncLocalRuntime.__dict__[ASYNC_WORKFLOW.method] is original and not INSTRUMENTATION.active
    results, _ = asyncio.run(AsyncLocalRuntime().execute_workflow_async(two_node().build(name="plain"), {"x": 1}))
    assert results["add_one"]["result"]["value"] == 3


def test_bad_settings_are_refused_naming_them():
    from nexus_otel.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="NexusOtel\\(plugins\\)"):
        NexusOtel(plugins="WebhookPlugin")
    with pytest.raises(ConfigurationError, match="stop_timeout"):
        NexusOtel(stop_timeout=-1)


def test_the_example_runs_as_its_docstring_says(tmp_path):
    from .served import REPO, cli_env, nexus_otel

    port = free_port()
    env = cli_env(tmp_path / "data", PORT=str(port))
    process = subprocess.Popen([sys.executable, str(REPO / "examples" / "kailash_app.py")], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/workflows/double_then_add/execute",
                               json={"inputs": {"x": 20}}, timeout=10)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                time.sleep(0.2)
        assert r.json()["outputs"]["add_one"]["result"]["value"] == 41
        trace_id = r.headers["x-trace-id"]
        deadline = time.monotonic() + 15
        while True:  # the span reaches the local store within about a second
            shown = nexus_otel("traces", trace_id, env=env, cwd=tmp_path)
            if shown.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert shown.returncode == 0, shown.stderr
        for name in ("POST /workflows/double_then_add/execute", "workflow double_then_add", "node double",
                     "node add_one"):
            assert name in shown.stdout, shown.stdout
    finally:
        process.terminate()
        process.wait(30)
