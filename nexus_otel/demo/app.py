"""An example app with a few workflows of different shapes: quick, CPU-bound, async, failing; and a request log.

Serve it with ``nexus-otel serve nexus_otel.demo.app:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ..app import Nexus
from ..plugins.request_logger import RequestLoggerPlugin
from ..telemetry.config import TelemetryConfig
from ..telemetry.telemetry import Telemetry

log = logging.getLogger("nexus_otel.demo")
log.addHandler(logging.NullHandler())  # a library's logger: the app's logging set-up (or the logs signal) decides


class OutOfStock(Exception):
    """A business failure the demo provokes on purpose."""


def create_app(name: str = "nexus-demo", config: TelemetryConfig | None = None) -> Nexus:
    """The demo app, unstarted, with telemetry configured by ``config`` (default: from the ``OTEL_*`` variables;
    local traces when no endpoint is set)."""
    app = Nexus(name, telemetry=Telemetry(name, config=config) if config is not None else None)
    # A record as each workflow starts and ends, to the logs signal (nexus-otel logs, or the OTLP endpoint and
    # the kit's VictoriaLogs), not to the terminal.
    app.add_plugin(RequestLoggerPlugin(output=logging.NullHandler()))

    @app.workflow("greet")
    def greet(inputs: dict) -> dict:
        """Say hello."""
        return {"greeting": f"Hello, {inputs.get('name', 'world')}!"}

    @app.workflow("checkout")
    def checkout(inputs: dict) -> dict:
        """Price a cart; fails when an item is out of stock."""
        items = inputs.get("items", [])
        time.sleep(0.001 * len(items))  # a little work per item
        for item in items:
            if item.get("stock", 1) <= 0:
                log.warning("checkout refused: %s is out of stock", item.get("sku", "?"))
                raise OutOfStock(f"{item.get('sku', '?')} is out of stock")
        total = sum(float(i.get("price", 0)) * int(i.get("qty", 1)) for i in items)
        return {"items": len(items), "total": round(total, 2)}

    @app.workflow("report")
    async def report(inputs: dict) -> dict:
        """Build a report from slower upstream calls (async)."""
        pages = int(inputs.get("pages", 1))
        await asyncio.sleep(0.002 * pages)
        return {"pages": pages, "status": "ready"}

    @app.workflow("enrich")
    def enrich(inputs: dict) -> dict:
        """Call a flaky upstream; fails when it is down."""
        if inputs.get("upstream_down"):
            raise ConnectionError("enrichment service unavailable")
        return {"user": inputs.get("user"), "segment": "gold"}

    return app
