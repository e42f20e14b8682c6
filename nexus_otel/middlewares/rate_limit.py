"""Rate limiting as execution middleware, with the ``limits`` library doing the counting.

``limit`` executions per minute with bursts up to ``burst``: two moving
windows per key, ``burst`` per ``burst * 60 / limit`` seconds and ``limit``
per minute, which admits a burst at once and the limit's rate after it.
Storage is in memory by default, or Redis (``redis://...``) so several
replicas share one budget. A rejection raises
:class:`~nexus_otel.errors.RateLimitExceeded` (HTTP 429 with ``Retry-After``
and ``RateLimit-*`` headers), adds a ``rate_limited`` event to the workflow
span and is counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from ..errors import RateLimitExceeded
from ..execution_middleware import AsyncNext, Middleware, Next, WorkflowCall

KEYS = ("principal", "api_key", "client", "session")
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


class RateLimitMiddleware(Middleware):
    """Admits or rejects each call against its key's budget."""

    def __init__(self, limit: int, burst: int, *, key: str = "principal", per: str = "global",
                 storage: str = "memory://", namespace: str = "nexus-otel",
                 on_reject: Callable[[WorkflowCall, str], None] | None = None) -> None:
        self.limit = limit
        self.burst = burst
        self.key = key
        self.per = per
        self.namespace = namespace
        self.storage = storage_from_string(storage)
        self.remote = not storage.startswith("memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)
        self.items = limit_items(limit, burst)
        self._on_reject = on_reject or (lambda call, key_type: None)

    def identity(self, call: WorkflowCall) -> tuple[str, str]:
        """``(key_type, value)`` for this call: who shares a budget."""
        caller = call.caller
        if self.key == "principal" and call.event.principal is not None:
            return "principal", call.event.principal.id
        if self.key in ("principal", "api_key") and caller.api_key:
            return "api_key", hashlib.sha256(caller.api_key.encode()).hexdigest()[:32]
        if self.key == "session" and call.event.session_id:
            return "session", call.event.session_id
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
