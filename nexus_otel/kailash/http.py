"""The HTTP side of a Kailash Nexus app: its server spans and HTTP metrics, and which channel ran a workflow."""

from __future__ import annotations

import contextvars
from typing import Any

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
