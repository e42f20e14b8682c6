"""What a plugin is: the :class:`NexusPlugin` base class, the :class:`Plugin` protocol, and how one is named.

Kailash Nexus's plugin API's plugins subclass ``NexusPlugin`` (a ``name``, a
``setup(app)``, optionally ``version``, ``description`` and ``teardown``); any
object with that shape is a :class:`Plugin`. :func:`plugin_identity` checks the
shape and says what is wrong; :func:`traced_events` reads which of a plugin's
calls get spans (``trace_hooks``). The :mod:`~nexus_otel.plugin_manager` registers them.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import PluginValidationError
from .telemetry import contract as c

if TYPE_CHECKING:
    from .app import Nexus


@runtime_checkable
class Plugin(Protocol):
    """The shape of a plugin, for type hints: ``NexusPlugin`` subclasses have it, and so may other objects."""

    @property
    def name(self) -> str: ...

    def setup(self, nexus_app: Nexus) -> None: ...


class NexusPlugin:
    """Base class for plugins. Give it a ``name``; override what you need.

    Subclasses need not call ``super().__init__()``: the base keeps no state.

    ``trace_hooks`` says which of the plugin's calls are spans: ``True`` (the default) all of them,
    ``False`` none, or a collection of event names (``{"workflow_failed"}``) only those. The events are
    the hooks' (``workflow_started``, ``workflow_completed``, ``workflow_failed``, ``startup``,
    ``shutdown``) and the plugin's own ``setup`` and ``teardown``. A call without a span is still
    timed (``nexus.plugin.hook.duration``) and its failures still counted and logged: turn spans off
    for a trivial hook on a hot workflow, whose span would only make every trace bigger.
    """

    trace_hooks: bool | Collection[str] = True

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


PLUGIN_EVENTS = (*c.WORKFLOW_EVENTS, *c.LIFECYCLE_EVENTS, c.SETUP, c.TEARDOWN)
"""The events of a plugin's calls: its hooks', and its own ``setup`` and ``teardown``."""


def traced_events(plugin: Any, name: str) -> frozenset[str]:
    """The events whose calls of ``plugin`` get a span, from its ``trace_hooks`` (objects without one: all).

    Read once, at registration; a value that is neither a bool nor a collection of known event names is a
    :class:`PluginValidationError` naming the plugin (a plain string too: ``{"workflow_failed"}`` was meant).
    """
    value = getattr(plugin, "trace_hooks", True)
    if value is True:
        return frozenset(PLUGIN_EVENTS)
    if value is False:
        return frozenset()
    expected = f"True, False or a collection of event names among {', '.join(PLUGIN_EVENTS)}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        raise PluginValidationError(name, f"trace_hooks must be {expected}, got {value!r}")
    unknown = [e for e in value if e not in PLUGIN_EVENTS]
    if unknown:
        raise PluginValidationError(name, f"trace_hooks must be {expected}; {unknown[0]!r} is no event")
    return frozenset(value)
