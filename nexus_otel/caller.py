"""Who is calling: the credentials and address a channel saw, for auth and rate-limit middleware.

The credentials are secret: they are never put on the event, a span, a log
record or an error, and ``repr`` hides them. Middleware may leave response
headers for the channel to send (for example ``RateLimit-Remaining``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class Caller:
    """What a channel knows about the caller of one execution."""

    bearer_token: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    client_address: str | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The request's headers, as the channel received them (none for a Python call), for middleware that is
    told to trust one (``RateLimitPlugin(key_header=...)``); they include the credentials, so never record them."""

    def __repr__(self) -> str:
        has = [name for name, value in (("bearer_token", self.bearer_token), ("api_key", self.api_key)) if value]
        return f"Caller(credentials={has or 'none'}, client_address={self.client_address!r})"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an execution runs for, once authenticated: safe to record (no secrets)."""

    id: str
    scopes: frozenset[str] = frozenset()
    method: str = ""
    """How they were authenticated: ``oauth2``, ``oidc``, ``jwt`` or ``api_key``."""
