"""The HTTP channel: an ASGI app (Starlette) exposing an app's workflows and metrics.

Routes::

    POST /workflows/{name}   body: JSON object of inputs -> {"result", "workflow", "trace_id"}
    GET  /workflows          registered workflows
    GET  /executions         executions in flight now, longest running first (``?inputs=1``: with their
                             redacted inputs); every worker's under ``serve --workers``; ``no-store``
    GET  /healthz            liveness
    GET  /metrics            Prometheus text, or OpenMetrics when the scraper asks

Every error is JSON with the trace id: unknown workflow 404, a body that is not
a JSON object 400, a body over ``max_body_bytes`` 413, a caller turned away by
auth 401 (with ``WWW-Authenticate``) or 403, over the rate limit 429 (with
``Retry-After`` and ``RateLimit-*``), records that cannot be made durable 503
(with ``Retry-After``; ``ran`` says whether the workflow ran), a workflow
exception 500 (its type only: no message, no traceback). ``/healthz`` answers
503 while an outbox of the app's records cannot be written (a full disk).
``/executions`` is behind the same auth as the workflows (401 / 403 alike; see
:mod:`nexus_otel.channels.executions`); an ``inputs`` other than ``1`` is a 400.
Credentials come from ``Authorization: Bearer`` or ``X-API-Key`` and go
nowhere but the auth middleware. The session id comes from the
``X-Session-Id`` header, else a string ``session_id`` field of the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opentelemetry import trace as trace_api
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import settings
from ..app import Nexus
from ..caller import Caller
from ..errors import AccessError, RateLimitExceeded, RecordsUnavailableError
from ..middlewares.auth import AuthMiddleware
from ..telemetry import contract as c
from . import DEFAULT_THREADS, executions
from .http_telemetry import ERROR_TYPE_KEY, HttpTelemetryMiddleware

log = logging.getLogger("nexus_otel.http")

CHANNEL = "api"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
SESSION_HEADER = "x-session-id"


class _JSON(JSONResponse):
    """JSON that never fails on a workflow's result: unknown types become strings."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8")


def _trace_id() -> str | None:
    ctx = trace_api.get_current_span().get_span_context()
    return f"{ctx.trace_id:032x}" if ctx.is_valid else None


MAX_JSON_DEPTH = 100
"""Levels of nested arrays and objects a request body may have (deeper is the caller's error: 400)."""
ECHO_LIMIT = 100
"""Characters of a caller's own input echoed back in an error (a workflow name)."""


def _deeper_than(value: Any, limit: int) -> bool:
    """True if ``value`` nests lists and dicts more than ``limit`` deep (iterative: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _clip(text: str) -> str:
    return text if len(text) <= ECHO_LIMIT else f"{text[:ECHO_LIMIT]}...[{len(text) - ECHO_LIMIT} more]"


def _error(status: int, error: str, **extra: Any) -> Response:
    return _JSON({"error": error, **extra, "trace_id": _trace_id()}, status_code=status)


def _caller(request: Request) -> Caller:
    """Credentials from ``Authorization: Bearer`` or ``X-API-Key``; the client's address."""
    token = None
    authorization = request.headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    client = request.client.host if request.client else None
    return Caller(bearer_token=token, api_key=request.headers.get("x-api-key") or None, client_address=client,
                  headers=request.headers)


def _www_authenticate(exc: AccessError) -> str:
    """RFC 6750: what went wrong, without echoing anything the caller sent."""
    if exc.reason == "missing":
        return 'Bearer realm="nexus-otel"'
    error = "insufficient_scope" if exc.reason == "insufficient_scope" else "invalid_token"
    description = "".join(ch for ch in str(exc) if 32 <= ord(ch) < 127 and ch not in '"\\')[:200]
    return f'Bearer realm="nexus-otel", error="{error}", error_description="{description}"'


def _access_denied(exc: AccessError, **extra: Any) -> Response:
    """A caller turned away by auth: 401 / 403 with a challenge, or 503 (the identity provider is down)."""
    response = _error(exc.status, str(exc), **extra, reason=exc.reason)
    if exc.status in (401, 403):  # a 503 (the identity provider is down) is no challenge
        response.headers["www-authenticate"] = _www_authenticate(exc)
    else:
        response.headers["retry-after"] = "5"
    return response


def executions_endpoint(nexus: Nexus, channel: str = CHANNEL) -> Callable[[Request], Awaitable[Response]]:
    """``GET /executions`` for ``nexus`` (a Starlette endpoint; what it lists and to whom:
    :mod:`nexus_otel.channels.executions`). Also lets the server's other workers ask this one."""
    executions.answer_peers(nexus)

    async def list_executions(request: Request) -> Response:
        values = request.query_params.getlist("inputs")
        if values and values != ["1"]:
            response = _error(400, "inputs must be 1 (with redacted inputs) or left out, got "
                              + ", ".join(repr(_clip(v)) for v in values))
        else:
            try:
                may_see = await executions.authorize(nexus, _caller(request), channel)
            except AccessError as exc:
                response = _access_denied(exc)
            else:
                if executions.asks_peers(nexus):  # waits for the other workers: off the event loop
                    body = await asyncio.to_thread(executions.gather, nexus, inputs=bool(values))
                else:
                    body = executions.gather(nexus, inputs=bool(values))
                body["executions"] = [e for e in body["executions"] if may_see(str(e.get("workflow")))]
                response = _JSON(body)
        response.headers["cache-control"] = "no-store"
        return response

    return list_executions


