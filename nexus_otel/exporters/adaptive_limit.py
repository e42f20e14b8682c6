"""How many requests one receiver may have in flight: found by asking, as TCP finds a path's window.

A receiver says what it can take only by how it answers. This limit starts
small and learns it, per destination, from each answer:

- **Slow start**: each clean, timely answer adds one (the limit doubles per
  round trip) until the first sign of overload or of a queue forming.
- **Additive increase**: then one more per round trip's worth of answers.
- **Multiplicative decrease**: an overload signal (a 429 or 503, a refused or
  reset connection, a connect or answer timeout, a connection that was slow to
  be accepted) cuts the limit to 70 %, at most once per round trip, so the
  requests already in flight when the receiver filled up count as one signal.
- **Plateau**: after a cut, growth slows to an eighth near the limit where
  the overload came, so a receiver with a fixed capacity (a pool of four
  workers answering 503 beyond it) is probed above it rarely, not every few
  answers; a plateau passed without overload is forgotten.
- **Queueing**: an answer that took more than twice the destination's usual
  answer time (the least seen, following slower answers over about ten
  seconds) plus 10 ms is not clean: it does not grow
  the limit, and a run of them shrinks it by one per round trip, so a
  receiver that queues requests internally is not fed more than it serves.

This is TCP's congestion control (Reno's AIMD with slow start, CUBIC's
plateau, Vegas' queueing signal) applied to requests, as Netflix's
concurrency-limits and Envoy's adaptive concurrency do; ``docs/records.md``
explains the choice. ``ceiling`` (``max_in_flight``) is never passed.
"""

from __future__ import annotations

from ..errors import ConfigurationError

INITIAL = 4
"""Requests in flight to a destination before anything is known of it."""
CUT = 0.7
"""The limit after an overload signal, as a share of what it was."""
PLATEAU_SLOWDOWN = 8
"""Near the last overload, growth is this many times slower."""
QUEUE_FACTOR = 2.0
QUEUE_SLACK = 0.010
"""An answer slower than ``QUEUE_FACTOR`` times the usual answer time plus this (seconds) shows a queue."""
BASELINE_DRIFT = 10.0
"""Seconds over which the usual answer time follows answers that stay slower: a receiver that became slower
for good is learnt in about this long, while a queue that forms is seen as one well within it."""


class AdaptiveLimit:
    """One destination's concurrency limit; its methods are called as requests start and end (one thread)."""

    def __init__(self, ceiling: int, initial: int = INITIAL) -> None:
        if ceiling < 1:
            raise ConfigurationError("ceiling", ceiling, "at least 1")
        self.ceiling = ceiling
        self.limit = float(min(max(1, initial), ceiling))
        self.slow_start = True
        self.plateau: float | None = None
        """The limit at the last overload, while growth is slow near it."""
        self.baseline: float | None = None
        """The usual answer time (seconds): the least seen, drifting up slowly toward slower answers."""
        self._recovering_until = 0.0  # no second cut before this (time.monotonic())
        self._baseline_at = 0.0  # when the usual answer time last moved
        self.cuts = 0

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now."""
        return max(1, int(self.limit))

    def answered(self, seconds: float, in_flight: int, now: float) -> None:
        """A clean answer (a 2xx, or a final 3xx/4xx) that took ``seconds``; ``in_flight`` others are still out.

        Growth only while the limit is in use (``in_flight`` near it): a limit that was
        never reached says nothing about the receiver.
        """
        baseline = self.baseline
        if baseline is None or seconds < baseline:
            self.baseline = baseline = seconds
            self._baseline_at = now
        else:
            share = min(1.0, max(0.0, now - self._baseline_at) / BASELINE_DRIFT)
            self.baseline = baseline + (seconds - baseline) * share
            self._baseline_at = now
        if seconds > QUEUE_FACTOR * baseline + QUEUE_SLACK:
            self.slow_start = False  # a queue is forming: stop growing, and drain it slowly
            self.limit = max(1.0, self.limit - 1.0 / self.limit)
            return
        if in_flight + 1 < self.allowed // 2:
            return
        if self.slow_start:
            self.limit = min(float(self.ceiling), self.limit + 1.0)
            return
        step = 1.0 / self.limit
        plateau = self.plateau
        if plateau is not None:
            if self.limit >= plateau + 1.0:
                self.plateau = None  # past the old overload without a new one: the receiver can take more now
            elif self.limit >= plateau - 1.0:
                step /= PLATEAU_SLOWDOWN
        self.limit = min(float(self.ceiling), self.limit + step)

    def overloaded(self, now: float, round_trip: float | None = None) -> bool:
        """An overload signal; cuts the limit unless it was cut within the last round trip. True if it cut."""
        if now < self._recovering_until:
            return False
        self.slow_start = False
        self.plateau = self.limit
        self.limit = max(1.0, self.limit * CUT)
        self.cuts += 1
        wait = round_trip if round_trip is not None else (self.baseline or 0.0)
        self._recovering_until = now + max(0.05, 2 * wait)
        return True
