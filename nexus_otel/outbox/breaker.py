"""A destination's circuit breaker: what an outage costs is one probe at a time, and two log lines.

After a retryable failure a destination's circuit opens: its other due
messages wait (their attempts are not spent) while single probes back off,
and the log gets one line when the outage starts and one when it ends. A
receiver that asks for a pause (``Retry-After`` with a 429 or 503) holds its
destination until then, without breaking it. Destinations are logged with
their credentials and secret query values masked (:func:`~nexus_otel.urls.mask_url`).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from ..urls import mask_url

log = logging.getLogger("nexus_otel.outbox")

@dataclass(frozen=True, slots=True)
class BreakerState:
    """One destination's breaker as people see it: when its next probe may go (None: closed), a hold, failures."""

    open_until: float | None = None
    failures: int = 0
    held_until: float | None = None
    hold_reason: str = ""


@dataclass(slots=True)
class _Hold:
    until: float
    reason: str
    since: float
    held: int = 0


@dataclass(slots=True)
class _Circuit:
    """One destination's breaker: open after a failure, probed with single messages while it backs off."""

    failures: int = 0
    open_until: float = 0.0  # time.time() at which the next probe may go
    since: float = 0.0
    held: int = 0
    error: str = ""


@dataclass
class CircuitBreaker:
    """Per-destination outage handling: a few probes a second at most, and two log lines per outage.

    After a retryable failure the destination's circuit opens for
    ``base * 2**k`` seconds (capped at ``cap``): its other due messages are
    postponed without spending an attempt, then one message probes it. A
    success closes the circuit.
    """

    base: float = 0.5
    cap: float = 30.0
    name: str = "outbox"
    logger: logging.Logger = field(default=log)
    _circuits: dict[str, _Circuit] = field(default_factory=dict)
    _up: set[str] = field(default_factory=set)  # destinations whose last attempt was delivered
    _holds: dict[str, _Hold] = field(default_factory=dict)  # pauses receivers asked for (Retry-After)

    def is_up(self, destination: str) -> bool:
        """True if the last attempt to ``destination`` was delivered (new and failing ones are probed first)."""
        return destination in self._up

    def is_open(self, destination: str, now: float) -> bool:
        """True while no attempt may go to ``destination``: its circuit is open, or it is held."""
        circuit = self._circuits.get(destination)
        if circuit is not None and now < circuit.open_until:
            return True
        hold = self._holds.get(destination)
        if hold is None:
            return False
        if now < hold.until:
            return True
        self._end_hold(destination, now)
        return False

    def hold(self, destination: str, until: float, reason: str, now: float) -> None:
        """The receiver asked for a pause (``Retry-After``): no attempt to it before ``until``; others go on.

        One log line when a hold starts (not one per answer that asks for it), one when it ends.
        """
        hold = self._holds.get(destination)
        if hold is None:
            self._holds[destination] = _Hold(until, reason, now)
            self.logger.warning("%s: %s asked for a pause: held until %s, %.1f s (%s); other destinations go on",
                                self.name, mask_url(destination), time.strftime("%H:%M:%S", time.localtime(until)),
                                until - now, reason)
        elif until > hold.until:
            hold.until, hold.reason = until, reason

    def _end_hold(self, destination: str, now: float) -> None:
        hold = self._holds.pop(destination)
        self.logger.warning("%s: %s: hold over after %.1f s (%d attempts held back)", self.name,
                            mask_url(destination), now - hold.since, hold.held)

    def state(self, destination: str, now: float) -> BreakerState:
        """``destination``'s breaker now."""
        circuit = self._circuits.get(destination)
        hold = self._holds.get(destination)
        open_until = circuit.open_until if circuit is not None and circuit.open_until > now else None
        if hold is None or hold.until <= now:
            return BreakerState(open_until, circuit.failures if circuit else 0)
        return BreakerState(open_until, circuit.failures if circuit else 0, hold.until, hold.reason)

    def failed(self, destination: str, error: str, now: float) -> float:
        """A retryable failure; returns when the next probe may go."""
        self._up.discard(destination)
        circuit = self._circuits.get(destination)
        if circuit is None:
            circuit = self._circuits[destination] = _Circuit(since=now, error=error)
            self.logger.warning("%s: %s is unavailable (%s); deliveries to it wait and are retried with backoff",
                                self.name, mask_url(destination), error)
        circuit.failures += 1
        circuit.error = error
        backoff = min(self.cap, self.base * (2 ** min(circuit.failures - 1, 30)))
        circuit.open_until = now + backoff / 2 + random.uniform(0, backoff / 2)
        return circuit.open_until

    def open_circuits(self, now: float) -> list[tuple[str, float]]:
        """``(destination, next attempt time)`` for every destination whose circuit is open or that is held."""
        until = {dest: c.open_until for dest, c in self._circuits.items() if c.open_until > now}
        for dest, hold in self._holds.items():
            if hold.until > now:
                until[dest] = max(until.get(dest, 0.0), hold.until)
        return list(until.items())

    def held(self, destination: str, n: int) -> None:
        circuit = self._circuits.get(destination)
        if circuit is not None:
            circuit.held += n
        hold = self._holds.get(destination)
        if hold is not None:
            hold.held += n

    def succeeded(self, destination: str, now: float) -> None:
        """``destination`` delivered, or gave a final answer (a 3xx or 4xx): it is reachable, so its other
        messages go without probing and each gets its own answer; an outage it was in is over."""
        self._up.add(destination)
        circuit = self._circuits.pop(destination, None)
        if circuit is not None:
            self.logger.warning("%s: %s is back after %.1f s (%d failed attempts, %d attempts held back)",
                                self.name, mask_url(destination), now - circuit.since, circuit.failures,
                                circuit.held)
