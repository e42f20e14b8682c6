"""A real HTTP webhook receiver on a loopback port that records every POST, for end-to-end tests.

    with WebhookReceiver() as hook:
        hook.set_status(503)              # an outage ...
        hook.set_retry_after(1)           # ... that asks senders to come back in 1 s
        ...
        hook.set_status(200)              # ... and it is over
        hook.wait_for(lambda reqs: len(reqs) >= 3, timeout=10)
        assert hook.bodies_json()[-1]["event"] == "done"

As a pytest fixture::

    @pytest.fixture
    def webhook():
        with WebhookReceiver() as hook:
            yield hook

Each request is served on its own daemon thread (``ThreadingHTTPServer``), so a hanging answer
(:meth:`WebhookReceiver.set_hang`) never holds up other requests, and :meth:`WebhookReceiver.close`
wakes every hanging handler at once before shutting the server down.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"
MAX_HANG = 60.0
RECORDED_METHODS = ("POST", "PUT", "PATCH")


class CaseInsensitiveDict(Mapping[str, str]):
    """Read-only header mapping whose lookups ignore case (repeated headers are joined with ``, ``)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        """Build from ``(name, value)`` pairs, keeping the first spelling of each name."""
        self._data: dict[str, tuple[str, str]] = {}
        for name, value in items:
            key = name.lower()
            if key in self._data:
                first, old = self._data[key]
                self._data[key] = (first, f"{old}, {value}")
            else:
                self._data[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        """The value of header ``name``, any case."""
        return self._data[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        """Whether header ``name`` (any case) was sent."""
        return isinstance(name, str) and name.lower() in self._data

    def __iter__(self) -> Iterator[str]:
        """Header names as first sent."""
        return (name for name, _ in self._data.values())

    def __len__(self) -> int:
        """How many distinct headers."""
        return len(self._data)

    def __repr__(self) -> str:
        """``CaseInsensitiveDict({...})``."""
        return f"CaseInsensitiveDict({dict(self.items())!r})"


@dataclass(frozen=True)
class ReceivedRequest:
    """One request the receiver got: what was sent, when, and the status it was answered with."""

    method: str
    path: str
    headers: CaseInsensitiveDict
    body: bytes
    received_at: float  # time.time() when the body had been read
    status: int  # the status chosen for the answer (sent after any hang)
    hang: float = 0.0  # seconds the answer was held back

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8", errors="replace")


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with daemon handler threads that never block ``server_close``."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # The socketserver default accept queue (5), as users run it: the sender must pace its
    # connections to it (a deeper queue here once hid that a burst overran it).

    def __init__(self, receiver: WebhookReceiver, address: tuple[str, int],
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """Bind to ``address`` and remember the receiver that holds the state (serving TLS with ``ssl_context``)."""
        self.receiver = receiver
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)
        if ssl_context is not None:
            # The handshake runs on the connection's own thread (_Handler.setup), so a client that
            # fails it (an unknown CA, no client certificate) never holds up the accept loop.
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection so :meth:`drop_connections` can end its handler thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection once its handler is done."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut down every open client connection (idle keep-alive ones included)."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client hung up (e.g. it timed out during a hang): not an error worth printing."""


class _Handler(BaseHTTPRequestHandler):
    """Records POST/PUT/PATCH requests and answers as the receiver is currently told to."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: without this, Nagle's algorithm holds the body back
    # until the client's delayed ACK (~40 ms per keep-alive request), as no real server does.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""

    def setup(self) -> None:
        """Finish the TLS handshake first on an ``https`` receiver (a failed one ends the connection)."""
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def _read_body(self) -> bytes:
        """The request body, by ``Content-Length`` or chunked transfer encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, extra: Mapping[str, str] = {}, body: bytes = b"") -> None:
        """Send ``status`` with a small body and the given headers."""
        body = body or json.dumps({"status": status}).encode()
        if status in (204, 304):  # these answers have no body (RFC 9110)
            body = b""
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> None:
        """Read, record, maybe hang, then answer."""
        body = self._read_body()
        receiver = self.server.receiver
        status, hang, headers = receiver._decide()
        request = ReceivedRequest(
            method=self.command, path=self.path,
            headers=CaseInsensitiveDict(self.headers.items()), body=body,
            received_at=time.time(), status=status, hang=hang,
        )
        receiver._add(request)
        if hang > 0 and receiver._closing.wait(hang):
            self.close_connection = True
            return  # closing: drop the connection without an answer
        try:
            self._answer(status, headers)
        except OSError:
            self.close_connection = True  # the client gave up meanwhile

    do_POST = do_PUT = do_PATCH = _record

    def do_GET(self) -> None:
        """A health check; not recorded."""
        self._answer(200, body=b'{"ok": true}')


class WebhookReceiver:
    """A loopback HTTP server recording each POST; its answers (status, delay, Retry-After) are set at runtime."""

    def __init__(self, *, path: str = "/hook", status: int = 200,
                 status_sequence: Iterable[int] = (), retry_after: int | str | None = None,
                 hang: float = 0.0, max_hang: float = MAX_HANG, port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """Bind to 127.0.0.1 (a free port unless ``port``) and serve on a daemon thread right away.

        With ``ssl_context`` (a server context: its certificate, and a CA to require client certificates
        from if it should) it serves ``https``.
        """
        self.path = path if path.startswith("/") else "/" + path
        self.max_hang = max_hang
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[ReceivedRequest] = []
        self._status = status
        self._sequence: list[int] = list(status_sequence)
        self._retry_after: str | None = None if retry_after is None else str(retry_after)
        self._hang = 0.0
        self.set_hang(hang)
        self._closing = threading.Event()
        self.scheme = "https" if ssl_context is not None else "http"
        self._server = _Server(self, (LOOPBACK, port), ssl_context)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"webhook-receiver-{self.port}", daemon=True)
        self._thread.start()

    # --- addresses ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` when serving TLS)."""
        return f"{self.scheme}://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The webhook URL, ``http://127.0.0.1:PORT/hook`` by default (any path is accepted)."""
        return self.base_url + self.path

    def url_for(self, path: str) -> str:
        """The URL of another path on this receiver."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # --- behaviour ------------------------------------------------------------------------------

    def set_status(self, code: int) -> None:
        """Answer every following request with ``code`` (once any ``status_sequence`` is used up)."""
        with self._lock:
            self._status = int(code)

    def set_status_sequence(self, codes: Iterable[int]) -> None:
        """Answer the next requests with ``codes`` in order (one each), then fall back to ``set_status``."""
        with self._lock:
            self._sequence = [int(c) for c in codes]

    def set_hang(self, seconds: float) -> None:
        """Hold each following answer back for ``seconds`` (capped at ``max_hang``; 0 turns it off)."""
        with self._lock:
            self._hang = max(0.0, min(float(seconds), self.max_hang))

    def set_retry_after(self, value: int | str | None) -> None:
        """Send ``Retry-After: value`` with every non-2xx answer (``None`` stops sending it)."""
        with self._lock:
            self._retry_after = None if value is None else str(value)

    def _decide(self) -> tuple[int, float, dict[str, str]]:
        """Status, hang and extra headers for the request being served (consumes the sequence)."""
        with self._lock:
            status = self._sequence.pop(0) if self._sequence else self._status
            headers = {}
            if self._retry_after is not None and not 200 <= status < 300:
                headers["Retry-After"] = self._retry_after
            return status, self._hang, headers

    def _add(self, request: ReceivedRequest) -> None:
        """Record ``request`` and wake :meth:`wait_for`."""
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    # --- what was received ----------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """A snapshot of the recorded requests, oldest first (only those to ``path`` if given)."""
        with self._lock:
            got = list(self._requests)
        return got if path is None else [r for r in got if r.path == path]

    def bodies_json(self, path: str | None = None) -> list[Any]:
        """The recorded bodies parsed as JSON, oldest first."""
        return [r.json() for r in self.requests(path)]

    def clear(self) -> None:
        """Forget the requests recorded so far."""
        with self._lock:
            self._requests.clear()

    def wait_for(self, predicate: Callable[[list[ReceivedRequest]], Any], timeout: float = 10.0
                 ) -> list[ReceivedRequest]:
        """Wait until ``predicate(requests())`` is truthy and return the requests; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                snapshot = list(self._requests)
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    summary = [(r.method, r.path, r.status, r.body[:200]) for r in snapshot[:10]]
                    raise TimeoutError(f"webhook receiver: condition not met after {timeout:g} s; "
                                       f"{len(snapshot)} request(s): {summary}")
                self._changed.wait(min(remaining, 0.1))

    def wait_for_count(self, n: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """Wait until at least ``n`` requests have arrived."""
        return self.wait_for(lambda reqs: len(reqs) >= n, timeout)

    # --- lifecycle ------------------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Close every client connection now, idle keep-alive ones included (a receiver restarting)."""
        self._server.drop_connections()

    def close(self) -> None:
        """Wake any hanging handlers, stop serving and close the socket; safe to call twice."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.drop_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebhookReceiver:
        """The receiver is already serving."""
        return self

    def __exit__(self, *exc: object) -> None:
        """:meth:`close`."""
        self.close()
