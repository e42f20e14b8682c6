"""The :class:`Nexus` app: workflows, plugins, hooks, middleware and lifecycle."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

from opentelemetry import _logs as logs_api
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind

from .caller import Caller
from .deadline import call_within
from .discovery import Discovered
from .errors import AppStateError, ConfigurationError
from .execution import Executor
from .execution_middleware import Middleware, as_middleware
from .hooks import HookRegistry, HookRunner
from .plugin_base import Plugin
from .plugin_manager import PluginManager
from .processors.tail_sampling import TailSampling
from .records import RecordPipeline
from .redaction import Redactor
from .running import RunningExecution, RunningRegistry, StuckWatcher
from .telemetry import contract as c
from .telemetry.config import outbox_url
from .telemetry.telemetry import Telemetry
from .telemetry.workflow_sampler import warn_unregistered
from .workflows import Workflow, WorkflowRegistry, check_inputs

log = logging.getLogger("nexus_otel")
F = TypeVar("F", bound=Callable[..., Any])

_CREATED, _STARTED, _STOPPED = "created", "started", "stopped"
DEFAULT_STOP_TIMEOUT = 10.0
# Of stop()'s time, what record sinks may spend delivering before telemetry gets the rest:
# undelivered records wait on disk for the next start, spans in memory do not.
_RECORDS_SHARE = 0.5


class Nexus:
    """A workflow app whose every execution and plugin hook is an OpenTelemetry span.

    ``name`` becomes ``service.name`` unless ``OTEL_SERVICE_NAME`` or
    ``OTEL_RESOURCE_ATTRIBUTES`` set one. Pass ``tracer_provider`` /
    ``meter_provider`` / ``logger_provider`` to use your own; otherwise an SDK
    provider already installed globally is used, or new ones are built from ``OTEL_*``.
    Bad ``OTEL_*`` values raise :class:`~nexus_otel.errors.ConfigurationError` here.

    Every execution gives one record to each of ``app.records``' processors
    (audit, webhooks, request log, ``MetricsPlugin``), whatever the trace
    sampling; traces are sampled, in-process with ``tail_sampling=TailSampling(...)``.

    ``baggage_keys``, ``baggage_metric_keys``, ``untraced_hooks``, ``workflow_sampling``,
    ``delivery_spans``, ``stuck_after`` and ``outbox`` are the app's own values of ``NEXUS_OTEL_BAGGAGE_KEYS``,
    ``NEXUS_OTEL_BAGGAGE_METRIC_KEYS``, ``NEXUS_OTEL_UNTRACED_HOOKS``, ``NEXUS_OTEL_WORKFLOW_SAMPLING``,
    ``NEXUS_OTEL_DELIVERY_SPANS``, ``NEXUS_OTEL_STUCK_AFTER`` and ``NEXUS_OTEL_OUTBOX_URL``; given, they win over
    the variable (see the README's configuration). ``outbox="postgresql://..."`` queues every durable sink's
    records in that database, shared by every replica (``docs/records.md``, "The shared outbox").
    """

    def __init__(
        self,
        name: str = "nexus",
        *,
        tracer_provider: trace_api.TracerProvider | None = None,
        meter_provider: metrics_api.MeterProvider | None = None,
        logger_provider: logs_api.LoggerProvider | None = None,
        telemetry: Telemetry | None = None,
        record_inputs: bool = True,
        redactor: Redactor | None = None,
        environ: Mapping[str, str] | None = None,
        tail_sampling: TailSampling | None = None,
        baggage_keys: list[str] | None = None,
        baggage_metric_keys: list[str] | None = None,
        untraced_hooks: list[str] | None = None,
        workflow_sampling: Mapping[str, float] | None = None,
        delivery_spans: bool | None = None,
        stuck_after: float | None = None,
        outbox: str | None = None,
    ) -> None:
        self.name = name
        settings = {"baggage_keys": baggage_keys, "baggage_metric_keys": baggage_metric_keys,
                    "untraced_hooks": untraced_hooks, "workflow_sampling": workflow_sampling,
                    "delivery_spans": delivery_spans, "stuck_after": stuck_after}
        if telemetry is not None:
            for setting, value in (("tail_sampling", tail_sampling), *settings.items()):
                if value is not None:
                    raise ConfigurationError(setting, value,
                                             "None when telemetry= is given (pass it to that Telemetry instead)")
        self.telemetry = telemetry or Telemetry(
            name, tracer_provider=tracer_provider, meter_provider=meter_provider, logger_provider=logger_provider,
            environ=environ,
            redactor=redactor, tail_sampling=tail_sampling, settings=settings,
        )
        self.redactor = redactor or self.telemetry.redactor
        self.hooks = HookRegistry(self.telemetry.config.untraced_hooks)
        self.workflows = WorkflowRegistry()
        self.plugin_host = _NexusPluginHost(self)
        """What the app's :class:`~nexus_otel.plugin_manager.PluginManager` (and ``PluginManager(app)``) uses of it."""
        self.plugins = PluginManager(self, self.plugin_host)
        self.records = RecordPipeline(self.telemetry.meter if self.telemetry.enabled else None,
                                      shared_outbox=outbox_url("outbox", outbox) or self.telemetry.config.outbox_url)
        """The record processors: each gets every execution's record, never sampled."""
        self.running_executions = RunningRegistry(
            stuck_after=self.telemetry.config.stuck_after, redact=self.redactor.to_attribute if record_inputs else None)
        """The in-flight executions (:meth:`running` lists them)."""
        spec = c.WORKFLOW_OLDEST_ACTIVE
        self.telemetry.meter.create_observable_gauge(
            spec.name, callbacks=[self.running_executions.observe], unit=spec.unit, description=spec.description)
        self._hook_runner = HookRunner(self.telemetry, running=self.running_executions)
        self._executor = Executor(
            self.telemetry, self.hooks, self._hook_runner, redactor=self.redactor, record_inputs=record_inputs,
            records=self.records, running=self.running_executions,
        )
        self._middleware: list[tuple[str | None, Middleware]] = []
        self._middleware_owner: str | None = None
        self._state = _CREATED
        self._state_lock = threading.RLock()
        self._background = False
        """Whether the background work (telemetry's pushes, the record sinks' workers) was started."""
        self._stuck_watcher: StuckWatcher | None = None

    # -- workflows -------------------------------------------------------------
    @overload
    def workflow(self, name: F) -> F: ...
    @overload
    def workflow(self, name: str | None = None, *, replace: bool = False,
                 stuck_after: float | None = None) -> Callable[[F], F]: ...

    def workflow(self, name: Any = None, *, replace: bool = False, stuck_after: float | None = None) -> Any:
        """Decorator registering a workflow: ``@app.workflow("greet")`` or bare ``@app.workflow``
        (``stuck_after``: see :meth:`register`)."""
        if callable(name) and not isinstance(name, str):
            fn = name
            self.register(fn.__name__, fn)
            return fn

        def decorator(fn: F) -> F:
            self.register(name or getattr(fn, "__name__", ""), fn, replace=replace, stuck_after=stuck_after)
            return fn

        return decorator

    def register(self, name: str, fn: Callable[[dict[str, Any]], Any], *, replace: bool = False,
                 stuck_after: float | None = None) -> Workflow:
        """Register ``fn`` (sync or async, taking the inputs dict) under ``name``.

        An execution still running ``stuck_after`` seconds after it began logs one warning with its trace id
        (and a ``nexus.workflow.stuck`` event on its span); None takes the app's ``stuck_after``
        (``NEXUS_OTEL_STUCK_AFTER``), 0 never warns."""
        return self.workflows.register(name, fn, replace=replace, stuck_after=stuck_after)

    def execute_workflow(
        self,
        workflow_name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        channel: str = "python",
        span_kind: SpanKind = SpanKind.INTERNAL,
        caller: Caller | None = None,
    ) -> Any:
        """Run a workflow and return its result; its own exceptions come back unchanged.

        ``caller`` carries credentials for auth middleware (``Caller(bearer_token=...)``).
        """
        workflow = self.workflows.get(workflow_name)
        inputs = check_inputs(workflow_name, inputs)
        self._check_executable("execute_workflow")
        return self._executor.execute(workflow, inputs, session_id, channel, span_kind, caller)

    async def aexecute_workflow(
        self,
        workflow_name: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        session_id: str | None = None,
        channel: str = "python",
        span_kind: SpanKind = SpanKind.INTERNAL,
        caller: Caller | None = None,
    ) -> Any:
        """The async twin of :meth:`execute_workflow`.

        If a plugin replaced ``execute_workflow`` on the app, the replacement runs
        (on a worker thread): what it adds applies to every channel. Otherwise an
        async workflow runs on the event loop. A sync workflow runs, with its
        hooks and middleware, on a worker thread, so neither it nor a blocking
        hook (say, one that posts to a webhook) stalls the loop.
        """
        replaced = self.__dict__.get("execute_workflow")
        if replaced is not None:
            # A plugin replaced execute_workflow on this app (Kailash Nexus's caching example does):
            # the replacement wraps every channel, so HTTP calls go through it too, on a worker thread.
            return await asyncio.to_thread(replaced, workflow_name, inputs, session_id=session_id, channel=channel,
                                           span_kind=span_kind, caller=caller)
        workflow = self.workflows.get(workflow_name)
        inputs = check_inputs(workflow_name, inputs)
        self._check_executable("aexecute_workflow")
        if not workflow.is_async:
            return await asyncio.to_thread(
                self._executor.execute, workflow, inputs, session_id, channel, span_kind, caller,
            )
        return await self._executor.aexecute(workflow, inputs, session_id, channel, span_kind, caller)

    def running(self) -> list[RunningExecution]:
        """Every execution in flight now, longest running first: workflow, channel, session, start, elapsed,
        trace id, and the hook or Kailash node it is in (``GET /executions`` serves the same)."""
        return self.running_executions.snapshot()

    # -- hooks -------------------------------------------------------------------
    def on_workflow_started(self, fn: F) -> F:
        """Decorator: ``fn(event)`` runs before each workflow, in its own span."""
        self._add_hook(c.WORKFLOW_STARTED, fn)
        return fn

    def on_workflow_completed(self, fn: F) -> F:
        """Decorator: ``fn(event)`` runs after each successful workflow."""
        self._add_hook(c.WORKFLOW_COMPLETED, fn)
        return fn

    def on_workflow_failed(self, fn: F) -> F:
        """Decorator: ``fn(event)`` runs after each failed workflow (``event.error`` is set)."""
        self._add_hook(c.WORKFLOW_FAILED, fn)
        return fn

    def on_startup(self, fn: F) -> F:
        """Decorator: ``fn()`` runs at :meth:`start` (at once, for plugins added later)."""
        self._add_hook(c.STARTUP, fn)
        return fn

    def on_shutdown(self, fn: F) -> F:
        """Decorator: ``fn()`` runs at :meth:`stop`, before plugins are torn down."""
        self._add_hook(c.SHUTDOWN, fn)
        return fn

    def _add_hook(self, event: str, fn: Any) -> None:
        hook = self.hooks.add(event, fn)
        # The error series exists from the start (at 0), so rate() and increase() see the first error.
        self.telemetry.instruments.plugin_errors.bind(hook.metric_attributes).add(0)

    # -- plugins and middleware -------------------------------------------------------
    def add_plugin(self, plugin: Plugin) -> Plugin:
        """Register ``plugin`` and run its ``setup(app)`` in a span."""
        self._check_running("add_plugin")
        return self.plugins.register(plugin)

    def load_plugins(self, folder: str | Path | None = None, *, entry_points: bool = False,
                     strict: bool = False) -> Discovered:
        """Register the plugins of a folder and/or the ``nexus_otel.plugins`` entry points."""
        self._check_running("load_plugins")
        result = Discovered()
        if folder is not None:
            found = self.plugins.load_folder(folder, strict=strict)
            result.errors += found.errors
            result.registered += found.registered
        if entry_points:
            found = self.plugins.load_entry_points(strict=strict)
            result.errors += found.errors
            result.registered += found.registered
        return result

    def use(self, middleware: Middleware | Callable[..., Any]) -> Middleware:
        """Add execution middleware; the first added is the outermost."""
        mw = as_middleware(middleware)
        with self._state_lock:
            self._middleware.append((self._middleware_owner, mw))
            self._executor.set_middleware([m for _, m in self._middleware])
        return mw

    @property
    def middleware(self) -> list[Middleware]:
        return [m for _, m in self._middleware]

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> Nexus:
        """Start the background work (metric pushes, the record sinks' workers), then run the startup hooks
        (in a ``nexus start`` span). An app that executes without being started starts the background work
        at its first execution, and runs no startup hooks."""
        with self._state_lock:
            if self._state == _STARTED:
                raise AppStateError(f"app {self.name!r} is already started")
            if self._state == _STOPPED:
                raise AppStateError(f"app {self.name!r} was stopped; create a new app to start again")
            self._start_background()
            self._stuck_watcher = StuckWatcher(self.running_executions, self.name).start()
            warn_unregistered(self.telemetry.config.workflow_sampling, self.workflows.names())
            with self.telemetry.tracer.start_as_current_span(c.APP_START_SPAN):
                self._hook_runner.run(self.hooks.get(c.STARTUP), ())
            self._state = _STARTED
        log.debug("app %r started", self.name)
        return self

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Run shutdown hooks, tear plugins down (last first), then flush telemetry. Idempotent.

        Returns within about ``timeout`` seconds whatever a receiver, database
        or OTLP endpoint does: record sinks deliver what they can in the first
        half, what is left waits in their outbox for the next start (one log
        line each says how much), and telemetry is flushed in the rest.
        """
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ConfigurationError("Nexus.stop(timeout)", timeout, "a number of seconds, zero or more")
        started = time.monotonic()
        deadline = started + timeout
        with self._state_lock:
            if self._state == _STOPPED:
                return
            was_started = self._state == _STARTED
            self._state = _STOPPED
            if self._stuck_watcher is not None:  # asked to end, not waited for: it may be between two looks
                self._stuck_watcher.stop(0.0)
            self.records.deadline = started + timeout * _RECORDS_SHARE
            with self.telemetry.tracer.start_as_current_span(c.APP_STOP_SPAN):
                if was_started:
                    self._hook_runner.run(self.hooks.get(c.SHUTDOWN), ())
                self.plugins.teardown_all()
            self.records.shutdown(max(0.0, self.records.deadline - time.monotonic()))
        call_within(self.telemetry.shutdown, max(0.0, deadline - time.monotonic()), "telemetry shutdown")
        log.debug("app %r stopped", self.name)

    @property
    def started(self) -> bool:
        return self._state == _STARTED

    def __enter__(self) -> Nexus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Nexus:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Nexus {self.name!r} {self._state} workflows={self.workflows.names()} plugins={self.plugins.list()}>"

    def _check_running(self, what: str) -> None:
        if self._state == _STOPPED:
            raise AppStateError(f"app {self.name!r} is stopped; cannot {what}")

    def _check_executable(self, what: str) -> None:
        """Not stopped, and the background work runs (started here at the first execution of an app
        never started)."""
        if not self._background:
            self._start_background()
        self._check_running(what)

    def _start_background(self) -> None:
        with self._state_lock:
            if self._background or self._state == _STOPPED:
                return
            self.telemetry.start()
            self.records.start()
            self._background = True


class _NexusPluginHost:
    """A :class:`Nexus` as its plugin manager sees it: a :class:`~nexus_otel.plugin_manager.PluginHost`."""

    def __init__(self, app: Nexus) -> None:
        self._app = app

    @property
    def hooks(self) -> HookRegistry:
        return self._app.hooks

    def observed(self, span_name: str, attributes: dict[str, str], plugin: str, event: str,
                 metric_attributes: dict[str, str], *, reraise: bool = False,
                 traced: bool = True) -> AbstractContextManager[Any]:
        return self._app._hook_runner.observed(span_name, attributes, plugin, event, metric_attributes,
                                               reraise=reraise, traced=traced)

    def plugin_added(self, plugin: str) -> None:
        """A plugin added after start gets its startup hooks at once."""
        app = self._app
        if app._state == _STARTED:
            app._hook_runner.run(app.hooks.of_plugin(plugin, c.STARTUP), ())

    @contextmanager
    def middleware_owned_by(self, plugin: str) -> Iterator[None]:
        app = self._app
        with app._state_lock:
            previous, app._middleware_owner = app._middleware_owner, plugin
            try:
                yield
            finally:
                app._middleware_owner = previous

    def remove_middleware_of(self, plugin: str) -> None:
        app = self._app
        with app._state_lock:
            kept = [(o, m) for o, m in app._middleware if o != plugin]
            if len(kept) != len(app._middleware):
                app._middleware = kept
                app._executor.set_middleware([m for _, m in kept])
