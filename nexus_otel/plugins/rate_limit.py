"""``RateLimitPlugin``: Kailash Nexus's plugin API's rate limiter, ``limit`` per minute, bursts up to ``burst``.

Keyed by ``principal`` (the caller ``AuthPlugin`` verified; add it first),
``api_key`` (the API key ``AuthPlugin`` verified), ``client`` address or
``session`` (within the verified caller), counted ``global``-ly or per
``workflow``. Without a verified caller the budget is the client address: an
unverified ``X-API-Key`` never selects a budget, or rotating it would be a
fresh budget per request. ``key_header="X-Tenant"`` names a header the
deployment trusts (set by a gateway that authenticated the caller, and
removed from what callers send): its value, when present, is the budget.
Behind a proxy the client address is the proxy's unless
``serve --forwarded-allow-ips`` trusts it for ``X-Forwarded-For``.
``storage="redis://host:6379"`` shares the budget between replicas and
between the workers of ``serve --workers N`` (where memory storage, per
process, fails at start rather than admit N times the limit).
Settings may be constructor arguments or attributes set before ``add_plugin``,
as in Kailash Nexus's plugin API; bad values fail at setup naming them.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .. import settings
from ..errors import ConfigurationError
from ..middlewares.auth import AuthMiddleware
from ..middlewares.rate_limit import KEYS, SCOPES, RateLimitMiddleware, effective_burst
from ..plugin_base import NexusPlugin

log = logging.getLogger("nexus_otel.ratelimit")
MEMORY_SCHEMES = ("memory:", "async+memory:")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""A header field name (RFC 9110's token)."""


class RateLimitPlugin(NexusPlugin):
    """Turns away callers over their budget with HTTP 429 (or ``RateLimitExceeded``)."""

    name = "rate_limit"
    version = "1.0.0"

    def __init__(self, limit: int = 1000, burst: int = 100, *, key: str = "principal", per: str = "global",
                 storage: str = "memory://", key_header: str | None = None) -> None:
        self.limit = limit
        self.burst = burst
        self.key = key
        self.per = per
        self.storage = storage
        self.key_header = key_header
        self.middleware: RateLimitMiddleware | None = None

    def setup(self, nexus_app: Any) -> None:
        limit = int(settings.number("RateLimitPlugin.limit", self.limit, minimum=1, integer=True))
        burst = int(settings.number("RateLimitPlugin.burst", self.burst, minimum=1, integer=True))
        key = settings.choice("RateLimitPlugin.key", self.key, KEYS)
        per = settings.choice("RateLimitPlugin.per", self.per, SCOPES)
        if not isinstance(self.storage, str):
            raise ConfigurationError("RateLimitPlugin.storage", self.storage, "a storage URI such as memory:// "
                                     "or redis://127.0.0.1:6379")
        key_header = self.key_header
        if key_header is not None and not (isinstance(key_header, str) and HEADER_NAME.fullmatch(key_header)):
            raise ConfigurationError("RateLimitPlugin.key_header", key_header,
                                     "a header name such as \"X-Tenant\" that your proxy sets (or None)")
        workers = nexus_app.telemetry.config.workers
        if workers > 1 and self.storage.strip().lower().startswith(MEMORY_SCHEMES):
            # Each worker process would count alone and admit the whole limit: N times the limit, silently.
            raise ConfigurationError(
                "RateLimitPlugin.storage", self.storage,
                f"a storage the {workers} workers share, such as storage=\"redis://127.0.0.1:6379\" (memory "
                f"storage is per process: {workers} workers would admit {workers} times the limit)")
        counter = nexus_app.telemetry.meter.create_counter(
            "nexus.ratelimit.rejections", unit="1", description="Executions turned away by the rate limit.")

        def count(call: Any, key_type: str) -> None:
            counter.add(1, {"workflow": call.name, "key_type": key_type})

        try:
            middleware = RateLimitMiddleware(limit, burst, key=key, per=per, storage=self.storage,
                                             key_header=key_header, on_reject=count)
        except Exception as exc:  # limits raises its own errors for bad URIs or missing drivers
            raise ConfigurationError("RateLimitPlugin.storage", self.storage,
                                     f"a storage URI limits understands ({type(exc).__name__}: {exc})") from exc
        try:
            reachable = middleware.storage.check()
        except Exception:
            reachable = False
        if not reachable:
            raise ConfigurationError("RateLimitPlugin.storage", self.storage, "a storage that answers now")
        if effective_burst(limit, burst) != burst:
            log.warning("RateLimitPlugin: burst=%d is less than one second's worth of limit=%d/min; "
                        "bursts of %d are allowed", burst, limit, effective_burst(limit, burst))
        if key == "api_key" and not any(isinstance(m, AuthMiddleware) for m in nexus_app.middleware):
            log.warning("RateLimitPlugin: key='api_key' but no AuthPlugin runs before it; an unverified X-API-Key "
                        "never selects a budget, so each client address has one (add AuthPlugin first)")
        self.middleware = middleware
        nexus_app.use(self.middleware)
