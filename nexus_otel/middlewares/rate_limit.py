"""Rate limiting as execution middleware, with the ``limits`` library doing the counting.

``limit`` executions per minute with bursts up to ``burst``: two moving
windows per key, ``burst`` per ``burst * 60 / limit`` seconds and ``limit``
per minute, which admits a burst at once and the limit's rate after it.
Storage is in memory by default, or Redis (``redis://...``) so several
replicas share one budget. A rejection raises
:class:`~nexus_otel.errors.RateLimitExceeded` (HTTP 429 with ``Retry-After``
and ``RateLimit-*`` headers), adds a ``rate_limited`` event to the workflow
span and is counted.

Who shares a budget is decided by what was verified, never by what a caller
merely claims: the principal ``AuthMiddleware`` let in (run it first), else
the client's address. An unverified credential (an ``X-API-Key`` nobody
checked) never selects a budget, or rotating it would buy a fresh budget per
request. A header the deployment vouches for (a tenant header set by a
gateway that authenticated the caller) may be named with ``key_header``: its
value is trusted as the caller's identity.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..errors import RateLimitExceeded
from ..execution_middleware import AsyncNext, Middleware, Next, WorkflowCall

KEYS = ("principal", "api_key", "client", "session")
"""``principal``: the verified principal; ``api_key``: the verified API key (one principal may hold
several); ``client``: the client address; ``session``: the session id, within the caller's verified
identity. Each falls back to the client address when there is nothing verified to key by."""
SCOPES = ("global", "workflow")


def limit_items(limit: int, burst: int) -> tuple[Any, Any]:
    """The burst window and the per-minute window.

    The burst window is ``burst`` per ``floor(burst * 60 / limit)`` seconds
    (windows are whole seconds), so never more than ``burst`` calls pass at
    once; the per-minute window holds the long-run rate to ``limit``. Only
    when ``burst`` is below one second's worth of ``limit`` is the burst raised
    to that (see :func:`effective_burst`).
    """
    window = max(1, math.floor(burst * 60 / limit))
    return RateLimitItemPerSecond(effective_burst(limit, burst), window), RateLimitItemPerMinute(limit)


def effective_burst(limit: int, burst: int) -> int:
    """``burst``, or one second's worth of ``limit`` if that is more."""
    return max(burst, math.ceil(limit / 60)) if burst * 60 < limit else burst


def _digest(value: str) -> str:
    """A stand-in for a value that may be secret (a key) or personal: the same budget, nothing readable."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` (lower case) from a channel's headers, whatever case they were given in."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value.strip() if value else None


class RateLimitMiddleware(Middleware):
    """Admits or rejects each call against its key's budget."""

    def __init__(self, limit: int, burst: int, *, key: str = "principal", per: str = "global",
                 storage: str = "memory://", namespace: str = "nexus-otel", key_header: str | None = None,
                 on_reject: Callable[[WorkflowCall, str], None] | None = None) -> None:
        self.limit = limit
        self.burst = burst
        self.key = key
        self.key_header = key_header.lower() if key_header else None
        self.per = per
        self.namespace = namespace
        self.storage = storage_from_string(storage)
        self.remote = not storage.startswith("memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.items = limit_items(limit, burst)
        self._on_reject = on_reject or (lambda call, key_type: None)

    def identity(self, call: WorkflowCall) -> tuple[str, str]:
        """``(key_type, value)`` for this call: who shares a budget, from what was verified only."""
        caller = call.caller
        if self.key_header:
            trusted = _header(caller.headers, self.key_header)
            if trusted:
                return "header", _digest(trusted)
        principal = call.event.principal
        if self.key == "session" and call.event.session_id:
            # Within the verified caller: a session id (the caller's choice) never reaches another's budget.
            who = f"principal:{principal.id}" if principal is not None else f"client:{caller.client_address}"
            return "session", _digest(f"{who}\n{call.event.session_id}")
        if principal is not None and self.key in ("principal", "api_key"):
            if self.key == "api_key" and principal.method == "api_key" and caller.api_key:
                return "api_key", _digest(caller.api_key)  # verified by the auth middleware before us
            return "principal", principal.id
        if caller.client_address:
            return "client", caller.client_address
        return "anonymous", "-"

    def _admit(self, call: WorkflowCall) -> None:
        key_type, value = self.identity(call)
        ids = [self.namespace, key_type, value] + ([call.name] if self.per == "workflow" else [])
        burst_item, minute_item = self.items
        ok = (self.limiter.test(minute_item, *ids) and self.limiter.hit(burst_item, *ids)
              and self.limiter.hit(minute_item, *ids))
        now = time.time()
        stats = [(item, self.limiter.get_window_stats(item, *ids)) for item in self.items]
        item, tightest = min(stats, key=lambda s: s[1].remaining)
        reset = max(0, math.ceil(tightest.reset_time - now))
        headers = {
            "RateLimit-Limit": str(item.amount),
            "RateLimit-Remaining": str(max(0, tightest.remaining)),
            "RateLimit-Reset": str(reset),
        }
        call.caller.response_headers.update(headers)
        if ok:
            return
        retry_after = max(1, reset)
        call.span.add_event("rate_limited", {"nexus.ratelimit.key_type": key_type,
                                             "nexus.ratelimit.limit": item.amount,
                                             "nexus.ratelimit.retry_after": retry_after})
        self._on_reject(call, key_type)
        raise RateLimitExceeded(call.name, limit=item.amount, remaining=0, reset=float(reset),
                                retry_after=retry_after)

    def handle(self, call: WorkflowCall, call_next: Next) -> Any:
        self._admit(call)
        return call_next(call)

    async def ahandle(self, call: WorkflowCall, call_next: AsyncNext) -> Any:
        if self.remote:  # a network round trip: not on the event loop
            await asyncio.to_thread(self._admit, call)
        else:
            self._admit(call)
        return await call_next(call)
