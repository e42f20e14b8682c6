"""A message of the outbox, and its handle: how the outbox knows which message a worker acks, retries or releases.

A message is either a row of the outbox's table (:class:`RowHandle`, its row
id: what ``nexus-otel webhooks dead-letters`` lists and ``replay`` takes), or
one this outbox object enqueued and still holds in memory beside its journal
(:class:`LocalHandle`): the two are kept apart by type, and a handle is only
ever given back to the outbox object that leased it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UsageError


@dataclass(frozen=True, slots=True)
class RowHandle:
    """A message in the outbox's table, by its row id."""

    row: int

    def __str__(self) -> str:
        return str(self.row)


@dataclass(frozen=True, slots=True)
class LocalHandle:
    """A message this outbox object enqueued and holds in memory (in its journal, not yet in the table)."""

    key: int

    def __str__(self) -> str:
        return f"local:{self.key}"


Handle = RowHandle | LocalHandle


def as_handle(value: Handle | int) -> Handle:
    """A handle, also from the number an earlier version gave as ``Message.id`` (a row id above 0, a local
    message below it): code written against those keeps working."""
    if isinstance(value, (RowHandle, LocalHandle)):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value != 0:
        return RowHandle(value) if value > 0 else LocalHandle(-value)
    raise UsageError(f"not a message handle: {value!r} (give back the Message.handle the outbox gave)")


@dataclass(frozen=True, slots=True)
class Message:
    """One queued delivery, as leased (or read) from the outbox."""

    handle: Handle
    """What to give back to the outbox that leased it: :meth:`~.queue.Outbox.ack`, ``retry``, ..."""
    message_id: str
    destination: str
    payload: Any
    """The payload as enqueued, decoded from JSON."""
    attempts: int
    created_at: float
    last_error: str | None
    state: str
    """``pending`` or ``dead`` (a leased message is pending, with a lease)."""

    @property
    def id(self) -> int:
        """The number an earlier version gave: the row id for a row, below 0 for a local message (the outbox's
        operations take it back as they take :attr:`handle`)."""
        return self.handle.row if isinstance(self.handle, RowHandle) else -self.handle.key
