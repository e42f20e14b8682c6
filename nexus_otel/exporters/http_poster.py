"""Many HTTP POSTs in flight from a synchronous caller: a keep-alive pool on a private event loop.

The webhook worker delivers a batch at a time from its own thread. This poster
runs the batch's requests concurrently on an event loop that only that thread
ever runs (inside :meth:`ConcurrentPoster.post_all`), so there is no extra
thread and no cross-thread hand-off. Connections are pooled and kept alive;
each destination's requests pass its :class:`~.gate.Gate` (an adaptive limit of
requests in flight, at most ``per_destination``; ``Retry-After`` holds;
``max_rate``; new connections at a bounded pace).

The requests go through :mod:`nexus_otel.exporters.http1` (prepared bytes on
pooled connections, responses parsed by httptools): it costs far less CPU per
POST than aiohttp, which this poster used before, or a synchronous
``httpx.Client`` (``benchmarks/http_clients.py``). The loop is uvloop's where it
is installed (a dependency except on Windows): the same deliveries take less CPU
than on asyncio's own loop. The figures are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..errors import ConfigurationError
from .gate import OVERLOAD_STATUSES, Gate, Held
from .http1 import AnswerTimeout, ConnectTimeout, HttpError, Pool
from .retry_after import retry_after_seconds


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer's status and its ``Retry-After`` header (if any); the body is read and dropped."""

    status: int
    retry_after: str | None = None


