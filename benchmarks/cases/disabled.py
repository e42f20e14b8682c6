"""Case (b), telemetry disabled: the host under ``OTEL_SDK_DISABLED=true`` over the same host with the telemetry code
removed (``BareHost``), on a workflow that busy-waits 100 microseconds of the measuring clock. Target <= 1.05."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fixtures import CHANNEL, INPUTS, WORKFLOW, BenchPlugin, hook_completed_1, hook_completed_2, hook_started
from harness import Case, Side

from nexus_otel import Nexus, WorkflowEvent
from nexus_otel.telemetry import contract as c

perf_counter = time.perf_counter
log = logging.getLogger("benchmarks.overhead")


def busy_workflow(clock: Callable[[], float]) -> Callable[[Mapping[str, Any]], Any]:
    """A workflow that busy-waits 100 us of ``clock``, the benchmark's measuring clock: on a loaded machine a
    preempted workflow still costs 100 us of it."""

    def busy_100us(inputs: Mapping[str, Any]) -> Any:
        end = clock() + 100e-6
        while clock() < end:
            pass
        return inputs

    return busy_100us


class BareHost:
    """A minimal host: workflow dict, input check, WorkflowEvent, hooks with try/except, timing."""

    def __init__(self) -> None:
        self._workflows: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
        self._started: list[Callable[[Any], Any]] = []
        self._completed: list[Callable[[Any], Any]] = []
        self._failed: list[Callable[[Any], Any]] = []

    def register(self, name: str, fn: Callable[[Mapping[str, Any]], Any]) -> None:
        self._workflows[name] = fn

    @staticmethod
    def _run_hooks(hooks: list[Callable[[Any], Any]], event: WorkflowEvent) -> None:
        for hook in hooks:
            try:
                hook(event)
            except Exception as exc:  # a failing hook never fails the workflow
                log.error("hook failed: %s", exc)

    def execute_workflow(self, name: str, inputs: Mapping[str, Any] | None = None, *,
                         session_id: str | None = None, channel: str = CHANNEL) -> Any:
        fn = self._workflows[name]
        if inputs is None:
            inputs = {}
        elif not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a dict, got {type(inputs).__name__}")
        event = WorkflowEvent(
            workflow_name=name, workflow_id=uuid.uuid4().hex, session_id=session_id,
            channel=channel, inputs=inputs, timestamp=time.time(),
        )
        self._run_hooks(self._started, event)
        start = perf_counter()
        try:
            result = fn(inputs)
        except BaseException as exc:
            event.duration = perf_counter() - start
            event.error = exc
            self._run_hooks(self._failed, event)
            raise
        event.duration = perf_counter() - start
        event.result = result
        self._run_hooks(self._completed, event)
        return result


def build_disabled_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    busy_100us = busy_workflow(clock)
    bare = BareHost()
    bare.register(WORKFLOW, busy_100us)
    for fn in (hook_started,):
        bare._started.append(fn)
    for fn in (hook_completed_1, hook_completed_2):
        bare._completed.append(fn)
    bare_execute = bare.execute_workflow
    baseline = Side("no-telemetry host", lambda: bare_execute(WORKFLOW, INPUTS))

    app = Nexus("bench", environ={"OTEL_SDK_DISABLED": "true"})
    app.add_plugin(BenchPlugin())
    app.register(WORKFLOW, busy_100us)
    app.start()
    execute = app.execute_workflow
    candidate = Side("Nexus disabled", lambda: execute(WORKFLOW, INPUTS), app.stop, {"app": app})
    return baseline, candidate


def check_disabled_case(baseline: Side, candidate: Side) -> list[str]:
    app: Nexus = candidate.state["app"]
    problems = []
    if app.telemetry.enabled:
        problems.append("OTEL_SDK_DISABLED=true did not disable the host's telemetry")
    if len(app.hooks.get(c.WORKFLOW_STARTED)) != 1 or len(app.hooks.get(c.WORKFLOW_COMPLETED)) != 2:
        problems.append("the disabled host does not have the three hooks")
    return problems


CASES = [
    Case(
        key="b", title="OTEL_SDK_DISABLED=true: host vs host without telemetry code (100 us workflow)",
        baseline_label="no-telemetry host", candidate_label="Nexus disabled",
        build=build_disabled_case, target=1.05, n=400, check=check_disabled_case,
    ),
]
