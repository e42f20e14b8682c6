"""nexus-otel for Kailash Nexus apps (``pip install "nexus-otel[kailash]"``)::

    from nexus import Nexus
    from nexus_otel.kailash import NexusOtel
    from nexus_otel.plugins import DatabasePlugin, WebhookPlugin

    app = Nexus()
    app.add_plugin(NexusOtel(plugins=[WebhookPlugin("https://hooks.example.com/x"), DatabasePlugin()]))

Every workflow execution, through every Nexus channel, is a ``workflow <name>``
span with the telemetry contract's metrics, each node that runs a ``node <id>``
span under it, and the nexus-otel plugins run as on a ``nexus_otel.Nexus`` app
(see :mod:`nexus_otel.kailash.plugin`).
"""

from .plugin import NexusOtel, NodeFailed
from .runtime import SUPPORTED, check_points

__all__ = ["SUPPORTED", "NexusOtel", "NodeFailed", "check_points"]
