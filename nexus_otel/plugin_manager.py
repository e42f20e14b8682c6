"""The :class:`PluginManager`: registers, sets up, tears down and finds the plugins of one app.

A plugin is registered, validated, and set up inside a ``plugin setup <name>``
span; hooks it registers during ``setup`` belong to it. Its ``trace_hooks`` (and
the app's ``untraced_hooks``) say which of its calls are spans: its hooks', and
its ``setup`` and ``teardown`` too (events ``setup`` and ``teardown``; a plugin
with ``trace_hooks = False`` adds no span at all, only its timings and errors). If ``setup`` raises,
its hooks are removed again and :class:`~nexus_otel.errors.PluginSetupError`
names it: the app is never left half-configured. ``teardown`` runs when the
app stops or the plugin is unregistered, in a ``plugin teardown`` span, and a
failing teardown is recorded, never raised.

The manager knows its app only through a :class:`PluginHost`: the few things
it needs of the app hosting the plugins (the hook registry, the span of a
setup or teardown, which middleware a plugin added, telling the app a plugin
arrived). The app hands it one (:attr:`nexus_otel.Nexus.plugin_host`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from .discovery import Discovered, load_entry_points, load_folder
from .errors import DuplicatePluginError, PluginError, PluginSetupError, UsageError
from .hooks import HookRegistry
from .plugin_base import Plugin, plugin_identity, traced_events
from .telemetry import contract as c

log = logging.getLogger("nexus_otel.plugins")


class PluginHost(Protocol):
    """What a :class:`PluginManager` needs of the app whose plugins it manages."""

    @property
    def hooks(self) -> HookRegistry:
        """Where plugins register their hooks (removed again, by plugin, at teardown)."""
        ...

    def observed(self, span_name: str, attributes: dict[str, str], plugin: str, event: str,
                 metric_attributes: dict[str, str], *, reraise: bool = False,
                 traced: bool = True) -> AbstractContextManager[Any]:
        """The hook metrics, and if ``traced`` a span, around a plugin's setup or teardown."""
        ...

    def middleware_owned_by(self, plugin: str) -> AbstractContextManager[None]:
        """Middleware added while this is open belongs to ``plugin``."""
        ...

    def remove_middleware_of(self, plugin: str) -> None:
        """Take out the middleware ``plugin`` added."""
        ...

    def plugin_added(self, plugin: str) -> None:
        """``plugin`` is registered (an app already started runs its startup hooks now)."""
        ...


