"""``CachingPlugin``: the caching example of Kailash Nexus's plugin API, rebuilt as execution middleware.

No monkeypatching of ``execute_workflow``: the plugin adds a
:class:`~nexus_otel.middlewares.cache.CacheMiddleware`, so a cache hit is still
a workflow execution with its span (``nexus.cache.hit=true``), hooks and
metrics, and counters ``nexus_cache_hits_total`` / ``nexus_cache_misses_total``
per workflow show how well it works.
"""

from __future__ import annotations

from typing import Any

from .. import settings
from ..errors import PluginNotSetUpError
from ..middlewares.cache import CacheMiddleware
from ..plugin_base import NexusPlugin


class CachingPlugin(NexusPlugin):
    """Caches successful workflow results for ``ttl`` seconds (at most ``max_entries``)."""

    name = "caching"
    version = "1.0.0"

    def __init__(self, ttl: float = 300, *, max_entries: int = 1024, workflows: Any = None,
                 copy_results: bool = True) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.workflows = workflows
        self.copy_results = copy_results
        self.middleware: CacheMiddleware | None = None

    def setup(self, nexus_app: Any) -> None:
        ttl = settings.number("CachingPlugin.ttl", self.ttl, strictly_positive=True)
        size = settings.number("CachingPlugin.max_entries", self.max_entries, minimum=1, integer=True)
        only = settings.names("CachingPlugin.workflows", self.workflows)
        meter = nexus_app.telemetry.meter
        hits = meter.create_counter("nexus.cache.hits", unit="1", description="Workflow cache hits.")
        misses = meter.create_counter("nexus.cache.misses", unit="1", description="Workflow cache misses.")

        def count(workflow: str, hit: bool) -> None:
            (hits if hit else misses).add(1, {"workflow": workflow})

        self.middleware = CacheMiddleware(float(ttl), max_entries=int(size), workflows=only,
                                          copy_results=bool(self.copy_results), on_lookup=count)
        nexus_app.use(self.middleware)

    @property
    def cache(self) -> CacheMiddleware:
        if self.middleware is None:
            raise PluginNotSetUpError(self.name, "CachingPlugin is not set up yet: add it to an app first")
        return self.middleware

    def clear_cache(self) -> None:
        """Forget every cached result."""
        if self.middleware is not None:
            self.middleware.clear()

    def stats(self) -> dict[str, int]:
        m = self.middleware
        return {"hits": m.hits if m else 0, "misses": m.misses if m else 0, "entries": len(m) if m else 0}
