"""Built-in plugins, and the plugin base class under the seed's import path.

``from nexus_otel.plugins import NexusPlugin`` works as the seed's
``from nexus.plugins import NexusPlugin`` does. The built-in plugins
(``AuthPlugin``, ``MonitoringPlugin``, ...) are added here as they land.
"""

from ..plugin import NexusPlugin, PluginManager

__all__ = ["NexusPlugin", "PluginManager"]