class _BodyTooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_http_app(nexus: Nexus, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                    manage_lifecycle: bool = True, threads: int | None = DEFAULT_THREADS) -> HttpTelemetryMiddleware:
    """The ASGI app for ``nexus``. With ``manage_lifecycle`` the server's lifespan starts and stops it.

    ``threads`` sizes the pool that runs sync workflows: the server loop's default executor,
    set as the server starts (None leaves the loop's own, ``min(32, cpus + 4)`` threads).
    """
    settings.number("max_body_bytes", max_body_bytes, minimum=1, integer=True)
    if threads is not None:
        settings.number("threads", threads, minimum=1, integer=True)

    async def run_workflow(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in nexus.workflows:
            extra: dict[str, Any] = {"workflow": _clip(name)}
            if not any(isinstance(m, AuthMiddleware) for m in nexus.middleware):
                extra["workflows"] = nexus.workflows.names()  # unauthenticated callers learn no names
            return _error(404, "unknown workflow", **extra)
        try:
            body = await _read_body(request, max_body_bytes)
        except _BodyTooLarge:
            return _error(413, f"request body over {max_body_bytes} bytes", workflow=name)
        try:
            inputs = json.loads(body) if body.strip() else {}
        except RecursionError:  # deeper than the parser goes
            return _error(400, f"body is nested more than {MAX_JSON_DEPTH} levels deep", workflow=name)
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"body is not valid JSON: {exc}", workflow=name)
        if _deeper_than(inputs, MAX_JSON_DEPTH):
            return _error(400, f"body is nested more than {MAX_JSON_DEPTH} levels deep", workflow=name)
        if not isinstance(inputs, dict):
            return _error(400, f"body must be a JSON object of inputs, got {type(inputs).__name__}",
                          workflow=name)
        session_id = request.headers.get(SESSION_HEADER)
        if session_id is None and isinstance(inputs.get("session_id"), str):
            session_id = inputs["session_id"]
        caller = _caller(request)
        try:
            result = await nexus.aexecute_workflow(
                name, inputs, session_id=session_id, channel=CHANNEL, caller=caller,
            )
        except AccessError as exc:
            return _access_denied(exc, workflow=name)
        except RateLimitExceeded as exc:
            response = _error(429, str(exc), workflow=name, retry_after=exc.retry_after)
            response.headers.update(caller.response_headers)
            response.headers["retry-after"] = str(exc.retry_after)
            return response
        except RecordsUnavailableError as exc:  # fail closed: no success without its records on disk
            response = _error(503, "records unavailable: this execution's records cannot be stored now",
                              workflow=name, ran=exc.ran, retry_after=exc.retry_after)
            response.headers["retry-after"] = str(exc.retry_after)
            return response
        except Exception as exc:
            error_type = c.error_type(exc)
            log.debug("workflow %r failed: %s", name, error_type)
            request.scope[ERROR_TYPE_KEY] = error_type  # the server span's error.type: the workflow's
            return _error(500, "workflow failed", workflow=name, error_type=error_type)
        response = _JSON({"result": result, "workflow": name, "trace_id": _trace_id()})
        response.headers.update(caller.response_headers)
        return response

    async def list_workflows(request: Request) -> Response:
        return _JSON({"workflows": [
            {"name": w.name, "description": w.description} for w in sorted(nexus.workflows, key=lambda w: w.name)
        ]})

    async def healthz(request: Request) -> Response:
        unwritable = nexus.records.unavailable()
        if unwritable:  # executions that need these records are refused: not healthy
            return _JSON({"status": "unhealthy", "service": nexus.telemetry.service_name, "started": nexus.started,
                          "records": unwritable}, status_code=503, headers={"retry-after": "5"})
        return _JSON({"status": "ok", "service": nexus.telemetry.service_name, "started": nexus.started})

    async def metrics(request: Request) -> Response:
        openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")
        if nexus.telemetry.worker_metrics is not None:  # asks the other workers: off the event loop
            body, content_type = await asyncio.to_thread(nexus.telemetry.prometheus_exposition, openmetrics)
        else:
            body, content_type = nexus.telemetry.prometheus_exposition(openmetrics=openmetrics)
        return Response(body, media_type=None, headers={"content-type": content_type})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _error(status, str(detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("unhandled %s on %s %s", c.error_type(exc), request.method, request.url.path)
        return _error(500, "internal error", error_type=c.error_type(exc))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if threads is not None:
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(threads, thread_name_prefix="nexus-otel-workflow"))
        if manage_lifecycle and not nexus.started:
            nexus.start()
        try:
            yield
        finally:
            if manage_lifecycle:
                nexus.stop()

    starlette = Starlette(
        routes=[
            Route("/workflows/{name}", run_workflow, methods=["POST"]),
            Route("/workflows", list_workflows, methods=["GET"]),
            Route(executions.ENDPOINT, executions_endpoint(nexus), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    return HttpTelemetryMiddleware(starlette, nexus.telemetry)