class SendObserver(Protocol):
    """Told of one request as it really goes (its gate let it, its deadline left it time) and as it ends.

    A request held back or never started is not observed at all: what observes it (a delivery
    attempt's span) starts only for a request that was sent. Both calls run on the poster's loop,
    on the thread that called :meth:`ConcurrentPoster.post_all`.
    """

    def sending(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """Right before the request goes: the headers to send (``headers``, or a copy with more)."""

    def answered(self, reply: Reply | Exception) -> None:
        """As soon as the request has its answer, or failed: the same value :meth:`ConcurrentPoster.post_all`
        returns for it."""


@dataclass(frozen=True, slots=True)
class Post:
    """One request: where, what, which headers, how long it may take (seconds) once it starts.

    ``not_after`` (a ``time.monotonic()`` value, or None) is when it must be over:
    a request still waiting for its turn then is not started (:class:`NotStarted`),
    and one that starts gets only the time left. ``observer`` (or None: nothing to tell,
    nothing spent) is told as the request goes and as it ends (:class:`SendObserver`).
    """

    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout: float
    not_after: float | None = None
    observer: SendObserver | None = None


class PostTimeout(Exception):
    """The request was sent but its answer took longer than its timeout."""


class PostFailed(Exception):
    """The request could not be sent or answered (refused, reset, DNS, TLS, ...)."""


class ConnectTimedOut(PostFailed):
    """No connection was accepted within the connect timeout: nothing was sent."""


class NotStarted(Exception):
    """The request's ``not_after`` came while it waited for its turn; nothing was sent."""


MIN_ATTEMPT = 0.05
"""Seconds a request needs at least; with less time left before ``not_after`` it is not started."""


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (a C loop: far less CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ConcurrentPoster:
    """POSTs a batch concurrently and returns, in the batch's order, a :class:`Reply` or an exception for each.

    Each destination (URL) has a :class:`~.gate.Gate`: up to its adaptive limit of
    requests in flight (never more than ``per_destination``), none while a
    ``Retry-After`` holds it, at most ``max_rate`` a second if set; new connections
    at a bounded pace. A request its gate holds back is not sent (:class:`~.gate.Held`).

    Only one thread may call :meth:`post_all` (the loop is that thread's while it
    runs); :meth:`close` after that thread has finished.
    """

    def __init__(self, *, per_destination: int = 64, connect_timeout: float = 5.0,
                 user_agent: str = "nexus-otel", pool: Pool | None = None, max_rate: float | None = None,
                 hold_cap: float = 300.0) -> None:
        if per_destination < 1:
            raise ConfigurationError("per_destination", per_destination, "at least 1")
        self.per_destination = per_destination
        self.connect_timeout = connect_timeout
        """Seconds a new connection may take to be accepted (apart from the answer's ``timeout``)."""
        self.user_agent = user_agent
        self.max_rate = max_rate
        self.hold_cap = hold_cap
        """The longest hold a ``Retry-After`` may ask for (seconds)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = pool if pool is not None else Pool(user_agent)
        """The connections (with their proxy and TLS settings); the poster's loop is the only one to use it."""
        self._gates: dict[str, Gate] = {}

    def post_all(self, posts: Sequence[Post]) -> list[Reply | Exception]:
        """Send every post as its destination's gate lets it; never raises for a failed post."""
        if not posts:
            return []
        if self._loop is None:
            self._loop = _new_event_loop()
        return self._loop.run_until_complete(self._post_all(posts))

    def gates(self) -> dict[str, Gate]:
        """Each destination's gate, by URL (read from other threads for status: values only)."""
        return dict(self._gates)

    async def _post_all(self, posts: Sequence[Post]) -> list[Reply | Exception]:
        replies = await asyncio.gather(*(self._post(p) for p in posts), return_exceptions=True)
        # Anything _post did not foresee is that post's failure alone: the others' answers stand.
        return [r if isinstance(r, (Reply, Exception)) else PostFailed(repr(r)) for r in replies]

    def _gate(self, url: str) -> Gate:
        gate = self._gates.get(url)
        if gate is None:
            gate = self._gates[url] = Gate(self.per_destination, self.max_rate)
        return gate

    async def _post(self, post: Post) -> Reply | Exception:
        gate = self._gate(post.url)
        if not gate.try_enter():
            try:
                await gate.enter(post.not_after)
            except Held as held:
                return held
        started = time.monotonic()
        seconds = post.timeout
        connect_timeout = self.connect_timeout
        if post.not_after is not None:
            left = post.not_after - started
            if left < MIN_ATTEMPT:
                gate.done(None)
                return NotStarted("its deadline came while it waited for its turn")
            seconds, connect_timeout = min(seconds, left), min(connect_timeout, left)
        observer = post.observer
        if observer is None:
            return await self._send(post, post.headers, gate, started, connect_timeout, seconds)
        try:
            headers = observer.sending(post.headers)
        except BaseException:
            gate.done(None)
            raise
        reply = await self._send(post, headers, gate, started, connect_timeout, seconds)
        observer.answered(reply)
        return reply

    async def _send(self, post: Post, headers: Mapping[str, str], gate: Gate, started: float,
                    connect_timeout: float, seconds: float) -> Reply | Exception:
        """Send ``post`` (its gate entered) with ``headers``: its reply, or the failure to get one."""
        overloaded = True
        answered: float | None = None
        try:  # the connect and the answer have timeouts of their own: no timer around the whole
            status, retry_after = await self._pool.post(post.url, post.body, headers, connect_timeout,
                                                        seconds, gate.connected, gate.connect_turn)
            overloaded = status in OVERLOAD_STATUSES
            if overloaded and retry_after:
                hold = retry_after_seconds(retry_after)
                if hold:
                    gate.hold(min(hold, self.hold_cap), f"Retry-After {hold:g} s (HTTP {status})")
            elif not overloaded:
                answered = time.monotonic() - started  # a new connection's time included: it is part of the wait
            return Reply(status, retry_after)
        except ConnectTimeout as exc:
            return ConnectTimedOut(str(exc))
        except (AnswerTimeout, asyncio.TimeoutError) as exc:
            return PostTimeout(str(exc) or type(exc).__name__)
        except (HttpError, OSError, ValueError) as exc:
            failed = PostFailed(f"{type(exc).__name__}: {exc}")
            failed.__cause__ = exc  # what it was (``error.type`` of an attempt's span): returned, never raised
            return failed
        finally:
            gate.done(answered, overloaded=overloaded)

    def close(self, timeout: float = 2.0) -> None:
        """Close the pooled connections and the loop, once :meth:`post_all` can no longer run.

        The closing runs on a short-lived thread of its own: the caller may be inside another
        event loop (a server's shutdown), where this loop could not run.
        """
        loop, self._loop = self._loop, None
        if loop is None:
            return
        pool = self._pool

        async def close_pool() -> None:
            pool.close()
            await asyncio.sleep(0)  # the transports finish closing on the loop's next turn

        def close_on_own_thread() -> None:
            try:
                loop.run_until_complete(close_pool())
            finally:
                loop.close()

        closer = threading.Thread(target=close_on_own_thread, name="nexus-otel-poster-close", daemon=True)
        closer.start()
        closer.join(timeout)
