"""Authentication and authorization as execution middleware, on every channel.

The middleware takes the credentials the channel put on the call (never on
the event or a span), verifies them, checks the workflow's required scopes,
and records who was let in (``enduser.id``, ``enduser.scope`` on the workflow
span, ``event.principal`` for hooks). A rejection raises
:class:`~nexus_otel.errors.AuthenticationError` (HTTP 401) or
:class:`~nexus_otel.errors.AuthorizationError` (HTTP 403), counted by reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from ..caller import Principal
from ..errors import AccessError, AuthenticationError, AuthorizationError
from ..execution_middleware import AsyncNext, Middleware, Next, WorkflowCall

Verify = Callable[[WorkflowCall], Principal]


class AuthMiddleware(Middleware):
    """Lets a call through only with valid credentials and the scopes its workflow requires."""

    def __init__(self, verify: Verify, *, required_scopes: Mapping[str, frozenset[str]] | None = None,
                 default_scopes: frozenset[str] = frozenset(), channels: frozenset[str] | None = None,
                 blocking: bool = False, on_failure: Callable[[str, str], None] | None = None) -> None:
        self._verify = verify
        self.required_scopes = dict(required_scopes or {})
        self.default_scopes = default_scopes
        self.channels = channels
        self._blocking = blocking  # verification may fetch keys over the network
        self._on_failure = on_failure or (lambda reason, workflow: None)

    def _check(self, call: WorkflowCall) -> None:
        if self.channels is not None and call.event.channel not in self.channels:
            return
        try:
            principal = self._verify(call)
            required = self.required_scopes.get(call.name, self.default_scopes)
            missing = required - principal.scopes
            if missing:
                raise AuthorizationError(
                    "insufficient_scope",
                    f"workflow {call.name!r} requires scope(s) {' '.join(sorted(missing))}",
                    workflow=call.name,
                )
        except AccessError as exc:
            exc.workflow = call.name
            self._on_failure(exc.reason, call.name)
            raise
        call.event.principal = principal
        call.set_attribute("enduser.id", principal.id)
        if principal.scopes:
            call.set_attribute("enduser.scope", " ".join(sorted(principal.scopes)))
        call.set_attribute("nexus.auth.method", principal.method)

    def handle(self, call: WorkflowCall, call_next: Next) -> Any:
        self._check(call)
        return call_next(call)

    async def ahandle(self, call: WorkflowCall, call_next: AsyncNext) -> Any:
        if self._blocking:
            await asyncio.to_thread(self._check, call)
        else:
            self._check(call)
        return await call_next(call)


def bearer(verifier: Any) -> Verify:
    """A verify function for bearer JWTs."""

    def verify(call: WorkflowCall) -> Principal:
        token = call.caller.bearer_token
        if not token:
            raise AuthenticationError("missing", "a bearer token is required")
        return verifier.verify(token)[0]

    return verify


def api_key(store: Any) -> Verify:
    """A verify function for API keys (the ``X-API-Key`` header over HTTP)."""

    def verify(call: WorkflowCall) -> Principal:
        key = call.caller.api_key
        if not key:
            raise AuthenticationError("missing", "an API key is required")
        return store.verify(key)

    return verify
