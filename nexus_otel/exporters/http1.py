"""A small HTTP/1.1 client for webhook POSTs: keep-alive connections on asyncio, responses parsed by httptools.

What webhook delivery needs and nothing more: POST a prepared body with
headers, read the status and ``Retry-After``, drop the response body, keep
the connection for the next request when the server allows. No redirects
(a 3xx answer is not followed: for a webhook it is a failed delivery, a dead
letter), no compression, TLS with the default verification for ``https``
(or a context of the user's: :mod:`.tls`). Responses are parsed by httptools
(llhttp, the C parser Node.js uses; uvicorn's too).

Through a forward proxy (:mod:`.proxies` decides which, once per URL): an
``http://`` destination's request goes to the proxy in absolute form
(``POST http://host:port/path HTTP/1.1``, with ``Proxy-Authorization`` when the
proxy URL holds credentials) on connections pooled per proxy; an ``https://``
destination's goes through a ``CONNECT`` tunnel (:mod:`.tunnel`) on connections
pooled per destination. A direct URL's route is one dict lookup, as before.

Why not aiohttp, which this replaced: its request machinery (its client request
and response objects, cookie jar, tracing hooks, timers) costs several times the
CPU per POST of prepared bytes on a pooled connection (``benchmarks/http_clients.py``;
the figures are in ``benchmarks/RESULTS.md``). The
requests a receiver sees are the same but for aiohttp's ``Accept-Encoding``
(``tests/test_http1.py`` compares them, and the outcomes of the same answers).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httptools

from .proxies import Proxy, ProxyRoutes
from .request_head import HttpError, Target, request_bytes
from .tunnel import TunnelError, connect_through


class StaleConnection(HttpError):
    """A kept-alive connection the server had closed: it closed without a byte of answer."""


class ConnectTimeout(HttpError):
    """No connection within the connect timeout (the receiver's accept queue may be full): nothing was sent."""


class AnswerTimeout(HttpError):
    """The request was sent but its answer did not come within the answer timeout."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, str | None]] | None = None
        self.retry_after: str | None = None
        self.closed = False
        self.answered = False  # any byte of an answer seen on this connection
        self.headers_done = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"bad response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.headers_done and self.waiter is not None and not self.waiter.done():
            # A body without a length ends with the connection (HTTP/1.0 style): the answer is complete.
            self.waiter.set_result((self.parser.get_status_code(), self.retry_after))
            return
        self._fail(StaleConnection(f"connection closed before the answer ended{f': {exc}' if exc else ''}")
                   if not self.answered else HttpError(f"connection closed before the answer ended"
                                                       f"{f': {exc}' if exc else ''}"))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:  # an interim answer (100 Continue): the final one follows
            self.headers_done = False
            return
        self.keep_alive = self.parser.should_keep_alive()  # read now: the parser moves on to the next answer
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), self.retry_after))

    # use
    @property
    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    async def exchange(self, request: bytes) -> tuple[int, str | None, bool]:
        """Send ``request``; the status, ``Retry-After`` and whether the connection may be used again."""
        assert self.transport is not None
        self.retry_after = None
        self.answered = self.headers_done = self.keep_alive = False
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        status, retry_after = await self.waiter
        # After a 204 or 304 a server that wrongly sent a body would leave it on the connection.
        return status, retry_after, self.keep_alive and status not in (204, 304)

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


async def _answer(connection: _Connection, request: bytes, timeout: float | None) -> tuple[int, str | None, bool]:
    """``connection.exchange(request)``, bounded by ``timeout`` seconds (:class:`AnswerTimeout`) unless it is None."""
    if timeout is None:
        return await connection.exchange(request)
    try:
        if sys.version_info >= (3, 11):  # a timer on this task, no task of its own
            async with asyncio.timeout(timeout):
                return await connection.exchange(request)
        return await asyncio.wait_for(connection.exchange(request), timeout)  # pragma: no cover - Python 3.10
    except asyncio.TimeoutError:
        raise AnswerTimeout(f"no answer within {timeout:g} s") from None


@dataclass(frozen=True, slots=True)
class _Route:
    """How a URL's requests travel: the request line's pieces, whose idle connections they use, the proxy if any."""

    target: Target
    key: tuple[str, str, int]
    proxy: Proxy | None = None
    proxy_authorization: str | None = None
    """Sent with each request (an ``http://`` destination through a proxy that wants credentials)."""

    @classmethod
    def of(cls, target: Target, proxies: ProxyRoutes | None) -> _Route:
        proxy = proxies.proxy_for(target.scheme, target.host, target.port) if proxies is not None else None
        if proxy is None:
            return cls(target, (target.scheme, target.host, target.port))
        if target.scheme == "https":  # a tunnel to the destination: its connections are the destination's
            return cls(target, ("https", target.host, target.port), proxy)
        # The proxy forwards the request: absolute form, on connections to the proxy shared by all destinations.
        absolute = dataclasses.replace(target, path=f"http://{target.host_header}{target.path}")
        return cls(absolute, ("http-proxy", proxy.host, proxy.port), proxy, proxy.authorization)


class Pool:
    """Keep-alive connections per endpoint, on the running event loop (one loop for the pool's life).

    ``proxy``: which destinations go through which proxy (None: all go direct); ``tls``: the
    context for ``https`` (None: :func:`ssl.create_default_context`, built at the first ``https``
    connection, so ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` apply).
    """

    def __init__(self, user_agent: str = "nexus-otel", *, proxy: ProxyRoutes | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._targets: dict[str, Target] = {}
        self._ssl: ssl.SSLContext | None = tls
        self._proxies = proxy if proxy is not None and proxy.any else None
        self._routes: dict[str, _Route] = {}

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = Target.of(url)
        return target

    def route(self, url: str) -> _Route:
        """How requests to ``url`` travel (decided once per URL)."""
        route = self._routes.get(url)
        if route is None:
            route = self._routes[url] = _Route.of(self.target(url), self._proxies)
        return route

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], connect_timeout: float,
                   answer_timeout: float | None = None, on_connect: Callable[[float], None] | None = None,
                   before_connect: Callable[[], Awaitable[None]] | None = None) -> tuple[int, str | None]:
        """POST and return the status and ``Retry-After``; :class:`HttpError` if there is no answer.

        A new connection may take ``connect_timeout`` seconds (:class:`ConnectTimeout`):
        ``before_connect`` is awaited first (a pace), ``on_connect`` is told how long it took.
        The answer may take ``answer_timeout`` seconds from when the request is sent
        (:class:`AnswerTimeout`; None: the caller bounds the whole call). A connection whose
        request was cut short is closed, never reused.
        """
        route = self._routes.get(url) or self.route(url)
        if route.proxy_authorization is not None:
            headers = {**headers, "proxy-authorization": route.proxy_authorization}
        request = request_bytes(route.target, body, headers, self.user_agent)
        key = route.key
        connection = self._take(key)
        if connection is not None:
            try:
                return self._settle(key, connection, await _answer(connection, request, answer_timeout))
            except StaleConnection:
                pass  # closed by the server while idle, before this request: it got nothing, send it anew
            except BaseException:
                connection.close()
                raise
        if before_connect is not None:
            await before_connect()
        started = time.monotonic()
        connection = await self._connect(route, connect_timeout)
        if on_connect is not None:
            on_connect(time.monotonic() - started)
        try:
            return self._settle(key, connection, await _answer(connection, request, answer_timeout))
        except BaseException:
            connection.close()
            raise

    def _settle(self, key: tuple[str, str, int], connection: _Connection,
                answer: tuple[int, str | None, bool]) -> tuple[int, str | None]:
        status, retry_after, keep = answer
        if keep and connection.reusable:
            self._idle.setdefault(key, []).append(connection)
        else:
            connection.close()
        return status, retry_after

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                return connection
        return None

    async def _connect(self, route: _Route, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        target, proxy = route.target, route.proxy
        tls = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        if proxy is not None:
            return await self._connect_via(proxy, target, tls, timeout)
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, target.host, target.port, ssl=tls,
                                       server_hostname=target.host if tls else None), timeout)
        except asyncio.TimeoutError:
            raise ConnectTimeout(f"no connection to {target.host}:{target.port} within {timeout:g} s") from None
        except OSError as exc:
            raise HttpError(f"cannot connect to {target.host}:{target.port}: {exc}") from exc
        return connection

    async def _connect_via(self, proxy: Proxy, target: Target, tls: ssl.SSLContext | None,
                           timeout: float) -> _Connection:
        """A connection to the proxy (``http``), or through its tunnel to the destination (``https``)."""
        loop = asyncio.get_running_loop()
        where = f"{target.host}:{target.port} through proxy {proxy.shown}"
        try:
            if tls is None:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(_Connection, proxy.host, proxy.port), timeout)
                return connection
            connection = _Connection()
            await asyncio.wait_for(
                connect_through(proxy, target.host, target.port, connection, tls, user_agent=self.user_agent),
                timeout)
            return connection
        except asyncio.TimeoutError:
            raise ConnectTimeout(f"no connection to {where} within {timeout:g} s") from None
        except TunnelError as exc:
            raise HttpError(str(exc)) from exc
        except OSError as exc:
            raise HttpError(f"cannot connect to proxy {proxy.shown}: {exc}") from exc

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
