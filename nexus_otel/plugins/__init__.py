"""Built-in plugins, and the plugin base class under Kailash Nexus's import path.

``from nexus_otel.plugins import NexusPlugin`` works as Kailash Nexus's
``from nexus.plugins import NexusPlugin`` does. Each built-in plugin is thin
wiring over a processor, exporter or middleware that can be used without it.
"""

from ..plugin_base import NexusPlugin
from ..plugin_manager import PluginManager
from .auth import AuthPlugin
from .caching import CachingPlugin
from .database import DatabasePlugin
from .metrics import MetricsPlugin
from .monitoring import MonitoringPlugin
from .rate_limit import RateLimitPlugin
from .request_logger import RequestLoggerPlugin
from .webhook import WebhookPlugin

__all__ = [
    "AuthPlugin",
    "CachingPlugin",
    "DatabasePlugin",
    "MetricsPlugin",
    "MonitoringPlugin",
    "NexusPlugin",
    "PluginManager",
    "RateLimitPlugin",
    "RequestLoggerPlugin",
    "WebhookPlugin",
]
