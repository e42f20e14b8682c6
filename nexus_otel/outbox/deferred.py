"""One execution's enqueues, held on its thread until every sink has given its own: then written once.

The app's record pipeline calls ``defer()`` on each outbox before an
execution's sinks run and ``commit_deferred()`` after: the webhook and the
audit row of one execution are one journal line (local outbox) or one commit
(shared outbox), not one each.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol


class Deferred:
    """This thread's held enqueues, per outbox object; safe to share between threads (each sees its own)."""

    def __init__(self) -> None:
        self._held = threading.local()

    def start(self) -> bool:
        """Hold this thread's enqueues from now on; false if they are held already."""
        if getattr(self._held, "items", None) is not None:
            return False
        self._held.items = []
        self._held.required = False
        return True

    def hold(self, batch: list[tuple[str, str, Any]], required: bool) -> bool:
        """Keep ``batch`` if this thread's enqueues are held (true), else leave it to be written now (false)."""
        items = getattr(self._held, "items", None)
        if items is None:
            return False
        items.extend(batch)
        if required:
            self._held.required = True
        return True

    def take(self) -> tuple[list[tuple[str, str, Any]], bool]:
        """What was held, and whether any of it was required; holding ends."""
        items, self._held.items = self._held.items or [], None
        return items, self._held.required


class _Enqueues(Protocol):
    _deferred: Deferred

    def enqueue(self, items: list[tuple[str, str, Any]], *, required: bool = True) -> int: ...


class DeferredEnqueues:
    """``defer`` and ``commit_deferred`` for an outbox whose ``enqueue`` holds a batch while :attr:`_deferred`
    says so (:meth:`Deferred.hold`)."""

    def defer(self: _Enqueues) -> bool:
        """Hold this thread's enqueues until :meth:`commit_deferred` (one write for all); false if already held."""
        return self._deferred.start()

    def commit_deferred(self: _Enqueues) -> int:
        """Write what this thread enqueued since :meth:`defer`, as ``enqueue`` does (required if any was)."""
        items, required = self._deferred.take()
        return self.enqueue(items, required=required) if items else 0
