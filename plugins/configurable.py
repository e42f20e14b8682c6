"""The configurable example of Kailash Nexus's plugin API: settings through a ``config`` dict.

A folder-loaded file builds its plugin with no arguments, so this one exports
a configured instance as ``plugin``.
"""

import logging

from nexus_otel.plugins import NexusPlugin

log = logging.getLogger("plugins.configurable")


class ConfigurablePlugin(NexusPlugin):
    def __init__(self, config=None):
        self.config = config or {}

    @property
    def name(self):
        return "configurable"

    @property
    def version(self):
        return "1.0.0"

    def setup(self, nexus_app):
        self.app = nexus_app
        enabled = self.config.get("enabled", True)
        log_level = self.config.get("log_level", "INFO")
        if enabled:
            log.info("Plugin enabled with log_level=%s", log_level)


plugin = ConfigurablePlugin({"enabled": True, "log_level": "INFO"})
