"""A result cache as execution middleware: TTL, size bound, single flight, observable.

The key is the workflow name and the inputs in canonical JSON (sorted keys),
hashed. A hit returns early, so the workflow function does not run, but the
workflow span, the hooks and the metrics still see the execution, marked with
``nexus.cache.hit``. Failed executions are never cached. While one caller
computes a missing key, other callers of the same key wait for it instead of
running the function again (single flight); if the first caller fails, the
next one tries itself. Results are deep-copied on the way in and out by
default, so no caller can change what another receives.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..execution_middleware import AsyncNext, Middleware, Next, WorkflowCall

HIT_ATTRIBUTE = "nexus.cache.hit"


class CacheMiddleware(Middleware):
    """``app.use(CacheMiddleware(ttl=300))``: caches successful results per workflow and inputs."""

    def __init__(self, ttl: float = 300.0, *, max_entries: int = 1024, workflows: frozenset[str] | None = None,
                 copy_results: bool = True, clock: Callable[[], float] = time.monotonic,
                 on_lookup: Callable[[str, bool], None] | None = None) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.workflows = workflows
        self.copy_results = copy_results
        self._clock = clock
        self._on_lookup = on_lookup
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._inflight: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    # -- keys and entries ------------------------------------------------------
    def key(self, call: WorkflowCall) -> str | None:
        """The cache key, or None when the inputs have no canonical JSON form (then: no caching)."""
        if self.workflows is not None and call.name not in self.workflows:
            return None
        try:
            text = json.dumps({"workflow": call.name, "inputs": call.inputs}, sort_keys=True,
                              separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            return None
        return hashlib.sha256(text.encode()).hexdigest()

    def _get(self, key: str) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def _put(self, key: str, value: Any) -> None:
        self._entries[key] = (self._clock() + self.ttl, self._copy(value))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _copy(self, value: Any) -> Any:
        return copy.deepcopy(value) if self.copy_results else value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- lookup protocol shared by both paths ------------------------------------
    def _claim(self, key: str) -> tuple[str, Any]:
        """("hit", value) | ("lead", future) | ("wait", future)."""
        with self._lock:
            found, value = self._get(key)
            if found:
                return "hit", value
            future = self._inflight.get(key)
            if future is not None:
                return "wait", future
            future = Future()
            self._inflight[key] = future
            return "lead", future

    def _finish(self, key: str, future: Future[Any], ok: bool, value: Any = None) -> None:
        with self._lock:
            if ok:
                self._put(key, value)
            self._inflight.pop(key, None)
        future.set_result(ok)

    def _mark(self, call: WorkflowCall, hit: bool) -> None:
        call.set_attribute(HIT_ATTRIBUTE, hit)
        call.event.attributes["cache_hit"] = hit
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
        if self._on_lookup is not None:
            self._on_lookup(call.name, hit)

    # -- the two paths ------------------------------------------------------------
    def handle(self, call: WorkflowCall, call_next: Next) -> Any:
        key = self.key(call)
        if key is None:
            return call_next(call)
        while True:
            state, obj = self._claim(key)
            if state == "hit":
                self._mark(call, True)
                return self._copy(obj)
            if state == "wait":
                obj.result()  # the leader finished (either way); look again
                continue
            self._mark(call, False)
            try:
                result = call_next(call)
            except BaseException:
                self._finish(key, obj, False)
                raise
            self._finish(key, obj, True, result)
            return result

    async def ahandle(self, call: WorkflowCall, call_next: AsyncNext) -> Any:
        key = self.key(call)
        if key is None:
            return await call_next(call)
        while True:
            state, obj = self._claim(key)
            if state == "hit":
                self._mark(call, True)
                return self._copy(obj)
            if state == "wait":
                await asyncio.wrap_future(obj)
                continue
            self._mark(call, False)
            try:
                result = await call_next(call)
            except BaseException:
                self._finish(key, obj, False)
                raise
            self._finish(key, obj, True, result)
            return result
