"""What a plugin is: the :class:`NexusPlugin` base class, the :class:`Plugin` protocol, and how one is named.

Kailash Nexus's plugin API's plugins subclass ``NexusPlugin`` (a ``name``, a
``setup(app)``, optionally ``version``, ``description`` and ``teardown``); any
object with that shape is a :class:`Plugin`. :func:`plugin_identity` checks the
shape and says what is wrong. The :mod:`~nexus_otel.plugin_manager` registers them.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .errors import PluginValidationError

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
