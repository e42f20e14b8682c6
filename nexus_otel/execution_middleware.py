"""Execution middleware: code that runs around every workflow, inside its span.

Caching, authentication and rate limits belong here, not in a replaced
``execute_workflow``. A middleware receives the :class:`WorkflowCall` and the
next step, and returns the result: it may return early (a cache hit), change
``call.inputs``, or raise (a rejection, recorded as the workflow's failure).

Write ``handle`` for synchronous code, ``ahandle`` for asynchronous code, or
both. A middleware with only one of them still works on both paths: the other
path bridges to it (a worker thread, or a private event loop).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span

from ._aio import block_on
from .caller import Caller
from .errors import UsageError
from .events import WorkflowEvent

if TYPE_CHECKING:
    from .workflows import Workflow

Next = Callable[["WorkflowCall"], Any]
AsyncNext = Callable[["WorkflowCall"], Awaitable[Any]]


@dataclass(slots=True)
class WorkflowCall:
    """One execution as middleware sees it."""

    workflow: Workflow
    event: WorkflowEvent
    inputs: Mapping[str, Any]
    """What the workflow function will receive; middleware may replace it."""
    span: Span
    """The workflow span (a non-recording span when telemetry is off)."""
    caller: Caller = field(default_factory=lambda: Caller())
    """Credentials and address as the channel saw them (never recorded)."""

    @property
    def name(self) -> str:
        return self.workflow.name

    def set_attribute(self, key: str, value: Any) -> None:
        """Set an attribute on the workflow span (for example ``nexus.cache.hit``)."""
        self.span.set_attribute(key, value)


class Middleware:
    """Base class; override :meth:`handle`, :meth:`ahandle`, or both."""

    def handle(self, call: WorkflowCall, call_next: Next) -> Any:
        return call_next(call)

    async def ahandle(self, call: WorkflowCall, call_next: AsyncNext) -> Any:
        return await call_next(call)


class FunctionMiddleware(Middleware):
    """Adapts a plain function ``fn(call, call_next)`` (sync or ``async def``)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        if inspect.iscoroutinefunction(fn):
            self.ahandle = fn  # type: ignore[method-assign]
        else:
            self.handle = fn  # type: ignore[method-assign]

    def __repr__(self) -> str:
        return f"FunctionMiddleware({getattr(self.fn, '__qualname__', self.fn)!r})"


def as_middleware(obj: Any) -> Middleware:
    """Accept a :class:`Middleware` or a function; reject anything else clearly."""
    if isinstance(obj, Middleware):
        return obj
    if isinstance(obj, type):
        raise UsageError(f"use() takes a middleware instance, got the class {obj.__name__}; call it first")
    if callable(obj):
        return FunctionMiddleware(obj)
    raise UsageError(f"use() takes a Middleware or a callable(call, call_next), got {obj!r}")


def _overrides(mw: Middleware, name: str) -> bool:
    own = mw.__dict__.get(name)
    if own is not None:
        return True
    return getattr(type(mw), name) is not getattr(Middleware, name)


def build_sync_chain(middlewares: Sequence[Middleware], terminal: Next) -> Next:
    """Compose ``middlewares`` (outermost first) around ``terminal`` for the sync path."""
    call_next = terminal
    for mw in reversed(middlewares):
        call_next = _sync_step(mw, call_next)
    return call_next


def build_async_chain(middlewares: Sequence[Middleware], terminal: AsyncNext) -> AsyncNext:
    """Compose ``middlewares`` around ``terminal`` for the async path."""
    call_next = terminal
    for mw in reversed(middlewares):
        call_next = _async_step(mw, call_next)
    return call_next


def _sync_step(mw: Middleware, nxt: Next) -> Next:
    if _overrides(mw, "handle") or not _overrides(mw, "ahandle"):
        handle = mw.handle
        return lambda call: handle(call, nxt)

    async def anxt(call: WorkflowCall) -> Any:
        return nxt(call)

    ahandle = mw.ahandle
    return lambda call: block_on(ahandle(call, anxt))


async def _as_coroutine(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _async_step(mw: Middleware, nxt: AsyncNext) -> AsyncNext:
    if _overrides(mw, "ahandle") or not _overrides(mw, "handle"):
        ahandle = mw.ahandle

        async def step(call: WorkflowCall) -> Any:
            return await ahandle(call, nxt)

        return step

    handle = mw.handle

    async def bridged(call: WorkflowCall) -> Any:
        loop = asyncio.get_running_loop()

        def sync_next(c: WorkflowCall) -> Any:
            return asyncio.run_coroutine_threadsafe(_as_coroutine(nxt(c)), loop).result()

        return await asyncio.to_thread(handle, call, sync_next)

    return bridged
