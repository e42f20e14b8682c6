"""Where nexus-otel hooks into Kailash's runtime, which has no execution hooks of its own.

Every Kailash Nexus channel (its HTTP API, the ``nexus`` CLI, which posts to
it, MCP, WebSocket) ends in ``AsyncLocalRuntime.execute_workflow_async``, each
through a runtime instance of its own, and plain Kailash code runs workflows
with ``LocalRuntime.execute``. Every node runs through ``Node.execute`` (sync
nodes) or ``AsyncNode.execute_async`` / ``AsyncTypedNode.execute_async``.
Those five methods are wrapped on their classes while an observer (a
:class:`~nexus_otel.kailash.plugin.NexusOtel`) is installed, and restored when
the last one leaves. :func:`check_points` verifies they exist with the
parameters the wrappers pass on, so a Kailash release that moves one fails
at install with an :class:`~nexus_otel.errors.IntegrationError` naming it,
not silently with no telemetry.

A wrapped workflow call asks its observer to run it (as a ``workflow <name>``
span with the contract's metrics, hooks and records); a wrapped node call
inside it becomes a ``node <node id>`` span. Calls made while no observer is
installed, and nested calls (a workflow inside a workflow's node), run as
they are.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import IntegrationError

SUPPORTED = "kailash-nexus >= 2.16, < 3 with kailash >= 2.65, < 3"
"""The releases these wrap points were read from and are tested against (the ``kailash`` extra)."""


@dataclass(frozen=True)
class Point:
    """One wrapped method: ``module.cls.method``, and the parameters its wrapper relies on."""

    module: str
    cls: str
    method: str
    parameters: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.module}.{self.cls}.{self.method}"


ASYNC_WORKFLOW = Point("kailash.runtime.async_local", "AsyncLocalRuntime", "execute_workflow_async",
                       ("self", "workflow", "inputs"))
SYNC_WORKFLOW = Point("kailash.runtime.local", "LocalRuntime", "execute", ("self", "workflow", "task_manager",
                                                                            "parameters"))
SYNC_NODE = Point("kailash.nodes.base", "Node", "execute", ("self",))
ASYNC_NODES = (Point("kailash.nodes.base_async", "AsyncNode", "execute_async", ("self",)),
               Point("kailash.nodes.base", "AsyncTypedNode", "execute_async", ("self",)))
POINTS = (ASYNC_WORKFLOW, SYNC_WORKFLOW, SYNC_NODE, *ASYNC_NODES)


def resolve(point: Point) -> tuple[type, Callable[..., Any]]:
    """The class and the (unwrapped) function at ``point``, or an :class:`IntegrationError` naming it."""
    try:
        cls = getattr(importlib.import_module(point.module), point.cls)
    except (ImportError, AttributeError) as exc:
        raise IntegrationError(point.name, f"not found ({exc}); nexus-otel supports {SUPPORTED}") from exc
    fn = cls.__dict__.get(point.method)
    if not callable(fn):
        raise IntegrationError(point.name, f"{point.cls} no longer defines {point.method}(); "
                                           f"nexus-otel supports {SUPPORTED}")
    fn = getattr(fn, "__wrapped__", fn) if getattr(fn, _MARK, False) else fn
    names = tuple(inspect.signature(fn).parameters)
    if names[:len(point.parameters)] != point.parameters:
        raise IntegrationError(point.name, f"its parameters are now {names}, expected {point.parameters} first; "
                                           f"nexus-otel supports {SUPPORTED}")
    return cls, fn


def check_points() -> None:
    """Raise :class:`IntegrationError` naming the first wrap point this Kailash release moved."""
    for point in POINTS:
        resolve(point)


class Observer(Protocol):
    """What a wrapped call asks: an installed :class:`~nexus_otel.kailash.plugin.NexusOtel`."""

    def knows(self, workflow: Any) -> bool: ...

    def run(self, workflow: Any, inputs: dict[str, Any], call: Callable[[], Any], sync: bool) -> Any: ...

    def node_span(self, node: Any) -> Any: ...


@dataclass
class _Scope:
    """The workflow a call runs in: its observer and its node ids (by node object)."""

    observer: Observer
    node_ids: dict[int, str]


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("nexus_otel_kailash_scope", default=None)
_MARK = "__nexus_otel_wrapper__"


def node_ids(workflow: Any) -> dict[int, str]:
    """``id(node object) -> node id`` from the workflow's public ``nodes`` and ``get_node``."""
    out: dict[int, str] = {}
    for node_id in getattr(workflow, "nodes", {}) or {}:
        try:
            node = workflow.get_node(node_id)
        except Exception:
            continue
        if node is not None:
            out[id(node)] = node_id
    return out


