"""The HTTP side of a Kailash Nexus app: its server spans and HTTP metrics, which channel ran a workflow, and
``GET /executions`` (what is running now)."""

from __future__ import annotations

import contextvars
from typing import Any

from ..app import Nexus
from ..channels.executions import ENDPOINT
from ..channels.http import executions_endpoint
from ..channels.http_telemetry import HttpTelemetryMiddleware

API_CHANNEL = "api"
PYTHON_CHANNEL = "python"
_CHANNEL: contextvars.ContextVar[str] = contextvars.ContextVar("nexus_otel_kailash_channel", default=PYTHON_CHANNEL)


def current_channel() -> str:
    """``api`` inside a request to the Nexus HTTP server (its CLI posts there too), else ``python``."""
    return _CHANNEL.get()


class KailashHttpMiddleware(HttpTelemetryMiddleware):
    """nexus-otel's HTTP telemetry (server span, ``traceparent``, ``http.server.request.duration``) on
    Kailash Nexus's FastAPI app; workflows executed within a request count as channel ``api``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        token = _CHANNEL.set(API_CHANNEL)
        try:
            await super().__call__(scope, receive, send)
        finally:
            _CHANNEL.reset(token)


def add_executions_endpoint(kailash_app: Any, nexus: Nexus) -> bool:
    """``GET /executions`` on a Kailash Nexus app's FastAPI app: the executions ``nexus`` (the nexus-otel app
    that records them) has in flight, as on nexus-otel's own HTTP channel
    (:mod:`nexus_otel.channels.executions`). A plain route of that app, so Kailash Nexus's own middleware (its
    auth included) runs for it as for its workflows, and so do nexus-otel's auth plugins. False when the app
    has no FastAPI app yet."""
    fastapi_app = getattr(kailash_app, "fastapi_app", None)
    if fastapi_app is None:
        return False
    fastapi_app.add_route(ENDPOINT, executions_endpoint(nexus, API_CHANNEL), methods=["GET"])
    return True