class PluginManager:
    """Registers, sets up, tears down and finds the plugins of one app."""

    def __init__(self, nexus_app: Any, host: PluginHost | None = None) -> None:
        """``nexus_app`` is what plugins' ``setup`` receives; ``host`` defaults to its ``plugin_host``."""
        if host is None:
            host = getattr(nexus_app, "plugin_host", None)
            if host is None:
                raise UsageError(f"PluginManager needs a nexus_otel.Nexus app (or a PluginHost), got "
                                f"{type(nexus_app).__name__}")
        self.app = nexus_app
        self.host: PluginHost = host
        self.plugins: dict[str, Plugin] = {}
        self._traced: dict[str, frozenset[str]] = {}
        """By plugin: the events whose calls its ``trace_hooks`` makes spans, read once at registration."""
        self._lock = threading.RLock()

    # -- Kailash Nexus's plugin API ------------------------------------------------------
    def register(self, plugin: Plugin) -> Plugin:
        """Validate and set up ``plugin``; a duplicate name raises ``ValueError``."""
        name, version = plugin_identity(plugin)
        events = traced_events(plugin, name)
        with self._lock:
            if name in self.plugins:
                raise DuplicatePluginError(name, "already registered")
            self._traced[name] = events
            try:
                self._setup(plugin, name, version)
            except BaseException:
                del self._traced[name]
                raise
            self.plugins[name] = plugin
        log.info("plugin registered: %s v%s", name, version)
        self.host.plugin_added(name)
        return plugin

    def unregister(self, plugin_name: str) -> Plugin | None:
        """Tear down and remove a plugin and its hooks; returns it, or None if unknown."""
        with self._lock:
            plugin = self.plugins.pop(plugin_name, None)
            if plugin is None:
                return None
            try:
                self.teardown_one(plugin_name, plugin)
            finally:
                self._traced.pop(plugin_name, None)
        log.info("plugin unregistered: %s", plugin_name)
        return plugin

    def get(self, plugin_name: str) -> Plugin | None:
        return self.plugins.get(plugin_name)

    def list(self) -> list[str]:
        return list(self.plugins.keys())

    # -- discovery -----------------------------------------------------------
    def load_folder(self, folder: str | Path, *, strict: bool = False) -> Discovered:
        """Register every plugin found in ``folder``'s ``*.py`` files.

        A file that fails to import is reported (logged, and in the result's
        ``errors``) and the rest still load; with ``strict=True`` any failure
        raises before a single plugin is registered.
        """
        return self._register_all(load_folder(folder, strict=strict), strict)

    def load_entry_points(self, group: str = "nexus_otel.plugins", *, strict: bool = False) -> Discovered:
        """Register the plugins installed packages declare in the entry-point ``group``."""
        return self._register_all(load_entry_points(group, strict=strict), strict)

    def _register_all(self, found: Discovered, strict: bool) -> Discovered:
        done: list[str] = []
        for plugin in found.plugins:
            try:
                self.register(plugin)
                done.append(plugin.name)
            except PluginError as exc:
                if strict:
                    for name in reversed(done):
                        self.unregister(name)
                    raise
                found.errors.append(exc)
                log.error("%s", exc)
        found.registered = done
        return found

    # -- lifecycle internals -----------------------------------------------------
    def _observed(self, name: str, version: str, event: str, *, reraise: bool = False
                  ) -> AbstractContextManager[Any]:
        span_name = (c.PLUGIN_SETUP_SPAN if event == c.SETUP else c.PLUGIN_TEARDOWN_SPAN).format(plugin=name)
        attributes = {c.PLUGIN_NAME: name, c.PLUGIN_VERSION: version, c.HOOK_EVENT: event}
        traced = self.host.hooks.policy.traced(name, event, self._traced.get(name))
        return self.host.observed(span_name, attributes, name, event, {c.M_PLUGIN: name, c.M_EVENT: event},
                                  reraise=reraise, traced=traced)

    def _setup(self, plugin: Plugin, name: str, version: str) -> None:
        hooks = self.host.hooks
        try:
            with self._observed(name, version, c.SETUP, reraise=True):
                with hooks.owned_by(name, version, self._traced.get(name)), self.host.middleware_owned_by(name):
                    plugin.setup(self.app)
        except Exception as exc:
            hooks.remove_plugin(name)
            self.host.remove_middleware_of(name)
            raise PluginSetupError(name, f"setup failed: {c.error_type(exc)}: {exc}") from exc

    def teardown_one(self, name: str, plugin: Plugin) -> None:
        """Run ``plugin.teardown()`` in a span; a failure is recorded, not raised."""
        try:
            with self._observed(name, plugin_identity(plugin)[1], c.TEARDOWN):
                teardown = getattr(plugin, "teardown", None)
                if teardown is not None:
                    teardown()
        finally:
            self.host.hooks.remove_plugin(name)
            self.host.remove_middleware_of(name)

    def teardown_all(self) -> None:
        """Tear down every plugin, last registered first (they stay registered)."""
        with self._lock:
            for name, plugin in reversed(list(self.plugins.items())):
                self.teardown_one(name, plugin)

    def __contains__(self, name: object) -> bool:
        return name in self.plugins

    def __iter__(self) -> Iterator[Plugin]:
        return iter(list(self.plugins.values()))

    def __len__(self) -> int:
        return len(self.plugins)


