"""One sink's part of an outbox: what the outbox's operations are, and a view that scopes them.

The built-in durable sinks share one outbox (one write per execution): the
local one (:class:`~.queue.Outbox`) or the shared one in PostgreSQL
(:class:`~.postgres.PostgresOutbox`). Both answer to :class:`Queue`; a sink
sees its own messages through an :class:`OutboxView`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from .message import Handle, Message, RowHandle
from .scope import Scope
from .writable import Writability

DEFAULT_LEASE = 60.0
"""Seconds a leased message is kept from other workers (longer than any one delivery takes)."""


class Queue(Protocol):
    """The operations of an outbox (see :class:`~.queue.Outbox` for what each does)."""

    path: Any
    """Its file, or what logs and errors call it."""
    writable: Writability

    def enqueue(self, items: Iterable[tuple[str, str, Any]], *, required: bool = True) -> int: ...
    def defer(self) -> bool: ...
    def commit_deferred(self) -> int: ...
    def view(self, scope: Scope) -> OutboxView: ...
    def due(self, limit: int = 100, now: float | None = None, scope: Scope = ...) -> list[Message]: ...
    def lease(self, limit: int = 100, lease: float = DEFAULT_LEASE, scope: Scope = ...) -> list[Message]: ...
    def release(self, handles: Sequence[Handle | int]) -> None: ...
    def release_orphans(self, scope: Scope = ...) -> int: ...
    def next_due_in(self, scope: Scope = ...) -> float | None: ...
    def ack(self, handles: Sequence[Handle | int]) -> None: ...
    def retry(self, handle: Handle | int, delay: float, error: str) -> None: ...
    def hold(self, destination: str, until: float) -> int: ...
    def dead_letter(self, handle: Handle | int, error: str) -> None: ...
    def dead_letters(self, limit: int = 1000, scope: Scope = ...) -> list[Message]: ...
    def replay(self, ids: Sequence[int | RowHandle] | None = None, scope: Scope = ...) -> int: ...
    def counts(self, scope: Scope = ...) -> dict[str, int]: ...
    def oldest_age(self, scope: Scope = ...) -> float | None: ...
    def left(self, scope: Scope = ...) -> int: ...
    def close(self) -> None: ...


class OutboxView:
    """One sink's part of an outbox shared by several sinks: enqueues go to the queue, reads and leases see only
    its scope."""

    def __init__(self, outbox: Queue, scope: Scope) -> None:
        self.outbox = outbox
        self.scope = scope
        self.path = outbox.path

    def enqueue(self, items: Iterable[tuple[str, str, Any]], *, required: bool = True) -> int:
        return self.outbox.enqueue(items, required=required)

    def due(self, limit: int = 100, now: float | None = None) -> list[Message]:
        return self.outbox.due(limit, now, self.scope)

    def lease(self, limit: int = 100, lease: float = DEFAULT_LEASE) -> list[Message]:
        return self.outbox.lease(limit, lease, self.scope)

    def release(self, handles: Sequence[Handle | int]) -> None:
        self.outbox.release(handles)

    def release_orphans(self) -> int:
        return self.outbox.release_orphans(self.scope)

    def next_due_in(self) -> float | None:
        return self.outbox.next_due_in(self.scope)

    def ack(self, handles: Sequence[Handle | int]) -> None:
        self.outbox.ack(handles)

    def retry(self, handle: Handle | int, delay: float, error: str) -> None:
        self.outbox.retry(handle, delay, error)

    def hold(self, destination: str, until: float) -> int:
        return self.outbox.hold(destination, until)

    def dead_letter(self, handle: Handle | int, error: str) -> None:
        self.outbox.dead_letter(handle, error)

    def dead_letters(self, limit: int = 1000) -> list[Message]:
        return self.outbox.dead_letters(limit, self.scope)

    def replay(self, ids: Sequence[int | RowHandle] | None = None) -> int:
        return self.outbox.replay(ids, self.scope)

    def counts(self) -> dict[str, int]:
        return self.outbox.counts(self.scope)

    def oldest_age(self) -> float | None:
        return self.outbox.oldest_age(self.scope)

    def left(self) -> int:
        return self.outbox.left(self.scope)

    def close(self) -> None:
        self.outbox.close()

    put, claim, delivered, dead = enqueue, lease, ack, dead_letter  # the earlier names
