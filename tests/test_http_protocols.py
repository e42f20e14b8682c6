"""How a stopping server drains its HTTP/1.1 connections, on uvicorn's httptools protocol and on its h11 one.

Real uvicorn servers on loopback (:class:`BackgroundServer`), raw sockets where a
client's exact moves matter: a connection accepted but not read yet when the server
stops still gets its answer (with ``Connection: close``, then the connection
closes); an idle keep-alive connection is closed; a request in flight finishes.
Then which protocol each setting picks, and that ``serve`` picks httptools.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from nexus_otel import cli
from nexus_otel.errors import ConfigurationError
from nexus_otel.http_protocols import (
    FRESH_GRACE,
    HTTP_PROTOCOLS,
    DrainingH11Protocol,
    DrainingHttpToolsProtocol,
    protocol_class,
)
from nexus_otel.serving import BackgroundServer, serve, uvicorn_config

from .served import REPO, Served, cli_env

PROTOCOLS = ["httptools", "h11"]


class App:
    """A plain ASGI app: ``/slow`` sleeps 0.3 s (``in_flight`` is set as it starts), anything else answers at once."""

    def __init__(self) -> None:
        self.in_flight = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/slow":
            self.in_flight.set()
            await asyncio.sleep(0.3)
        body = scope["path"].encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def request(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def read_response(conn: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response from ``conn``: status, headers (names lower-cased), body; ``EOFError`` if the server closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError(f"closed before a response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += conn.recv(65536)
    return int(lines[0].split()[1]), headers, body


def refuses_a_long_head(host: str, port: int) -> bool:
    """Whether the server answers 400 to 20 KB of a request head still arriving (h11's 16 KiB limit; httptools
    has none and answers the request once it is whole)."""
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"POST /workflows/work HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nX-Big: " + b"a" * 20_000)
        conn.settimeout(1)
        try:
            return read_response(conn)[0] == 400
        except TimeoutError:
            pass
        conn.settimeout(5)
        conn.sendall(b"\r\n\r\n{}")
        status, _, body = read_response(conn)
        assert status == 200, body
        return False


def closed(conn: socket.socket) -> bool:
    """True once the server has closed ``conn`` (end of stream, or a reset) with nothing more sent on it."""
    try:
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True


def stopping(server: BackgroundServer) -> None:
    """Tell ``server`` to stop, and return once it has stopped accepting (so its connections were told to stop)."""
    server.server.should_exit = True
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection((server.host, server.port), timeout=1).close()
        except ConnectionRefusedError:
            return  # uvicorn closes its listener, then shuts each connection down, in one step of its loop
        time.sleep(0.01)
    raise AssertionError("the server kept accepting")


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


@pytest.fixture(params=PROTOCOLS)
def served(request):
    """A plain ASGI app on a :class:`BackgroundServer` with the protocol of the parameter."""
    app = App()
    server = BackgroundServer(app, http=request.param)
    server.start()
    server.app = app  # type: ignore[attr-defined]
    yield server
    server.stop()
    assert not server.thread.is_alive(), "the server stopped"


def test_a_connection_accepted_but_not_read_when_the_server_stops_is_answered_with_close(served):
    """A connection the server accepted, not read from when told to stop: its request is answered, then closed."""
    with socket.create_connection((served.host, served.port), timeout=5) as conn:
        wait_for(lambda: len(served.server.server_state.connections) == 1, "the server accepted the connection")
        stopping(served)
        conn.sendall(request("/late"))
        status, headers, body = read_response(conn)
        assert (status, body) == (200, b"/late")
        assert headers.get("connection", "").lower() == "close", headers
        conn.sendall(request("/after"))  # a keep-alive connection would answer this within the grace
        assert closed(conn), "no answer after Connection: close, and the connection closes"
    served.thread.join(5)
    assert not served.thread.is_alive(), "the server stopped once the connection closed"


def test_an_idle_keep_alive_connection_is_closed_when_the_server_stops(served):
    """A keep-alive connection that served a request and waits for the next one is closed on stop, not kept."""
    with socket.create_connection((served.host, served.port), timeout=5) as conn:
        conn.sendall(request("/first"))
        status, headers, _ = read_response(conn)
        assert status == 200 and "connection" not in headers  # kept alive while the server runs
        stopping(served)
        conn.sendall(request("/second"))  # the connection is closed already: no grace for it
        assert closed(conn)


def test_a_request_in_flight_when_the_server_stops_gets_its_answer(served):
    """A request the app is working on when the server is told to stop is answered 200, then the connection closes."""
    with socket.create_connection((served.host, served.port), timeout=5) as conn:
        conn.sendall(request("/slow"))
        assert served.app.in_flight.wait(5)
        served.server.should_exit = True
        status, _, body = read_response(conn)
        assert (status, body) == (200, b"/slow")
        assert closed(conn)


def test_a_request_head_over_the_bound_is_refused_on_httptools():
    """httptools: a head just under MAX_HEAD_BYTES is answered; one over it (in many headers, in the target, in one
    header whose line never ends, in many empty headers, in a trailer whose line never ends) gets 400 and the
    connection closes, arriving in pieces as from a slow client: the server keeps no unbounded head. A large
    body, sized or chunked, in the same pieces, is answered."""
    from nexus_otel.http_protocols import MAX_HEAD_BYTES

    app = App()
    with BackgroundServer(app, http="httptools") as url:
        host, port = url.removeprefix("http://").split(":")
        under = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES - 100) + b"\r\n\r\n"
        many = b"GET / HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"b" * 1000) for i in range(80))
        target = b"GET /" + b"c" * (MAX_HEAD_BYTES + 10) + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        endless = b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"d" * (MAX_HEAD_BYTES + 10)  # its line never ends
        tiny = b"GET / HTTP/1.1\r\n" + b"a:\r\n" * (MAX_HEAD_BYTES // 3) + b"\r\n"  # a third of the bound unframed
        trailer = (b"POST /t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n"
                   b"X-Trailer: " + b"e" * (MAX_HEAD_BYTES + 300_000))  # never ends: the bound, plus the read
                   # with the last body bytes (not counted, at most 256 KiB)
        body = b"f" * (8 * MAX_HEAD_BYTES)  # a large body, in pieces: never taken for a head
        sized = b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        chunked = (b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"".join(b"1000\r\n" + body[i:i + 4096] + b"\r\n" for i in range(0, len(body), 4096))
                   + b"0\r\nX-Done: yes\r\n\r\n")
        cases = ((under, 200), (many + b"\r\n", 400), (target, 400), (endless, 400), (tiny, 400), (trailer, 400),
                 (sized, 200), (chunked, 200))
        for head, answered in cases:
            with socket.create_connection((host, int(port)), timeout=5) as conn:
                for at in range(0, len(head), 4096):  # in pieces, as a slow client sends it
                    try:
                        conn.sendall(head[at:at + 4096])
                    except (BrokenPipeError, ConnectionResetError):
                        break
                status, _, _ = read_response(conn)
                assert status == answered, (len(head), status)
                if answered == 400:
                    assert closed(conn)


def test_protocol_names():
    """auto is httptools here; h11 is h11; other names are a ConfigurationError naming the setting and the choices."""
    assert HTTP_PROTOCOLS == ("auto", "httptools", "h11")
    assert protocol_class("auto") is DrainingHttpToolsProtocol
    assert protocol_class("httptools") is DrainingHttpToolsProtocol
    assert protocol_class("h11") is DrainingH11Protocol
    assert FRESH_GRACE > 0
    for bad in ("bogus", "HTTPTOOLS", "", "h2"):
        with pytest.raises(ConfigurationError) as info:
            protocol_class(bad)
        assert (info.value.setting, info.value.value) == ("http", bad)
        assert "auto, httptools, h11" in str(info.value)
    with pytest.raises(ConfigurationError, match="http"):
        uvicorn_config(App(), "127.0.0.1", 1, http="bogus")
    for workers in (1, 2):  # refused before the app is imported: this one does not exist
        with pytest.raises(ConfigurationError, match="invalid http='bogus'"):
            serve("no_such_module:app", workers=workers, http="bogus")


def test_serve_refuses_an_unknown_http_option():
    """``serve --http bogus`` fails on the command line, listing the choices."""
    result = CliRunner().invoke(cli.main, ["serve", "no_such_module:app", "--http", "bogus"])
    assert result.exit_code == 2
    assert "Invalid value for '--http'" in result.output and "'auto', 'httptools', 'h11'" in result.output


def test_without_httptools_auto_is_h11_and_httptools_is_refused():
    """Where httptools cannot be imported, auto serves with h11 and asking for httptools names the fix."""
    code = ("import sys; sys.modules['httptools'] = None\n"
            "from nexus_otel.http_protocols import protocol_class\n"
            "print(protocol_class('auto').__name__)\n"
            "try:\n    protocol_class('httptools')\nexcept ValueError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    auto, error = out.stdout.splitlines()
    assert auto == "DrainingH11Protocol"
    assert error.startswith("invalid http='httptools'") and "httptools cannot be imported" in error


def test_serve_uses_httptools_by_default(tmp_path):
    """``nexus-otel serve`` without --http parses with httptools: it waits for a long request head h11 refuses."""
    server = BackgroundServer(App(), http="h11")
    with server:  # the probe tells the two apart
        assert refuses_a_long_head(server.host, server.port)
    served = Served("tests.apps.scaled:app", cli_env(tmp_path / "data"), REPO)
    try:
        refused = refuses_a_long_head("127.0.0.1", served.port)
    finally:
        code, err = served.stop()
    assert not refused
    assert code in (0, -15) and "Traceback" not in err, err  # uvicorn re-raises SIGTERM once it has stopped
