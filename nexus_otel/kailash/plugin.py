"""``NexusOtel``: a Kailash Nexus plugin that makes a ``nexus.Nexus`` app observable with nexus-otel.

It follows Kailash Nexus's plugin protocol (``name``, ``install(app)``,
``on_startup()``, ``on_shutdown()``) and, inside, runs a
:class:`nexus_otel.Nexus` that owns the telemetry and the nexus-otel plugins
given to it. Each Kailash workflow execution, from any Nexus channel or from
a Kailash runtime called in Python, is executed through that app (see
:mod:`nexus_otel.kailash.runtime` for where): a ``workflow <name>`` span with
the contract's attributes and metrics, the plugins' hooks, and one record per
execution for webhooks, audit and request logs, whatever the sampling. Each
node that runs is a ``node <node id>`` span under it.

Over HTTP, :class:`~nexus_otel.kailash.http.KailashHttpMiddleware` makes the
server span (continuing a caller's ``traceparent``) and the HTTP metrics, and
marks executions as channel ``api``; others are channel ``python``;
``GET /executions`` lists the executions in flight, as on nexus-otel's own server. The
metrics join Nexus's own ``/metrics`` (they are registered with
prometheus_client's default registry, which that endpoint renders) and go
over OTLP by the standard ``OTEL_*`` variables; spans go to OTLP or the local
store (``nexus-otel traces``).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry.trace import Status, StatusCode

from .. import settings
from .._aio import on_helper_thread
from ..app import DEFAULT_STOP_TIMEOUT, Nexus
from ..errors import ConfigurationError, IntegrationError
from ..telemetry import contract as c
from .http import KailashHttpMiddleware, add_executions_endpoint, current_channel
from .runtime import INSTRUMENTATION, SUPPORTED, NodeRef, check_points

REGISTERED = "_workflows"
"""Kailash Nexus's name -> workflow mapping (no public accessor): how an execution gets its workflow's name."""

_PENDING: contextvars.ContextVar[Callable[[], Any] | None] = contextvars.ContextVar(
    "nexus_otel_kailash_pending", default=None)


class NodeFailed(Exception):
    """A workflow whose runtime returned results with a failed node (``LocalRuntime`` does not raise for
    a failed node nothing depends on): recorded as a failed execution, the caller still gets the results."""

    def __init__(self, node_id: str, error: str, returned: Any) -> None:
        super().__init__(f"node {node_id!r} failed: {error}")
        self.node_id = node_id
        self.returned = returned


async def _dispatch(inputs: dict[str, Any]) -> Any:
    """The workflow function registered for every Kailash workflow: runs the call waiting in this context."""
    call = _PENDING.get()
    if call is None:  # run by name outside a Kailash runtime: nothing to run
        raise ConfigurationError("workflow", "a Kailash workflow", "to be run by a Kailash runtime or Nexus channel")
    result = call()
    if inspect.isawaitable(result):
        result = await result
    failed = _failed_node(result)
    if failed is not None:
        raise NodeFailed(failed[0], failed[1], result)
    return result


def _failed_node(returned: Any) -> tuple[str, str] | None:
    """The first node marked failed in a runtime's ``(results, run_id)``, if any."""
    results = returned[0] if isinstance(returned, tuple) and returned else None
    if not isinstance(results, Mapping):
        return None
    for node_id, output in results.items():
        if isinstance(output, Mapping) and output.get("failed") is True:
            return str(node_id), str(output.get("error_type") or output.get("error") or "failed")
    return None


