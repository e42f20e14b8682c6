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
    def id(self) -> Handle:
        """The earlier name of :attr:`handle`."""
        return self.handle
