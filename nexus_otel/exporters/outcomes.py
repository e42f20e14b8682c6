"""Counts of what a record sink did with its messages (queued, delivered, retried, failed), cheap to bump.

``add`` is called on the workflow's thread for every record (``queued``), so it
is a locked dict increment, not an SDK instrument call; the counts reach the
metric outputs as an observable counter read when metrics are collected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation


class OutcomeCounts:
    """Thread-safe counters by outcome; ``counts`` is the live dict (read it, do not write it)."""

    def __init__(self, outcomes: Iterable[str]) -> None:
        self.counts: dict[str, int] = {outcome: 0 for outcome in outcomes}
        self._lock = threading.Lock()

    def add(self, outcome: str, n: int = 1) -> None:
        with self._lock:
            self.counts[outcome] = self.counts.get(outcome, 0) + n

    def observe_as(self, meter: Meter, name: str, description: str) -> None:
        """Report the counts as the monotonic counter ``name`` with an ``outcome`` attribute."""
        meter.create_observable_counter(name, callbacks=[self._observe], unit="1", description=description)

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        with self._lock:
            items = list(self.counts.items())
        return [Observation(n, {"outcome": outcome}) for outcome, n in items]
