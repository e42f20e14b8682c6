"""One destination's turnstile: when a request to it may start, and what its answers teach.

Each destination (a webhook URL) has a :class:`Gate` on the poster's event
loop. A request waits at the gate until

- fewer requests are in flight than its :class:`~.adaptive_limit.AdaptiveLimit` allows,
- no hold is on (a ``Retry-After`` the receiver sent with a 429 or 503), and
- its ``max_rate`` (deliveries per second, if set) has a token for it;

and each request's end is reported back (:meth:`Gate.done`) so the limit learns
from it. New connections are opened at a bounded pace (:data:`CONNECT_BURST`
at once, then one per :data:`CONNECT_SPACING`), so a burst never lands on a
receiver's short accept queue all at once; a connection that was slow to be
accepted (its SYN dropped and sent again) is an overload signal, not a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .adaptive_limit import AdaptiveLimit

CONNECT_BURST = 4
"""New connections a destination may be opened at once: fewer than the smallest accept queue users run
(Python's ``socketserver`` listens with 5)."""
CONNECT_SPACING = 0.001
"""Seconds between new connections beyond the burst (a pace of 1,000 a second at most, per destination)."""
SLOW_CONNECT = 0.5
"""A connection that took longer than this (seconds), and three times the destination's quickest, to be
accepted was queued or its SYN dropped (Linux sends it again after 1 s): the receiver is full. (A far
receiver's TLS handshake, part of the connect, takes a few round trips: its quickest sets the bar.)"""
RATE_WAIT = 1.0
"""A request whose rate token is further off than this (seconds) is held back, not kept waiting (the first of
a batch waits up to one token's interval: each batch sends one at least)."""
MIN_RATE = 0.1
"""The least ``max_rate`` (deliveries per second): a token's interval fits well within a batch's lease."""

OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that say the receiver (or the proxy in front of it) is full: they cut the limit."""


class Held(Exception):
    """The request was not started before ``until`` (a ``time.time()``), for ``reason``; nothing was sent.

    ``paused`` is true when the receiver asked for the pause (a ``Retry-After``): the whole destination
    is held until then. Otherwise its turn did not come in time (``max_rate``, its deadline).
    """

    def __init__(self, until: float, reason: str, paused: bool = False) -> None:
        super().__init__(f"held until {until:.3f} ({reason})")
        self.until = until
        self.reason = reason
        self.paused = paused


class Gate:
    """Admits requests to one destination; lives on the poster's loop (not thread-safe, not needed)."""

    def __init__(self, ceiling: int, max_rate: float | None = None) -> None:
        self.limit = AdaptiveLimit(ceiling)
        self.in_flight = 0
        self.max_rate = max_rate
        self.held_until = 0.0  # time.monotonic()
        self.hold_reason = ""
        self._next_token = 0.0  # time.monotonic() at which the next rate token is due
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._connect_schedule = 0.0  # the moment (time.monotonic()) the next new connection is due
        self._quickest_connect: float | None = None

    # -- admission ----------------------------------------------------------------------------
    def try_enter(self) -> bool:
        """Take a turn now if one is free (no hold, under the limit, a rate token at hand): the common case,
        without a coroutine. False: :meth:`enter` waits for one."""
        if self.in_flight >= self.limit.allowed or self._queued():
            return False
        now = time.monotonic()
        if now < self.held_until or (self.max_rate is not None and self._next_token > now):
            return False
        if self.max_rate is not None:
            self._next_token = now + 1.0 / self.max_rate
        self.in_flight += 1
        return True

    async def enter(self, not_after: float | None) -> None:
        """Wait for this request's turn. Raises :class:`Held` if it may not start before ``not_after``
        (a ``time.monotonic()``) or its destination is held; then nothing was sent.

        A request ending hands its place straight to the first waiting one (as a semaphore does),
        so a woken request never finds its place taken and waits again; with ``max_rate``, each
        request with a place reserves its moment on the rate's schedule and sleeps once until then.
        """
        loop = asyncio.get_running_loop()
        while True:
            now = time.monotonic()
            if now < self.held_until:
                raise Held(time.time() + (self.held_until - now), self.hold_reason, paused=True)
            if self.in_flight < self.limit.allowed and not self._queued():
                self.in_flight += 1
                break
            waiter: asyncio.Future[bool] = loop.create_future()
            self._waiters.append(waiter)
            timer = None if not_after is None else loop.call_later(max(0.0, not_after - now), _wake, waiter)
            try:
                granted = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result():
                    self.done(None)  # its place was handed over as it was cancelled: give it on
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            if granted:
                break
            if not_after is not None and time.monotonic() >= not_after:
                raise Held(time.time(), "its deadline came while it waited for its turn")
        try:
            await self._rate_turn(not_after)
        except BaseException:
            self.done(None)  # held back by the rate, or cancelled: its place goes to the next
            raise

    async def _rate_turn(self, not_after: float | None) -> None:
        """With ``max_rate``: reserve this request's moment on the rate's schedule and wait for it (once)."""
        if self.max_rate is None:
            return
        now = time.monotonic()
        scheduled = max(self._next_token, now)
        wait = scheduled - now
        if wait > max(RATE_WAIT, 1.0 / self.max_rate) or (not_after is not None and scheduled >= not_after):
            raise Held(time.time() + wait, f"max_rate {self.max_rate:g}/s")
        self._next_token = scheduled + 1.0 / self.max_rate
        if wait > 0.0:
            await asyncio.sleep(wait)

    def _queued(self) -> bool:
        """Whether requests wait for a place (those gone, their deadline come, are dropped from the front)."""
        waiters = self._waiters
        while waiters and waiters[0].done():
            waiters.popleft()
        return bool(waiters)

    async def connect_turn(self) -> None:
        """Wait until a new connection may be opened to this destination (the bounded pace).

        Each caller reserves its moment at once (a virtual schedule, as GCRA meters cells): up to
        :data:`CONNECT_BURST` at once, then one per :data:`CONNECT_SPACING`; one sleep at most each.
        """
        now = time.monotonic()
        scheduled = max(self._connect_schedule, now)
        self._connect_schedule = scheduled + CONNECT_SPACING
        wait = scheduled - (CONNECT_BURST - 1) * CONNECT_SPACING - now
        if wait > 0.0:
            await asyncio.sleep(wait)

    # -- what answers teach ------------------------------------------------------------------
    def connected(self, seconds: float) -> None:
        """A new connection was accepted after ``seconds``; a slow one means a full accept queue."""
        quickest = self._quickest_connect
        if quickest is None or seconds < quickest:
            self._quickest_connect = quickest = seconds
        if seconds > SLOW_CONNECT and seconds > 3 * quickest:
            self.limit.overloaded(time.monotonic())

    def done(self, seconds: float | None, overloaded: bool = False) -> None:
        """A request ended: answered cleanly in ``seconds`` (None: no clean answer), or ``overloaded``."""
        self.in_flight -= 1
        if overloaded:
            self.limit.overloaded(time.monotonic())
        elif seconds is not None:
            self.limit.answered(seconds, self.in_flight, time.monotonic())
        self._wake_some()

    def hold(self, seconds: float, reason: str) -> None:
        """No request starts for ``seconds`` (a ``Retry-After``); those waiting are held back at once."""
        until = time.monotonic() + seconds
        if until > self.held_until:
            self.held_until = until
            self.hold_reason = reason
        while self._waiters:
            _wake(self._waiters.popleft())

    def _wake_some(self) -> None:
        """Hand the free places to the first waiting requests (counted in flight from now)."""
        allowed = self.limit.allowed
        while self.in_flight < allowed and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(True)


def _wake(waiter: asyncio.Future[bool]) -> None:
    """Wake a waiting request without a place (its deadline came, or a hold began): it looks again."""
    if not waiter.done():
        waiter.set_result(False)