class Instrumentation:
    """The class-level wraps, shared by every observer in the process; the latest one observes unknown workflows."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._observers: list[Observer] = []
        self._originals: list[tuple[type, str, Any]] = []

    def add(self, observer: Observer) -> None:
        with self._lock:
            if not self._observers:
                self._wrap()
            self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        with self._lock:
            if observer in self._observers:
                self._observers.remove(observer)
            if not self._observers:
                self._unwrap()

    @property
    def active(self) -> bool:
        return bool(self._observers)

    def observer_for(self, workflow: Any) -> Observer | None:
        observers = list(self._observers)
        for observer in reversed(observers):
            if observer.knows(workflow):
                return observer
        return observers[-1] if observers else None

    # -- wrapping -------------------------------------------------------------------
    def _wrap(self) -> None:
        resolved = {point: resolve(point) for point in POINTS}  # all or nothing
        for point, (cls, fn) in resolved.items():
            if point is ASYNC_WORKFLOW:
                wrapper = self._async_workflow(fn)
            elif point is SYNC_WORKFLOW:
                wrapper = self._sync_workflow(fn)
            elif point is SYNC_NODE:
                wrapper = self._sync_node(fn)
            else:
                wrapper = self._async_node(fn)
            setattr(wrapper, _MARK, True)
            self._originals.append((cls, point.method, cls.__dict__[point.method]))
            setattr(cls, point.method, wrapper)

    def _unwrap(self) -> None:
        for cls, method, original in reversed(self._originals):
            setattr(cls, method, original)
        self._originals.clear()

    def _async_workflow(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        instrumentation = self

        @functools.wraps(fn)
        async def execute_workflow_async(runtime: Any, workflow: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            observer = None if _SCOPE.get() is not None else instrumentation.observer_for(workflow)
            if observer is None:
                return await fn(runtime, workflow, inputs, *args, **kwargs)
            token = _SCOPE.set(_Scope(observer, node_ids(workflow)))
            try:
                return await observer.run(workflow, dict(inputs or {}),
                                          lambda: fn(runtime, workflow, inputs, *args, **kwargs), False)
            finally:
                _SCOPE.reset(token)

        return execute_workflow_async

    def _sync_workflow(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        instrumentation = self

        @functools.wraps(fn)
        def execute(runtime: Any, workflow: Any, *args: Any, **kwargs: Any) -> Any:
            observer = None if _SCOPE.get() is not None else instrumentation.observer_for(workflow)
            if observer is None:
                return fn(runtime, workflow, *args, **kwargs)
            parameters = kwargs.get("parameters", args[1] if len(args) > 1 else None)
            token = _SCOPE.set(_Scope(observer, node_ids(workflow)))
            try:
                return observer.run(workflow, dict(parameters or {}), lambda: fn(runtime, workflow, *args, **kwargs),
                                    True)
            finally:
                _SCOPE.reset(token)

        return execute

    @staticmethod
    def _sync_node(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def execute(node: Any, *args: Any, **kwargs: Any) -> Any:
            scope = _SCOPE.get()
            if scope is None:
                return fn(node, *args, **kwargs)
            with scope.observer.node_span(NodeRef(node, scope.node_ids.get(id(node)))):
                return fn(node, *args, **kwargs)

        return execute

    @staticmethod
    def _async_node(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(fn)
        async def execute_async(node: Any, *args: Any, **kwargs: Any) -> Any:
            scope = _SCOPE.get()
            if scope is None:
                return await fn(node, *args, **kwargs)
            with scope.observer.node_span(NodeRef(node, scope.node_ids.get(id(node)))):
                return await fn(node, *args, **kwargs)

        return execute_async


@dataclass(frozen=True)
class NodeRef:
    """A node about to run: the object and its id in the workflow (None if the workflow does not list it)."""

    node: Any
    node_id: str | None

    @property
    def label(self) -> str:
        return self.node_id or str(getattr(self.node, "id", None) or type(self.node).__name__)

    @property
    def type_name(self) -> str:
        return type(self.node).__name__


INSTRUMENTATION = Instrumentation()
"""The process's wraps: classes are process-wide, so their wrapping is too."""
