"""Plugins: the :class:`NexusPlugin` base class and the :class:`PluginManager`.

A plugin is registered, validated, and set up inside a ``plugin setup <name>``
span; hooks it registers during ``setup`` belong to it. If ``setup`` raises,
its hooks are removed again and :class:`~nexus_otel.errors.PluginSetupError`
names it: the app is never left half-configured. ``teardown`` runs when the
app stops or the plugin is unregistered, in a ``plugin teardown`` span, and a
failing teardown is recorded, never raised.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .discovery import Discovered, load_entry_points, load_folder
from .errors import (
    DuplicatePluginError,
    PluginError,
    PluginSetupError,
    PluginValidationError,
)
from .telemetry import contract as c

if TYPE_CHECKING:
    from .app import Nexus

log = logging.getLogger("nexus_otel.plugins")


class NexusPlugin:
    """Base class for plugins. Give it a ``name``; override what you need.

    Subclasses need not call ``super().__init__()``: the base keeps no state.
    """

    @property
    def name(self) -> str:
        """Unique name of the plugin; appears in span names and metric labels."""
        raise NotImplementedError

    @property
    def description(self) -> str:
        doc = inspect.getdoc(type(self))
        if not doc or type(self).__doc__ is None:
            return ""
        return doc.splitlines()[0]

    @property
    def version(self) -> str:
        return "0.0.0"

    def setup(self, nexus_app: Nexus) -> None:
        """Called when the plugin is added: register hooks and middleware here."""

    def teardown(self) -> None:
        """Called when the app stops or the plugin is unregistered: release resources."""

    def __repr__(self) -> str:
        try:
            return f"<{type(self).__name__} {self.name!r} v{self.version}>"
        except Exception:
            return f"<{type(self).__name__}>"


def plugin_identity(plugin: Any) -> tuple[str, str]:
    """``(name, version)`` of ``plugin``, or :class:`PluginValidationError` saying what is wrong."""
    if isinstance(plugin, type):
        raise PluginValidationError(
            plugin.__name__, f"pass an instance, not the class (use {plugin.__name__}())",
        )
    label = type(plugin).__name__
    try:
        name = plugin.name
    except Exception:
        name = None
    if not isinstance(name, str) or not name.strip():
        raise PluginValidationError(
            label, f"has no name (got {name!r}): define a `name` property returning a non-empty string",
        )
    if not callable(getattr(plugin, "setup", None)):
        raise PluginValidationError(name, "has no setup(app) method; subclass NexusPlugin")
    try:
        version = plugin.version
    except Exception:
        version = "0.0.0"
    if version is None:
        version = "0.0.0"
    if not isinstance(version, str):
        raise PluginValidationError(name, f"version must be a string, got {version!r}")
    return name, version


class PluginManager:
    """Registers, sets up, tears down and finds the plugins of one app."""

    def __init__(self, nexus_app: Nexus) -> None:
        self.app = nexus_app
        self.plugins: dict[str, Any] = {}
        self._lock = threading.RLock()

    # -- Kailash Nexus's plugin API ------------------------------------------------------
    def register(self, plugin: Any) -> Any:
        """Validate and set up ``plugin``; a duplicate name raises ``ValueError``."""
        name, version = plugin_identity(plugin)
        with self._lock:
            if name in self.plugins:
                raise DuplicatePluginError(name, "already registered")
            self._setup(plugin, name, version)
            self.plugins[name] = plugin
        log.info("plugin registered: %s v%s", name, version)
        self.app._plugin_added(name)
        return plugin

    def unregister(self, plugin_name: str) -> Any | None:
        """Tear down and remove a plugin and its hooks; returns it, or None if unknown."""
        with self._lock:
            plugin = self.plugins.pop(plugin_name, None)
            if plugin is None:
                return None
            self.teardown_one(plugin_name, plugin)
        log.info("plugin unregistered: %s", plugin_name)
        return plugin

    def get(self, plugin_name: str) -> Any | None:
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
    def _observed(self, name: str, version: str, event: str, *, reraise: bool = False) -> Any:
        span_name = (c.PLUGIN_SETUP_SPAN if event == c.SETUP else c.PLUGIN_TEARDOWN_SPAN).format(plugin=name)
        attributes = {c.PLUGIN_NAME: name, c.PLUGIN_VERSION: version, c.HOOK_EVENT: event}
        return self.app._hook_runner.observed(span_name, attributes, name, event,
                                              {c.M_PLUGIN: name, c.M_EVENT: event}, reraise=reraise)

    def _setup(self, plugin: Any, name: str, version: str) -> None:
        hooks = self.app.hooks
        try:
            with self._observed(name, version, c.SETUP, reraise=True):
                with hooks.owned_by(name, version), self.app._middleware_owned_by(name):
                    plugin.setup(self.app)
        except Exception as exc:
            hooks.remove_plugin(name)
            self.app._remove_middleware_of(name)
            raise PluginSetupError(name, f"setup failed: {c.error_type(exc)}: {exc}") from exc

    def teardown_one(self, name: str, plugin: Any) -> None:
        """Run ``plugin.teardown()`` in a span; a failure is recorded, not raised."""
        try:
            with self._observed(name, plugin_identity(plugin)[1], c.TEARDOWN):
                teardown = getattr(plugin, "teardown", None)
                if teardown is not None:
                    teardown()
        finally:
            self.app.hooks.remove_plugin(name)
            self.app._remove_middleware_of(name)

    def teardown_all(self) -> None:
        """Tear down every plugin, last registered first (they stay registered)."""
        with self._lock:
            for name, plugin in reversed(list(self.plugins.items())):
                self.teardown_one(name, plugin)

    def __contains__(self, name: object) -> bool:
        return name in self.plugins

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.plugins.values()))

    def __len__(self) -> int:
        return len(self.plugins)


