"""ASGI middleware that makes each HTTP request a SERVER span per the OTel HTTP semantic conventions.

It continues the caller's trace from W3C ``traceparent`` (and takes its
``baggage``), names the span ``<METHOD> <route>`` (``url.query`` with secret
values ``REDACTED``: :mod:`nexus_otel.urls`), records
``http.server.request.duration``, and returns the trace id on every response
(``traceresponse`` and ``X-Trace-Id``) so a user can find the trace.

A 5xx answer's ``error.type`` (on the span and the metric) is the status code,
as the HTTP conventions say, unless the app says which failure it answered
with (``scope[ERROR_TYPE_KEY]``: the HTTP channel puts the failed workflow's
``error.type`` there) or an exception went through: then it is that type, the
same ``error.type`` as on the workflow span and the execution's records.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from ..telemetry import contract
from ..telemetry.instruments import SeriesCache
from ..telemetry.telemetry import Telemetry
from ..telemetry.workflow_sampler import with_workflow
from ..urls import redact_query

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Methods kept as they are; any other becomes "_OTHER" (the original goes on the span), as the
# HTTP semantic conventions ask, so a client cannot mint new metric series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
ERROR_TYPE_KEY = "nexus_otel.error_type"
"""The ASGI scope key where an app puts the ``error.type`` of the failure it answers with a 5xx."""


def _duration_attributes(method: str, status: int, scheme: str, route: str | None,
                         error_type: str | None) -> dict[str, Any]:
    """``http.server.request.duration``'s attributes, per the HTTP semantic conventions."""
    attributes: dict[str, Any] = {
        "http.request.method": method, "http.response.status_code": status, "url.scheme": scheme,
    }
    if route:
        attributes["http.route"] = route
    if error_type is not None:
        attributes["error.type"] = error_type
    return attributes


class _HeaderGetter(Getter[dict[str, str]]):
    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        value = carrier.get(key.lower())
        return [value] if value is not None else None

    def keys(self, carrier: dict[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


class HttpTelemetryMiddleware:
    """Wraps an ASGI app; with telemetry disabled it only passes requests through."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry
        self._tracer = telemetry.tracer
        self._redactor = telemetry.redactor
        self._durations = SeriesCache(telemetry.instruments.http_server_duration)  # by the attributes
        self._by_workflow = telemetry.workflow_sampler is not None  # per-workflow head sampling ratios are set

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.telemetry.enabled:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        root_path = scope.get("root_path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        parent = self.telemetry.propagator.extract(headers, getter=_GETTER)
        if self._by_workflow:  # this span may root a trace: its sampler decides by the workflow the path names
            parent = with_workflow(parent, scope.get("path", ""))
        method = scope.get("method", "GET")
        server = scope.get("server") or (None, None)
        client = scope.get("client") or (None, None)
        attributes: dict[str, Any] = {}
        if method not in KNOWN_METHODS:
            attributes["http.request.method_original"] = method
            method = "_OTHER"
        attributes.update({
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        })
        if scope.get("query_string"):
            # Secret parameters (?sig=..., ?api_key=..., ?token=...) keep their names, their values become
            # REDACTED, as the HTTP semantic conventions ask (nexus_otel.urls says which).
            attributes["url.query"] = redact_query(scope["query_string"].decode("latin-1"), self._redactor)
        if server[0]:
            attributes["server.address"] = headers.get("host", "").split(":")[0] or server[0]
            if server[1]:
                attributes["server.port"] = server[1]
        if client[0]:
            attributes["client.address"] = client[0]
        if "user-agent" in headers:
            attributes["user_agent.original"] = self._redactor.scrub_credentials_in(headers["user-agent"])
        span = self._tracer.start_span("HTTP" if method == "_OTHER" else method, context=parent,
                                       kind=SpanKind.SERVER, attributes=attributes)
        token = context_api.attach(trace_api.set_span_in_context(span, parent))
        ctx = span.get_span_context()
        trace_header = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()
        trace_id = f"{ctx.trace_id:032x}".encode()
        status_code = 500
        raised: str | None = None

        async def send_with_trace(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
                message["headers"] = [
                    *message.get("headers", ()), (b"traceresponse", trace_header), (b"x-trace-id", trace_id),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace)
        except BaseException as exc:
            span.record_exception(exc)
            raised = contract.error_type(exc)
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None)
            if template:  # a route of a mounted app (Kailash Nexus mounts one per workflow): its mount path first
                mounted = scope.get("root_path", "")
                if mounted.startswith(root_path) and len(mounted) > len(root_path):
                    template = mounted[len(root_path):] + template
            end_attributes: dict[str, Any] = {"http.response.status_code": status_code}
            if template:
                span.update_name(f"{method} {template}" if method != "_OTHER" else f"HTTP {template}")
                end_attributes["http.route"] = template
            error_type = None
            if status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
                error_type = raised or scope.get(ERROR_TYPE_KEY) or str(status_code)
                end_attributes["error.type"] = error_type
            span.set_attributes(end_attributes)
            scheme = attributes["url.scheme"]
            self._durations.get((method, status_code, scheme, template, error_type), _duration_attributes,
                                method, status_code, scheme, template, error_type).record(
                time.perf_counter() - start, ctx if ctx.is_valid else None)
            context_api.detach(token)
            span.end()
