"""The HTTP/1.1 protocols a stopping server drains with: uvicorn's httptools (fast) or h11 (pure Python).

uvicorn closes every connection without a request in progress when its server
stops, including one it accepted a moment ago whose request is sent but not
read yet: that client gets no answer though it reached a server that was
accepting (a worker retired on SIGHUP, say). Both protocols here give such a
connection :data:`FRESH_GRACE` seconds for its request, answer it with
``Connection: close`` and close. Everything else drains as in uvicorn: requests
in flight finish, idle keep-alive connections that already served requests are
closed (HTTP clients retry those on a new connection).

``"auto"`` (:func:`protocol_class`) serves with httptools wherever it can be
imported, else with h11. The two differ at their edges: h11 answers 400 to a
request head that reaches uvicorn's ``h11_max_incomplete_event_size`` (16 KiB by
default) before it is complete; on httptools, whose parser sets no limit of its
own, a head over :data:`MAX_HEAD_BYTES` (64 KiB) is answered 400. llhttp answers
400 to a method it does not know, before the app, where
h11 passes any token on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import ConfigurationError

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: "auto" serves with h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

FRESH_GRACE = 0.5
"""Seconds a stopping server gives a connection it accepted, but has not read from yet, to send its request."""

MAX_HEAD_BYTES = 64 * 1024
"""Bytes of request target and header fields a request head may have on httptools (h11's bound is uvicorn's
``h11_max_incomplete_event_size``, 16 KiB of a head not complete yet)."""

HTTP_PROTOCOLS = ("auto", "httptools", "h11")
"""The names :func:`protocol_class` takes (``serve --http``)."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLOSE = (b"connection", b"close")


def answered_with_close(app: ASGIApp) -> ASGIApp:
    """``app``, but every HTTP response it starts says ``Connection: close``.

    Both protocols honour an app's ``Connection: close``: the header goes out and the
    connection closes once the response is sent (h11 would not add it for a
    ``keep_alive`` turned off on its request; this way both answer alike).
    """

    async def closing(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"connection" and b"close" in value.lower() for name, value in headers):
                    message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        await app(scope, receive, send_closing)

    return closing


class _FreshGrace(asyncio.Protocol):
    """What both protocols add: the grace for a connection not read from yet when the server stops.

    Mixed in before the uvicorn protocol, whose ``shutdown`` and ``data_received`` it extends.
    """

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    app: Any
    cycle: Any
    _read_any = False

    def data_received(self, data: bytes) -> None:
        self._read_any = True
        super().data_received(data)

    def shutdown(self) -> None:
        if not self._read_any and self.cycle is None:
            self.app = answered_with_close(self.app)  # the request the grace lets in is the last
            self.loop.call_later(FRESH_GRACE, self._shutdown_late)
            return
        super().shutdown()  # type: ignore[misc]  # the uvicorn protocol's, after this class in the MRO

    def _shutdown_late(self) -> None:
        if not self.transport.is_closing():  # answered and closed meanwhile, or the client went
            super().shutdown()  # type: ignore[misc]


class DrainingH11Protocol(_FreshGrace, H11Protocol):
    """uvicorn's h11 protocol (pure Python), draining as the module doc says."""


class _HeadTooLarge(Exception):
    """Raised from a parser callback: llhttp stops, and uvicorn answers 400 and closes the connection."""


if HttpToolsProtocol is not None:

    class DrainingHttpToolsProtocol(_FreshGrace, HttpToolsProtocol):
        """uvicorn's httptools protocol (llhttp, in C), draining as the module doc says, and with a bound on a
        request head and on its trailers: over :data:`MAX_HEAD_BYTES` it is answered 400 and the connection
        closed (llhttp has no bound of its own, and uvicorn keeps every byte of a head in memory).

        Measured two ways, as the parser lets it be seen: the complete fields (the target, each header or
        trailer with its framing) as they are parsed, and the bytes read since the last complete field while a
        request is open, but for reads that carry body bytes: one line that never ends, which the parser holds
        unseen until it does. A read in which a request ends and the next begins (pipelining) is not counted
        the second way, as the part that is the new head is not known: such a head may cost one read more.
        """

        _in_message = False
        _began = _ended = _body_read = False  # in the read being parsed
        _head_bytes = 0
        _unparsed = 0

        def data_received(self, data: bytes) -> None:
            self._began = self._ended = self._body_read = False
            super().data_received(data)
            if self._in_message and not self._body_read and not (self._began and self._ended) \
                    and not self.transport.is_closing():
                self._unparsed += len(data)
                if self._unparsed > MAX_HEAD_BYTES:
                    self.send_400_response("Request head too large.")

        def on_message_begin(self) -> None:
            self._in_message = self._began = True
            self._head_bytes = self._unparsed = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._grow(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._grow(len(name) + len(value) + 4)  # ": " and CRLF: a head of many tiny fields is not free
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._head_bytes = self._unparsed = 0  # trailers, if any, have a bound of their own
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._body_read = True
            self._unparsed = 0
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._in_message = False
            self._ended = True
            super().on_message_complete()

        def _grow(self, size: int) -> None:
            self._head_bytes += size
            self._unparsed = 0
            if self._head_bytes > MAX_HEAD_BYTES:
                raise _HeadTooLarge


def protocol_class(name: str) -> type[asyncio.Protocol]:
    """The draining protocol ``name`` (one of :data:`HTTP_PROTOCOLS`) serves with; ``ConfigurationError`` if none."""
    if name not in HTTP_PROTOCOLS:
        raise ConfigurationError("http", name, "one of " + ", ".join(HTTP_PROTOCOLS)
                                 + " (auto: httptools when it is installed, else h11)")
    if name == "h11" or (name == "auto" and HttpToolsProtocol is None):
        return DrainingH11Protocol
    if HttpToolsProtocol is None:
        raise ConfigurationError("http", name, "h11 or auto: httptools cannot be imported here "
                                 "(pip install httptools)")
    return DrainingHttpToolsProtocol
