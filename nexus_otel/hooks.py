"""Hook registration and dispatch: each hook run is timed and, unless turned off, a span; a failing hook never
fails anything.

Each hook knows the plugin that registered it (hooks added while a plugin's
``setup`` runs belong to that plugin; others to ``"app"``), so its span is
``hook <event> <plugin>``, its metrics carry the plugin's name, and removing a
plugin removes exactly its hooks.

Whether a hook is a span is decided once, when it is registered (:class:`SpanPolicy`: the plugin's
``trace_hooks``, then the app's ``untraced_hooks``), so running it costs one bool test more. A hook
without a span keeps everything else: its duration metric (without an exemplar: there is no span
to point at), its error count and its one log line per failure.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import Span, Status, StatusCode

from ._aio import block_on
from .errors import ConfigurationError, PluginValidationError, UnknownHookEventError
from .plugin_base import PLUGIN_EVENTS
from .running import RunningRegistry
from .telemetry import contract as c
from .telemetry.instruments import SeriesCache
from .telemetry.telemetry import Telemetry

log = logging.getLogger("nexus_otel.hooks")

HOOK_EVENTS = c.WORKFLOW_EVENTS + c.LIFECYCLE_EVENTS


@dataclass(frozen=True, slots=True)
class Hook:
    """One registered hook, with its span name and attributes built once, and whether it is a span at all."""

    event: str
    fn: Callable[..., Any]
    plugin: str
    plugin_version: str
    is_async: bool
    span_name: str
    span_attributes: dict[str, str]
    metric_attributes: dict[str, str]
    traced: bool = True


ANY = "*"


class SpanPolicy:
    """Which plugin calls are spans: those the plugin's ``trace_hooks`` lists, less the app's ``untraced_hooks``.

    ``untraced`` entries are ``plugin``, ``plugin:event``, ``*`` (every call) or ``*:event`` (that event of
    every plugin; ``app`` is the plugin of hooks registered outside any plugin). An entry naming an event
    that does not exist is a :class:`ConfigurationError`: a typo would otherwise silently keep the spans.
    """

    def __init__(self, untraced: Sequence[str] = ()) -> None:
        off: set[tuple[str, str]] = set()
        for entry in untraced:
            plugin, _, event = entry.partition(":")
            plugin, event = plugin.strip(), event.strip() or ANY
            if event != ANY and event not in PLUGIN_EVENTS:
                raise ConfigurationError(
                    "NEXUS_OTEL_UNTRACED_HOOKS (untraced_hooks)", entry,
                    f"plugin or plugin:event entries, the event among {', '.join(PLUGIN_EVENTS)} or *")
            off.add((plugin, event))
        self._off = frozenset(off)

    def traced(self, plugin: str, event: str, plugin_events: frozenset[str] | None = None) -> bool:
        """Whether ``plugin``'s calls for ``event`` are spans; ``plugin_events`` are those its ``trace_hooks``
        allows (None: all)."""
        if plugin_events is not None and event not in plugin_events:
            return False
        off = self._off
        return not off or not ((plugin, event) in off or (plugin, ANY) in off or (ANY, event) in off
                               or (ANY, ANY) in off)


def _check_signature(event: str, fn: Callable[..., Any], plugin: str) -> None:
    """A hook that cannot take what ``event`` passes fails here, naming it, not at every run (as pluggy does)."""
    args = 1 if event in c.WORKFLOW_EVENTS else 0
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: nothing to check
        return
    try:
        signature.bind(*([None] * args))
    except TypeError:
        expected = "fn(event)" if args else "fn() with no arguments"
        name = getattr(fn, "__qualname__", repr(fn))
        raise PluginValidationError(
            plugin, f"its {event} hook {name}{signature} cannot be called as {expected}") from None


class HookRegistry:
    """The hooks of one app, by event, in registration order.

    ``untraced`` is the app's ``untraced_hooks`` (see :class:`SpanPolicy`, kept as :attr:`policy`).
    """

    def __init__(self, untraced: Sequence[str] = ()) -> None:
        self._hooks: dict[str, tuple[Hook, ...]] = {e: () for e in HOOK_EVENTS}
        self._lock = threading.RLock()
        self._owner: tuple[str, str, frozenset[str] | None] = (c.APP_PLUGIN_NAME, "", None)
        self.policy = SpanPolicy(untraced)

    @contextmanager
    def owned_by(self, plugin: str, version: str, traced_events: frozenset[str] | None = None) -> Iterator[None]:
        """Hooks registered inside this block belong to ``plugin``; only those of ``traced_events`` (None: all)
        may be spans."""
        with self._lock:
            previous, self._owner = self._owner, (plugin, version, traced_events)
            try:
                yield
            finally:
                self._owner = previous

    def add(self, event: str, fn: Callable[..., Any]) -> Hook:
        if event not in self._hooks:
            raise UnknownHookEventError(
                self._owner[0], f"unknown hook event {event!r}; expected one of {', '.join(HOOK_EVENTS)}")
        if not callable(fn):
            raise PluginValidationError(self._owner[0], f"a {event} hook must be callable, got {fn!r}")
        with self._lock:
            plugin, version, traced_events = self._owner
            _check_signature(event, fn, plugin)
            hook = Hook(
                event=event, fn=fn, plugin=plugin, plugin_version=version,
                is_async=inspect.iscoroutinefunction(fn),
                span_name=c.HOOK_SPAN.format(event=event, plugin=plugin),
                span_attributes={c.PLUGIN_NAME: plugin, c.PLUGIN_VERSION: version, c.HOOK_EVENT: event},
                metric_attributes={c.M_PLUGIN: plugin, c.M_EVENT: event},
                traced=self.policy.traced(plugin, event, traced_events),
            )
            self._hooks[event] = self._hooks[event] + (hook,)
        return hook

    def remove_plugin(self, plugin: str) -> int:
        """Drop every hook ``plugin`` registered; returns how many."""
        removed = 0
        with self._lock:
            for event, hooks in self._hooks.items():
                kept = tuple(h for h in hooks if h.plugin != plugin)
                removed += len(hooks) - len(kept)
                self._hooks[event] = kept
        return removed

    def get(self, event: str) -> tuple[Hook, ...]:
        return self._hooks[event]

    def of_plugin(self, plugin: str, event: str) -> tuple[Hook, ...]:
        return tuple(h for h in self._hooks[event] if h.plugin == plugin)


class HookRunner:
    """Runs hooks in order, each timed and (if traced) in a child span, isolating their failures."""

    def __init__(self, telemetry: Telemetry, running: RunningRegistry | None = None) -> None:
        self._telemetry = telemetry
        self._running = running if running is not None else RunningRegistry()  # each hook run is its place
        self._tracer = telemetry.tracer
        self._errors = telemetry.instruments.plugin_errors
        self._durations = SeriesCache(telemetry.instruments.hook_duration)  # by (plugin, event)

    def _open(self, span_name: str, span_attributes: dict[str, str]) -> tuple[Span, Any, float]:
        span = self._tracer.start_span(
            span_name, attributes=span_attributes, record_exception=False, set_status_on_exception=False,
        )
        return span, context_api.attach(trace_api.set_span_in_context(span)), time.perf_counter()

    def _close(self, span: Span, token: Any, start: float, series: Any) -> None:
        elapsed = time.perf_counter() - start
        context_api.detach(token)
        span.end()
        ctx = span.get_span_context()
        series.record(elapsed, ctx if ctx.is_valid else None)

    @contextmanager
    def observed(self, span_name: str, span_attributes: dict[str, str], plugin: str, event: str,
                 metric_attributes: dict[str, str], *, reraise: bool = False, traced: bool = True) -> Iterator[None]:
        """One plugin call timed and, if ``traced``, in its own span; a failure is recorded and, unless
        ``reraise``, contained."""
        if not self._telemetry.enabled:
            try:
                yield
            except Exception as exc:
                log.error("plugin %r failed in %s: %s: %s", plugin, event, c.error_type(exc), exc)
                if reraise:
                    raise
            return
        series = self._durations.get((plugin, event), dict, metric_attributes)
        span: Span | None = None
        if traced:
            span, token, start = self._open(span_name, span_attributes)
        else:
            start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self.record_failure(span, plugin, event, exc)
            if reraise:
                raise
        finally:
            if span is not None:
                self._close(span, token, start, series)
            else:  # untraced: timed, without an exemplar
                series.record(time.perf_counter() - start, None)

    def run(self, hooks: tuple[Hook, ...], args: tuple[Any, ...]) -> None:
        """Run ``hooks`` with ``args``; async hooks are driven to completion here."""
        enabled = self._telemetry.enabled
        running = self._running
        for hook in hooks:
            span: Span | None = None
            if enabled:  # what observed() does, inline: this loop runs for every hook of every execution
                series = self._durations.get((hook.plugin, hook.event), dict, hook.metric_attributes)
                if hook.traced:
                    span, token, start = self._open(hook.span_name, hook.span_attributes)
                else:
                    start = time.perf_counter()
            place = running.enter(hook.span_name, hook.plugin)  # the execution is in this hook (app.running())
            try:
                result = hook.fn(*args)
                if hook.is_async or inspect.isawaitable(result):
                    block_on(result)
            except Exception as exc:
                if enabled:
                    self.record_failure(span, hook.plugin, hook.event, exc)
                else:
                    log.error("plugin %r failed in %s: %s: %s", hook.plugin, hook.event, c.error_type(exc), exc)
            finally:
                running.leave(place)
                if span is not None:
                    self._close(span, token, start, series)
                elif enabled:  # untraced: timed, without an exemplar
                    series.record(time.perf_counter() - start, None)

    async def arun(self, hooks: tuple[Hook, ...], args: tuple[Any, ...]) -> None:
        """Like :meth:`run`, awaiting async hooks on the running loop."""
        running = self._running
        for hook in hooks:
            place = running.enter(hook.span_name, hook.plugin)
            try:
                with self.observed(hook.span_name, hook.span_attributes, hook.plugin, hook.event,
                                   hook.metric_attributes, traced=hook.traced):
                    result = hook.fn(*args)
                    if hook.is_async or inspect.isawaitable(result):
                        await result
            finally:
                running.leave(place)

    def record_failure(self, span: Span | None, plugin: str, event: str, exc: BaseException) -> None:
        """An error span (if the call has one), a counted error and one log line naming the plugin and the event."""
        error_type = c.error_type(exc)
        if span is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exc}"))
            span.set_attribute(c.ERROR_TYPE, error_type)
        self._errors.bind({c.M_PLUGIN: plugin, c.M_EVENT: event}).add(1)
        log.error("plugin %r failed in %s: %s: %s", plugin, event, error_type, exc)
