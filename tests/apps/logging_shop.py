"""A user's app that logs: request logging on, and its own ``logging`` calls inside a workflow."""

import logging

from nexus_otel import Nexus
from nexus_otel.plugins import RequestLoggerPlugin

log = logging.getLogger("shop.orders")
log.setLevel(logging.INFO)  # the logger's own level decides what is exported


def create_app():
    app = Nexus("logging-shop")
    app.add_plugin(RequestLoggerPlugin(output=None))

    @app.workflow("order")
    def order(inputs):
        """Place an order; fails when asked to."""
        log.info("placing order %s", inputs.get("n"))
        log.debug("debug lines stay below the logger's level")
        if inputs.get("fail"):
            raise ValueError(f"order {inputs.get('n')} refused")
        return {"ordered": inputs.get("n")}

    return app
