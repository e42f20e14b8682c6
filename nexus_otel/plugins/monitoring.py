"""``MonitoringPlugin``: where the app's metrics go, configured as Kailash Nexus's plugin API shows it.

- ``backend="prometheus"``: served for scraping on the HTTP channel's
  ``/metrics``, and with ``port=...`` also on a port of its own (for apps
  without the HTTP channel; with ``serve --workers`` one worker serves it,
  with every worker's totals). ``interval`` is Prometheus's scrape interval to
  set on the Prometheus side; it does not change what is served.
- ``backend="otlp"``: pushed every ``interval`` seconds by the OTLP metric
  exporter (endpoint and protocol from ``OTEL_EXPORTER_OTLP_*``).
- ``backend="console"``: printed every ``interval`` seconds.

Settings may be given to the constructor or set as attributes before
``add_plugin`` (the style of Kailash Nexus's plugin API); they are checked at setup.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from .. import settings
from ..plugin_base import NexusPlugin

BACKENDS = ("prometheus", "otlp", "console")
log = logging.getLogger("nexus_otel.monitoring")


class MonitoringPlugin(NexusPlugin):
    """Serves or pushes the app's metrics."""

    name = "monitoring"
    version = "1.0.0"

    def __init__(self, backend: str = "prometheus", interval: float = 30, *, port: int | None = None,
                 host: str = "127.0.0.1", config: dict[str, Any] | None = None) -> None:
        chosen = settings.with_config("MonitoringPlugin", config, backend=backend, interval=interval, port=port,
                                      host=host)
        self.backend = chosen["backend"]
        self.interval = chosen["interval"]
        self.port = chosen["port"]
        self.host = chosen["host"]
        self.push: Any = None
        self.server: Any = None

    def setup(self, nexus_app: Any) -> None:
        backend = settings.choice("MonitoringPlugin.backend", self.backend, BACKENDS)
        interval = settings.number("MonitoringPlugin.interval", self.interval, strictly_positive=True,
                                   maximum=86_400)
        if self.port is not None:
            settings.number("MonitoringPlugin.port", self.port, minimum=0, maximum=65_535, integer=True)
            if backend != "prometheus":
                settings.choice("MonitoringPlugin.backend", backend, ("prometheus",))
        telemetry = nexus_app.telemetry
        if not telemetry.enabled:
            return
        if backend == "prometheus":
            if self.port is not None:
                from prometheus_client import start_http_server

                try:
                    # telemetry.exposition: with serve --workers, every worker's totals, like the app's /metrics.
                    self.server, _ = start_http_server(self.port, addr=self.host, registry=telemetry.exposition)
                except OSError as exc:
                    if telemetry.config.workers > 1 and self.port:  # one worker serves the port for all
                        log.info("MonitoringPlugin: port %s is served by another worker (%s)", self.port, exc)
                        return
                    raise
                self.port = self.server.server_port
            return
        hub = telemetry.require_metrics_hub("MonitoringPlugin")
        if backend == "otlp":
            from ..telemetry.sinks import otlp_metric_exporter

            # The app's one parsed configuration: the same protocol, endpoint and timeout as its other OTLP output.
            exporter = otlp_metric_exporter(telemetry.config)
            self.push = hub.add_push(exporter, float(interval), "monitoring-otlp")
        else:
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

            self.push = hub.add_push(ConsoleMetricExporter(out=sys.stdout), float(interval), "monitoring-console")

    @property
    def url(self) -> str | None:
        """Where the own-port Prometheus endpoint listens, if one was asked for."""
        return f"http://{self.host}:{self.port}/metrics" if self.server is not None else None

    def teardown(self) -> None:
        if self.push is not None:
            self.push.stop()
            self.push = None
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
