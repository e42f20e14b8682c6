"""What a webhook sender knows about each destination now: its concurrency limit, a hold, its breaker.

The delivery worker's view of each receiver, for people: the concurrency
limit it has adapted to, a hold a ``Retry-After`` asked for, and whether its
circuit is open after failures.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DestinationState:
    """One destination as the sender sees it now (``destination`` is the URL as configured: mask it to show it)."""

    destination: str
    limit: int
    """Requests it may have in flight now (the adaptive limit)."""
    ceiling: int
    """The most it may ever have in flight (``max_in_flight``)."""
    in_flight: int
    held_until: float | None = None
    """``time.time()`` until which no new attempt goes to it (a ``Retry-After``), or None."""
    hold_reason: str = ""
    breaker: str = "closed"
    """``closed`` (deliveries go), ``open`` (waiting for the next probe after failures)."""
    breaker_until: float | None = None
    """``time.time()`` of the next probe while the breaker is open."""
    failures: int = 0
    """Failed attempts in the current outage."""
    max_rate: float | None = None
    """Deliveries per second at most, if set."""
