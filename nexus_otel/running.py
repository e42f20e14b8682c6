"""What is running now: every in-flight execution, where it is, and the ones running too long.

A trace arrives when its workflow ends, so an execution that hangs is invisible
until it does. The :class:`RunningRegistry` (one per app, ``app.running_executions``)
holds an entry per execution from its start to its end, which ``app.running()``,
``GET /executions``, ``nexus-otel top`` and the ``nexus.workflow.oldest_active``
gauge read. The executor adds and removes the entries; hook runs and Kailash
nodes say where the execution is (its *place*) with :meth:`RunningRegistry.enter`
and :meth:`RunningRegistry.leave`. The hot path pays a dict insert and delete and a
``ContextVar`` set and reset per execution, and a ``ContextVar`` read per hook.

:class:`StuckWatcher` is the app's background thread that, once a second, logs
one warning per execution running past its ``stuck_after`` (and puts a
``nexus.workflow.stuck`` event on its workflow span when that is recording).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.metrics import CallbackOptions, Observation

from .telemetry import contract as c

log = logging.getLogger("nexus_otel.running")

STUCK_CHECK_INTERVAL = 1.0
"""Seconds between two looks for stuck executions."""


@dataclass(frozen=True, slots=True)
class RunningExecution:
    """One in-flight execution, as it was when the snapshot was taken.

    ``place`` is what it is in now: ``"hook <event> <plugin>"`` while a hook runs (``plugin`` is then
    that hook's plugin), ``"node <node id>"`` while a Kailash node runs, None in the workflow's own code.
    ``inputs`` is the redacted JSON of its inputs, only when the app records inputs.
    """

    workflow: str
    workflow_id: str
    channel: str
    session_id: str | None
    started_at: float
    elapsed: float
    trace_id: str | None
    place: str | None
    plugin: str | None
    inputs: str | None = None

    def as_dict(self, *, inputs: bool = False) -> dict[str, Any]:
        """The JSON form (``GET /executions``): ``started_at`` in ISO 8601 UTC, ``inputs`` only when asked."""
        out: dict[str, Any] = {
            "workflow": self.workflow,
            "workflow_id": self.workflow_id,
            "channel": self.channel,
            "session_id": self.session_id,
            "started_at": iso_utc(self.started_at),
            "elapsed_seconds": round(self.elapsed, 6),
            "trace_id": self.trace_id,
            "place": self.place,
            "plugin": self.plugin,
        }
        if inputs:
            out["inputs"] = self.inputs
        return out


def iso_utc(epoch: float) -> str:
    """``2026-12-07T08:36:04.123Z``: epoch seconds in ISO 8601 UTC, to the millisecond."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_NOWHERE: tuple[str | None, str | None] = (None, None)


class Entry:
    """One execution in the registry (mutable: its place changes as it runs). Only the registry's users
    that run the execution (executor, hook runner, Kailash nodes) touch it."""

    __slots__ = ("workflow", "workflow_id", "channel", "session_id", "started_at", "start", "trace_id",
                 "where", "inputs", "raw_inputs", "span", "stuck_after", "stuck", "token")

    def __init__(self, workflow: str, workflow_id: str, channel: str, session_id: str | None, started_at: float,
                 trace_id: str | None, inputs: str | None, raw_inputs: Mapping[str, Any] | None, span: Any,
                 stuck_after: float | None) -> None:
        self.workflow = workflow
        self.workflow_id = workflow_id
        self.channel = channel
        self.session_id = session_id
        self.started_at = started_at
        self.start = time.monotonic()
        self.trace_id = trace_id
        self.where: tuple[str | None, str | None] = _NOWHERE  # (place, plugin), replaced whole: read whole
        self.inputs = inputs
        self.raw_inputs = raw_inputs  # redacted only if a snapshot asks and ``inputs`` was not made
        self.span = span
        self.stuck_after = stuck_after
        self.stuck = False
        self.token: Any = None


class RunningRegistry:
    """The app's in-flight executions.

    ``stuck_after`` is the app's default (``NEXUS_OTEL_STUCK_AFTER``; None: no stuck warnings) for workflows
    without one of their own. ``redact`` makes the inputs' redacted JSON for a snapshot of an execution whose
    executor did not make it (None: the app does not record inputs).
    """

    def __init__(self, *, stuck_after: float | None = None,
                 redact: Callable[[Mapping[str, Any]], str | None] | None = None) -> None:
        self.stuck_after = stuck_after
        self._redact = redact
        self._entries: dict[str, Entry] = {}
        # The execution the current context runs (an instance attribute: two apps never share it).
        self._current: contextvars.ContextVar[Entry | None] = contextvars.ContextVar(
            "nexus_otel_running", default=None)

    # -- the executor ------------------------------------------------------------------
    def add(self, workflow: str, workflow_id: str, channel: str, session_id: str | None, started_at: float,
            trace_id: str | None = None, *, inputs: str | None = None, raw_inputs: Mapping[str, Any] | None = None,
            span: Any = None, stuck_after: float | None = None) -> Entry:
        """An execution begins (in the current context, which it becomes the execution of). ``stuck_after``
        is the workflow's own (None: the app's default; 0: never)."""
        entry = Entry(workflow, workflow_id, channel, session_id, started_at, trace_id, inputs, raw_inputs, span,
                      self.stuck_after if stuck_after is None else (stuck_after or None))
        self._entries[workflow_id] = entry
        entry.token = self._current.set(entry)
        return entry

    def remove(self, entry: Entry) -> None:
        """The execution ended (in the context it began in)."""
        self._entries.pop(entry.workflow_id, None)
        token, entry.token = entry.token, None
        if token is not None:
            try:
                self._current.reset(token)
            except ValueError:  # ended in another context than it began in: that context ends with it
                pass

    # -- where it is ------------------------------------------------------------------
    def enter(self, place: str, plugin: str | None = None) -> Any:
        """The current execution is now in ``place`` (a hook's plugin is ``plugin``); returns the token for
        :meth:`leave`. Outside any execution nothing is done (None)."""
        entry = self._current.get()
        if entry is None:
            return None
        token = (entry, entry.where)
        entry.where = (place, plugin)
        return token

    def leave(self, token: Any) -> None:
        """Back where the execution was before :meth:`enter` gave ``token``."""
        if token is not None:
            token[0].where = token[1]

    # -- readers -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry]:
        """The live entries (a copy of the list: executions keep starting and ending while it is read)."""
        return list(self._entries.values())

    def snapshot(self) -> list[RunningExecution]:
        """Every in-flight execution, longest running first."""
        now = time.monotonic()
        out = [self._snapshot(entry, now) for entry in self.entries()]
        out.sort(key=lambda r: r.elapsed, reverse=True)
        return out

    def _snapshot(self, entry: Entry, now: float) -> RunningExecution:
        inputs = entry.inputs
        if inputs is None and self._redact is not None and entry.raw_inputs is not None:
            inputs = self._redact(entry.raw_inputs)
        place, plugin = entry.where
        return RunningExecution(entry.workflow, entry.workflow_id, entry.channel, entry.session_id,
                                entry.started_at, max(0.0, now - entry.start), entry.trace_id, place, plugin,
                                inputs)

    def oldest(self) -> dict[str, float]:
        """Per workflow with an execution in flight, the elapsed seconds of its oldest (the gauge's values)."""
        now = time.monotonic()
        out: dict[str, float] = {}
        for entry in self.entries():
            elapsed = now - entry.start
            if elapsed > out.get(entry.workflow, -1.0):
                out[entry.workflow] = elapsed
        return out

    def observe(self, options: CallbackOptions | None = None) -> list[Observation]:
        """The ``nexus.workflow.oldest_active`` gauge's readings: one per workflow with an execution in flight."""
        return [Observation(elapsed, {c.M_WORKFLOW: workflow}) for workflow, elapsed in self.oldest().items()]

    def newly_stuck(self) -> list[tuple[Entry, RunningExecution]]:
        """The executions past their ``stuck_after`` not reported before (each is reported once)."""
        now = time.monotonic()
        out = []
        for entry in self.entries():
            limit = entry.stuck_after
            if limit is not None and not entry.stuck and now - entry.start >= limit:
                entry.stuck = True
                out.append((entry, self._snapshot(entry, now)))
        return out


class StuckWatcher:
    """The app's background look for stuck executions: one warning (and span event) per execution past its
    ``stuck_after``. :meth:`stop` returns at once; the thread ends within one interval."""

    def __init__(self, registry: RunningRegistry, name: str, interval: float = STUCK_CHECK_INTERVAL) -> None:
        self._registry = registry
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"nexus-otel-stuck-{name}", daemon=True)

    def start(self) -> StuckWatcher:
        self._thread.start()
        return self

    def stop(self, timeout: float = 0.1) -> None:
        """Ask the thread to end and wait at most ``timeout`` seconds for it (it is a daemon)."""
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.check()
            except Exception:  # never let the watcher die: it is the only one looking
                log.exception("looking for stuck executions failed")

    def check(self) -> int:
        """Report the newly stuck executions now; returns how many."""
        stuck = self._registry.newly_stuck()
        for entry, now in stuck:
            span = entry.span
            # Logged in its workflow span's context: an exported log record carries the execution's trace id.
            token = context_api.attach(trace_api.set_span_in_context(span)) if span is not None else None
            try:
                log.warning(
                    "workflow %r execution %s is stuck: running for %.1f s (stuck_after %g s), in %s, trace_id %s",
                    now.workflow, now.workflow_id, now.elapsed, entry.stuck_after, now.place or "the workflow",
                    now.trace_id or "none",
                )
            finally:
                if token is not None:
                    context_api.detach(token)
            if span is not None and span.is_recording():
                attributes: dict[str, Any] = {c.STUCK_ELAPSED: now.elapsed, c.STUCK_AFTER: entry.stuck_after}
                if now.place is not None:
                    attributes[c.STUCK_PLACE] = now.place
                span.add_event(c.WORKFLOW_STUCK_EVENT, attributes)
        return len(stuck)
