"""``RateLimitPlugin``: Kailash Nexus's plugin API's rate limiter, ``limit`` per minute, bursts up to ``burst``.

Keyed by ``principal`` (the authenticated caller; add ``AuthPlugin`` first),
``api_key``, ``client`` address or ``session``, counted ``global``-ly or per
``workflow``. ``storage="redis://host:6379"`` shares the budget between
replicas and between the workers of ``serve --workers N`` (where memory
storage, per process, fails at start rather than admit N times the limit).
Settings may be constructor arguments or attributes set before ``add_plugin``,
as in Kailash Nexus's plugin API; bad values fail at setup naming them.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import settings
from ..errors import ConfigurationError
from ..middlewares.rate_limit import KEYS, SCOPES, RateLimitMiddleware, effective_burst
from ..plugin_base import NexusPlugin

log = logging.getLogger("nexus_otel.ratelimit")
MEMORY_SCHEMES = ("memory:", "async+memory:")


class RateLimitPlugin(NexusPlugin):
    """Turns away callers over their budget with HTTP 429 (or ``RateLimitExceeded``)."""

    name = "rate_limit"
    version = "1.0.0"

    def __init__(self, limit: int = 1000, burst: int = 100, *, key: str = "principal", per: str = "global",
                 storage: str = "memory://") -> None:
        self.limit = limit
        self.burst = burst
        self.key = key
        self.per = per
        self.storage = storage
        self.middleware: RateLimitMiddleware | None = None

    def setup(self, nexus_app: Any) -> None:
        limit = int(settings.number("RateLimitPlugin.limit", self.limit, minimum=1, integer=True))
        burst = int(settings.number("RateLimitPlugin.burst", self.burst, minimum=1, integer=True))
        key = settings.choice("RateLimitPlugin.key", self.key, KEYS)
        per = settings.choice("RateLimitPlugin.per", self.per, SCOPES)
        if not isinstance(self.storage, str):
            raise ConfigurationError("RateLimitPlugin.storage", self.storage, "a storage URI such as memory:// "
                                     "or redis://127.0.0.1:6379")
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
                                             on_reject=count)
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
        self.middleware = middleware
        nexus_app.use(self.middleware)
