"""What is running now: ``app.running()``, the ``nexus.workflow.oldest_active`` gauge and stuck executions.

Executions block on a ``threading.Event`` (in their own code, in a hook, in a Kailash node) while the
test looks at them, then are released. Real SDK providers (``CapturedTelemetry``), a real Prometheus
exposition, and for the node a real Kailash runtime.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.errors import ConfigurationError
from nexus_otel.running import RunningExecution, iso_utc
from nexus_otel.telemetry import contract as c
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.telemetry.worker_metrics import decode, encode, merge
from nexus_otel.testing import CapturedTelemetry

from .kailash_apps import import_kailash

QUIET = {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"}
GAUGE = "nexus_workflow_oldest_active_seconds"


class Gate(NexusPlugin):
    """A plugin whose workflow_started hooks (one sync, one async) hold an execution asked to wait there."""

    name = "gate"
    version = "1.0.0"

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def setup(self, app) -> None:
        app.on_workflow_started(self._sync_hook)

    def _sync_hook(self, event) -> None:
        if event.inputs.get("hold") == "sync-hook":
            self.release.wait(10)


class AsyncGate(Gate):
    name = "async-gate"

    def setup(self, app) -> None:
        app.on_workflow_started(self._async_hook)

    async def _async_hook(self, event) -> None:
        if event.inputs.get("hold") == "async-hook":
            self.release.wait(10)  # blocks this execution's own loop, as a stuck hook would


def wait_until(check: Callable[[], object], timeout: float = 5.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


@contextmanager
def running_in_threads(release: threading.Event, *calls: Callable[[], object]) -> Iterator[None]:
    """``calls`` run each in a thread; leaving the block releases them (even when an assertion failed)."""
    threads = [threading.Thread(target=call, daemon=True) for call in calls]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        release.set()
        for thread in threads:
            thread.join(10)


def blocked_app(capture: CapturedTelemetry, release: threading.Event) -> Nexus:
    app = capture.app("running")
    app.add_plugin(Gate(release))
    app.add_plugin(AsyncGate(release))

    @app.workflow("blocks")
    def blocks(inputs):
        if inputs.get("hold") == "workflow":
            release.wait(10)
        return {"ok": True}

    @app.workflow("ablocks")
    async def ablocks(inputs):
        if inputs.get("hold") == "workflow":
            await asyncio.to_thread(release.wait, 10)
        return {"ok": True}

    return app


def test_running_lists_each_blocked_execution_with_its_workflow_place_and_trace_id_then_none():
    """Five blocked executions (three in their workflow's code, two in a hook, sync and async) are listed with
    workflow, channel, session, place, plugin and the trace id of their workflow span; once they end, none."""
    capture = CapturedTelemetry()
    release = threading.Event()
    app = blocked_app(capture, release)
    calls = [
        lambda: app.execute_workflow("blocks", {"hold": "workflow", "password": "hunter2"}, channel="api",
                                     session_id="s-1"),
        lambda: app.execute_workflow("blocks", {"hold": "workflow"}),
        lambda: asyncio.run(app.aexecute_workflow("ablocks", {"hold": "workflow"}, channel="http")),
        lambda: app.execute_workflow("blocks", {"hold": "sync-hook"}),
        lambda: asyncio.run(app.aexecute_workflow("ablocks", {"hold": "async-hook"})),
    ]
    try:
        with running_in_threads(release, *calls):
            expected = sorted([
                ("ablocks", None, None),
                ("ablocks", "hook workflow_started async-gate", "async-gate"),
                ("blocks", None, None),
                ("blocks", None, None),
                ("blocks", "hook workflow_started gate", "gate"),
            ], key=str)

            def places() -> list[tuple[str, str | None, str | None]]:
                return sorted(((r.workflow, r.place, r.plugin) for r in app.running()), key=str)

            assert wait_until(lambda: places() == expected), places()
            running = app.running()
            assert len(running) == 5
            assert [r.elapsed for r in running] == sorted((r.elapsed for r in running), reverse=True)
            (api,) = [r for r in running if r.channel == "api"]
            assert (api.session_id, api.workflow) == ("s-1", "blocks")
            assert "hunter2" not in (api.inputs or "") and '"hold": "workflow"' in (api.inputs or "")
            assert all(len(r.trace_id or "") == 32 and len(r.workflow_id) == 32 for r in running)
            trace_ids = {r.trace_id for r in running}
            release.set()
    finally:
        release.set()
    assert app.running() == [] and len(app.running_executions) == 0
    spans = capture.spans_named("workflow blocks") + capture.spans_named("workflow ablocks")
    assert {format(s.context.trace_id, "032x") for s in spans} == trace_ids
    app.stop()


def test_as_dict_is_the_json_form_with_inputs_only_when_asked():
    """``as_dict`` gives ISO 8601 UTC start, elapsed seconds and the place; inputs only with ``inputs=True``."""
    now = RunningExecution("w", "a" * 32, "http", None, 0.0, 1.5, "b" * 32, "node n1", None, '{"x": 1}')
    out = now.as_dict()
    assert out == {"workflow": "w", "workflow_id": "a" * 32, "channel": "http", "session_id": None,
                   "started_at": "1970-01-01T00:00:00.000Z", "elapsed_seconds": 1.5, "trace_id": "b" * 32,
                   "place": "node n1", "plugin": None}
    assert now.as_dict(inputs=True)["inputs"] == '{"x": 1}'
    assert iso_utc(1.2345) == "1970-01-01T00:00:01.234Z"


def test_with_telemetry_disabled_executions_are_still_listed_without_a_trace_id():
    """``OTEL_SDK_DISABLED=true``: the execution is listed (its place too), with no trace id."""
    release = threading.Event()
    app = Nexus("off", environ={**QUIET, "OTEL_SDK_DISABLED": "true"})
    app.add_plugin(Gate(release))
    app.register("blocks", lambda inputs: {"ok": True})
    try:
        with running_in_threads(release, lambda: app.execute_workflow("blocks", {"hold": "sync-hook"})):
            assert wait_until(lambda: len(app.running()) == 1)
            (now,) = app.running()
            assert (now.workflow, now.trace_id, now.place, now.inputs) == (
                "blocks", None, "hook workflow_started gate", '{"hold": "sync-hook"}')
            release.set()
    finally:
        release.set()
    assert app.running() == []
    app.stop()


def gauge_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(GAUGE + "{")]


def test_the_oldest_active_gauge_reads_per_workflow_on_metrics_and_merges_across_workers_by_maximum():
    """``nexus_workflow_oldest_active_seconds{workflow}`` is on /metrics while an execution is in flight (the
    oldest's elapsed seconds), gone after; two workers' readings merge to the larger."""
    release = threading.Event()
    first, second = CapturedTelemetry(), CapturedTelemetry()
    apps = [blocked_app(first, release), blocked_app(second, release)]
    try:
        with running_in_threads(release, lambda: apps[0].execute_workflow("blocks", {"hold": "workflow"})):
            assert wait_until(lambda: len(apps[0].running()) == 1)
            time.sleep(0.2)
            with running_in_threads(release, lambda: apps[0].execute_workflow("blocks", {"hold": "workflow"}),
                                    lambda: apps[1].execute_workflow("blocks", {"hold": "workflow"})):
                assert wait_until(lambda: len(apps[0].running()) == 2 and len(apps[1].running()) == 1)
                (line,) = gauge_lines(first.prometheus_text())
                assert 'workflow="blocks"' in line
                oldest, youngest = (r.elapsed for r in apps[0].running())  # read after the scrape
                assert youngest + 0.1 < float(line.rsplit(" ", 1)[1]) <= oldest  # the oldest's, not the other's
                assert gauge_lines(first.prometheus_text()) and not [
                    line for line in gauge_lines(first.prometheus_text()) if 'workflow="ablocks"' in line]
                readings = [decode(encode(capture.prometheus_registry.collect())) for capture in (first, second)]
                values = [next(s[2] for f in worker if f["n"] == GAUGE for s in f["s"]) for worker in readings]
                assert values[0] > values[1]
                (family,) = [f for f in merge(readings) if f.name == GAUGE]
                assert [s.value for s in family.samples] == [max(values)]  # the larger, not the sum
                release.set()
    finally:
        release.set()
    assert gauge_lines(first.prometheus_text()) == [] and gauge_lines(second.prometheus_text()) == []
    for app in apps:
        app.stop()


def test_an_execution_past_stuck_after_warns_once_with_its_trace_id_and_gets_a_span_event(caplog):
    """Past its workflow's ``stuck_after`` an execution logs one warning naming workflow, id, trace id, elapsed
    and place, once however long it stays, and its recording workflow span gets a ``nexus.workflow.stuck``
    event (and the exported warning its trace id); a workflow with ``stuck_after=0`` and one under the app's
    default that ends in time never warn."""
    capture = CapturedTelemetry(capture_logs=True)
    release = threading.Event()
    app = Nexus("stuck", telemetry=capture.telemetry("stuck", config=TelemetryConfig(stuck_after=30)))
    app.add_plugin(Gate(release))
    app.register("hangs", lambda inputs: {"ok": True}, stuck_after=0.2)

    @app.workflow("patient", stuck_after=0)
    def patient(inputs):
        release.wait(10)

    app.register("quick", lambda inputs: {"ok": True})
    app.start()
    try:
        with caplog.at_level(logging.WARNING, logger="nexus_otel.running"), running_in_threads(
                release, lambda: app.execute_workflow("hangs", {"hold": "sync-hook"}),
                lambda: app.execute_workflow("patient", {})):
            app.execute_workflow("quick", {})
            assert wait_until(lambda: [r for r in caplog.records if "stuck" in r.getMessage()], timeout=4)
            (hangs,) = [r for r in app.running() if r.workflow == "hangs"]
            time.sleep(1.3)  # at least one more look: still one warning
            warnings = [r.getMessage() for r in caplog.records if "stuck" in r.getMessage()]
            assert len(warnings) == 1, warnings
            (warning,) = warnings
            for part in ("'hangs'", hangs.workflow_id, hangs.trace_id, "hook workflow_started gate", "0.2 s"):
                assert part in warning, (part, warning)
            release.set()
    finally:
        release.set()
    app.stop()
    (span,) = capture.spans_named("workflow hangs")
    (event,) = [e for e in span.events if e.name == c.WORKFLOW_STUCK_EVENT]
    assert event.attributes[c.STUCK_AFTER] == 0.2 and event.attributes[c.STUCK_ELAPSED] >= 0.2
    assert event.attributes[c.STUCK_PLACE] == "hook workflow_started gate"
    (patient_span,) = capture.spans_named("workflow patient")
    assert not patient_span.events
    (record,) = [r.log_record for r in capture.logs if "is stuck" in str(r.log_record.body)]
    assert format(record.trace_id, "032x") == hangs.trace_id


def test_stuck_after_is_read_from_the_variable_and_the_app_and_bad_values_are_refused():
    """``NEXUS_OTEL_STUCK_AFTER`` and ``Nexus(stuck_after=)`` set the default (the app's wins; 0 or unset:
    never); a value that is not a number of seconds, zero or more, is a ConfigurationError naming it."""
    assert TelemetryConfig.from_env({}).stuck_after is None
    assert TelemetryConfig.from_env({"NEXUS_OTEL_STUCK_AFTER": "90"}).stuck_after == 90.0
    assert TelemetryConfig.from_env({"NEXUS_OTEL_STUCK_AFTER": "0"}).stuck_after is None
    app = Nexus("s", environ={**QUIET, "NEXUS_OTEL_STUCK_AFTER": "90"}, stuck_after=2.5)
    assert app.telemetry.config.stuck_after == 2.5 and app.running_executions.stuck_after == 2.5
    for raw in ("abc", "-1", "nan", "inf", "1e999", "10s"):
        with pytest.raises(ConfigurationError, match="NEXUS_OTEL_STUCK_AFTER"):
            TelemetryConfig.from_env({"NEXUS_OTEL_STUCK_AFTER": raw})
    for value in (-1, "30", True, float("nan"), float("inf")):
        with pytest.raises(ConfigurationError, match="stuck_after"):
            Nexus("s", environ=QUIET, stuck_after=value)
        with pytest.raises(ConfigurationError, match="stuck_after .workflow 'w'"):
            app.register("w", lambda inputs: None, stuck_after=value)
    with pytest.raises(ConfigurationError, match="stuck_after"):
        app.workflow("w", stuck_after=-5)(lambda inputs: None)
    app.stop()


def test_an_execution_blocked_inside_a_kailash_node_is_in_that_node():
    """A Kailash workflow whose node blocks is listed in ``node <node id>`` by the NexusOtel plugin's app."""
    pytest.importorskip("kailash")
    kailash = import_kailash()
    from nexus_otel.kailash import NexusOtel

    from .ports import free_port

    release = threading.Event()

    def waits(x: int) -> dict:
        release.wait(10)
        return {"value": x}

    plugin = NexusOtel(environ=QUIET)
    kailash_app = kailash.Nexus(api_port=free_port(), enable_durability=False)
    kailash_app.add_plugin(plugin)
    builder = kailash.WorkflowBuilder()
    with pytest.warns(UserWarning):  # Kailash prefers node type names; a function node is an instance
        builder.add_node(kailash.PythonCodeNode.from_function(waits, name="waits"), "waiter")
    workflow = builder.build(name="slow")

    def run() -> None:
        with kailash.LocalRuntime(enable_monitoring=False) as runtime:
            runtime.execute(workflow, parameters={"waiter": {"x": 1}})

    try:
        with running_in_threads(release, run):
            assert wait_until(lambda: [r.place for r in plugin.app.running()] == ["node waiter"])
            (now,) = plugin.app.running()
            assert now.workflow == "slow" and len(now.trace_id or "") == 32 and now.plugin is None
            release.set()
    finally:
        release.set()
        plugin.on_shutdown()
    assert plugin.app.running() == []
