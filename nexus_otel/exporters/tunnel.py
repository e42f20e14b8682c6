"""An ``https`` connection through a forward proxy: a ``CONNECT`` tunnel, then TLS with the destination over it.

The proxy is asked ``CONNECT host:port HTTP/1.1``; a 2xx answer means every
byte after its head goes to the destination, so TLS starts there, verified
against the destination's name (the proxy sees only encrypted bytes). The
proxy's answer is read with h11, which knows that a 2xx to ``CONNECT`` ends
the message at its head (a general response parser would wait for a body);
any other answer is an :class:`~nexus_otel.exporters.http1.HttpError`
naming the proxy (its credentials masked) and the status, and 407 (or a
401, which some proxies send) says the credentials are missing or refused.

TLS over the tunnel uses ``loop.start_tls``, the same on asyncio's loop and
uvloop's; it does not call the new protocol's ``connection_made``, so this
module does, with the TLS transport.
"""

from __future__ import annotations

import asyncio
import ssl

import h11

from .proxies import Proxy


class TunnelError(OSError):
    """The proxy could not be reached, refused the tunnel, or TLS over it failed; the message names the proxy."""


async def connect_through(proxy: Proxy, host: str, port: int, protocol: asyncio.Protocol, context: ssl.SSLContext,
                          *, user_agent: str) -> asyncio.BaseTransport:
    """A TLS transport to ``host:port`` through ``proxy``, delivering to ``protocol`` (whose ``connection_made``
    gets the transport). The caller bounds the time it may take; on any failure nothing stays open."""
    loop = asyncio.get_running_loop()
    authority = _authority(host, port)
    try:
        transport, answer = await loop.create_connection(lambda: _ProxyAnswer(proxy.shown), proxy.host, proxy.port)
    except OSError as exc:
        raise TunnelError(f"cannot connect to proxy {proxy.shown}: {exc}") from exc
    try:
        headers = [("Host", authority), ("User-Agent", user_agent)]
        if proxy.authorization:
            headers.append(("Proxy-Authorization", proxy.authorization))
        try:
            transport.write(answer.h11.send(h11.Request(method="CONNECT", target=authority, headers=headers)) or b"")
        except h11.LocalProtocolError as exc:
            raise TunnelError(f"CONNECT {authority} cannot be written: {exc}") from None
        response = await answer.response
        if not 200 <= response.status_code < 300:
            raise TunnelError(_refusal(proxy, authority, response))
        try:
            tls = await loop.start_tls(transport, protocol, context, server_hostname=host)
        except (OSError, ssl.SSLError) as exc:
            raise TunnelError(f"TLS with {authority} through proxy {proxy.shown} failed: {exc}") from exc
        if tls is None:  # only when the transport closed meanwhile
            raise TunnelError(f"proxy {proxy.shown} closed the tunnel to {authority} during the TLS handshake")
    except BaseException:
        transport.close()
        raise
    protocol.connection_made(tls)
    return tls


def _authority(host: str, port: int) -> str:
    """``host:port`` for the request line and ``Host`` (IPv6 in brackets, an international name as IDNA)."""
    if ":" in host:
        return f"[{host}]:{port}"
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise TunnelError(f"host name {host!r} cannot be written in a request: {exc}") from None
    return f"{host}:{port}"


def _refusal(proxy: Proxy, authority: str, response: h11.Response) -> str:
    status = response.status_code
    reason = response.reason.decode("latin-1", errors="replace")
    message = f"proxy {proxy.shown} answered CONNECT {authority} with {status} {reason}".rstrip()
    if status in (401, 407):  # 407 Proxy Authentication Required; some proxies (tinyproxy) send 401 to CONNECT
        message += (": the proxy refused the credentials in its URL" if proxy.authorization else
                    ": the proxy asks for credentials; put them in the proxy URL (http://user:password@host:port)")
    return message


class _ProxyAnswer(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT`` until its head is complete."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        self.h11 = h11.Connection(h11.CLIENT)
        self.response: asyncio.Future[h11.Response] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.h11.receive_data(data)
        self._read()

    def eof_received(self) -> bool | None:
        self.h11.receive_data(b"")
        self._read()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"closed the connection before answering CONNECT{f': {exc}' if exc else ''}")

    def _read(self) -> None:
        if self.response.done():
            return
        try:
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Response):
                    self.response.set_result(event)
                    return
                if isinstance(event, h11.ConnectionClosed):
                    self._fail("closed the connection before answering CONNECT")
                    return
                # an interim answer (1xx): the final one follows
        except h11.RemoteProtocolError as exc:
            self._fail(f"answered CONNECT with something that is not HTTP/1.1: {exc}")

    def _fail(self, message: str) -> None:
        if not self.response.done():
            self.response.set_exception(TunnelError(f"proxy {self.shown} {message}"))