def _outside_any_loop(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` run where no event loop runs: ``LocalRuntime.execute`` takes another path inside one."""
    def run() -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return call()
        return on_helper_thread(call, "nexus-otel-kailash")

    return run


class NexusOtel:
    """Kailash Nexus plugin: ``app.add_plugin(NexusOtel(plugins=[WebhookPlugin(...), DatabasePlugin()]))``.

    ``plugins`` are nexus-otel plugins (hooks, records, the built-ins), run
    unchanged. ``service_name`` is the default ``service.name``
    (``OTEL_SERVICE_NAME`` wins). ``stop_timeout`` bounds the flush on Nexus's
    shutdown. ``environ`` replaces ``os.environ`` for the ``OTEL_*`` settings.
    The nexus-otel app is :attr:`app` (``NexusOtel(...).app.telemetry``, say).
    """

    def __init__(self, plugins: Iterable[Any] = (), *, service_name: str = "kailash-nexus",
                 stop_timeout: float = DEFAULT_STOP_TIMEOUT, environ: Mapping[str, str] | None = None,
                 record_inputs: bool = True) -> None:
        if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Iterable):
            raise ConfigurationError("NexusOtel(plugins)", plugins, "a list of nexus-otel plugins")
        settings.number("NexusOtel(stop_timeout)", stop_timeout, minimum=0)
        self.plugins = list(plugins)
        self.service_name = service_name
        self.stop_timeout = float(stop_timeout)
        self.app = Nexus(service_name, environ=environ, record_inputs=record_inputs)
        """The nexus-otel app that records every Kailash execution."""
        for plugin in self.plugins:
            self.app.add_plugin(plugin)
        self.kailash_app: Any = None
        self._names: dict[int, tuple[Any, str]] = {}
        self._register_lock = threading.Lock()
        self._metrics = _Exposition(self.app)
        self._installed = False

    # -- Kailash Nexus's plugin protocol ----------------------------------------------
    @property
    def name(self) -> str:
        return "nexus-otel"

    def install(self, app: Any) -> None:
        """Called by ``app.add_plugin(...)``: hook into the app's HTTP server, metrics and runtimes."""
        check_points()  # a Kailash release that moved a wrap point fails here, naming it
        if not isinstance(getattr(app, REGISTERED, None), Mapping):
            raise IntegrationError(f"nexus.Nexus.{REGISTERED}", "no longer the mapping of registered workflows "
                                   f"that names each execution; nexus-otel supports {SUPPORTED}")
        self.kailash_app = app
        app.add_middleware(KailashHttpMiddleware, telemetry=self.app.telemetry)
        add_executions_endpoint(app, self.app)  # GET /executions: what is running now
        from prometheus_client import REGISTRY

        REGISTRY.register(self._metrics)  # what Nexus's /metrics renders
        INSTRUMENTATION.add(self)
        self._installed = True

    def on_startup(self) -> None:
        """Nexus's server started: the nexus-otel app's startup hooks run."""
        if not self.app.started:
            self.app.start()

    def on_shutdown(self) -> None:
        """Nexus is shutting down: plugins torn down, records and telemetry flushed within ``stop_timeout``."""
        if not self._installed:
            return
        self._installed = False
        INSTRUMENTATION.remove(self)
        from prometheus_client import REGISTRY

        try:
            REGISTRY.unregister(self._metrics)
        except KeyError:
            pass
        self.app.stop(self.stop_timeout)

    # -- the runtime's observer --------------------------------------------------------
    def knows(self, workflow: Any) -> bool:
        return self._registered_name(workflow) is not None

    def _registered_name(self, workflow: Any) -> str | None:
        entry = self._names.get(id(workflow))
        if entry is None or entry[0] is not workflow:
            # Kailash Nexus keeps its registered workflows there (read here, never changed; checked at install).
            registered = getattr(self.kailash_app, REGISTERED, None) or {}
            self._names = {id(w): (w, name) for name, w in list(registered.items())}
            entry = self._names.get(id(workflow))
        return entry[1] if entry is not None and entry[0] is workflow else None

    def _workflow_name(self, workflow: Any) -> str:
        name = self._registered_name(workflow) or getattr(workflow, "name", None) or type(workflow).__name__
        if name not in self.app.workflows:
            with self._register_lock:
                if name not in self.app.workflows:
                    self.app.register(name, _dispatch)
        return name

    def run(self, workflow: Any, inputs: dict[str, Any], call: Callable[[], Any], sync: bool) -> Any:
        """Run ``call`` (the runtime's own) as an execution of the nexus-otel app; a coroutine unless ``sync``."""
        name, channel = self._workflow_name(workflow), current_channel()
        if not sync:
            return self._arun(name, inputs, call, channel)
        token = _PENDING.set(_outside_any_loop(call))
        try:
            return self.app.execute_workflow(name, inputs, channel=channel)
        except NodeFailed as failed:
            return failed.returned
        finally:
            _PENDING.reset(token)

    async def _arun(self, name: str, inputs: dict[str, Any], call: Callable[[], Any], channel: str) -> Any:
        token = _PENDING.set(call)
        try:
            return await self.app.aexecute_workflow(name, inputs, channel=channel)
        except NodeFailed as failed:
            return failed.returned
        finally:
            _PENDING.reset(token)

    @contextmanager
    def node_span(self, ref: NodeRef) -> Iterator[None]:
        """A ``node <id>`` span around one node's execution: its type, and how it ended; the execution's place
        (``app.running()``) is the node meanwhile."""
        running = self.app.running_executions
        place = running.enter(c.NODE_SPAN.format(node=ref.label))
        try:
            with self._node_span(ref):
                yield
        finally:
            running.leave(place)

    @contextmanager
    def _node_span(self, ref: NodeRef) -> Iterator[None]:
        with self.app.telemetry.tracer.start_as_current_span(
            c.NODE_SPAN.format(node=ref.label), record_exception=False, set_status_on_exception=False,
            attributes={c.NODE_ID: ref.label, c.NODE_TYPE: ref.type_name},
        ) as span:
            try:
                yield
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.set_attributes({c.ERROR_TYPE: c.error_type(exc), c.NODE_STATUS: c.STATUS_FAILED})
                raise
            span.set_attribute(c.NODE_STATUS, c.STATUS_COMPLETED)

    def __repr__(self) -> str:
        return f"<NexusOtel plugins={[getattr(p, 'name', type(p).__name__) for p in self.plugins]}>"


class _Exposition:
    """The nexus-otel app's metrics as a prometheus_client collector (for the default registry)."""

    def __init__(self, app: Nexus) -> None:
        self._app = app

    def collect(self) -> Any:
        return self._app.telemetry.exposition.collect()

    def describe(self) -> list[Any]:
        return []
