"""Webhook receivers as users run them, not tuned to the sender, on loopback.

- :class:`StockReceiver`: Python's stock ``http.server.ThreadingHTTPServer`` and
  ``BaseHTTPRequestHandler`` with nothing changed: an accept queue of 5 (``listen(5)``),
  HTTP/1.0 (a connection per request), a thread per connection. Optionally slow
  (``delay`` seconds before each answer).
- :class:`PoolReceiver`: a small worker pool behind a front that answers at once:
  ``capacity`` requests are served at a time (``work`` seconds each), any beyond that get
  ``503 Service Unavailable`` (no ``Retry-After``), the shape of a few workers behind a proxy.

Both record every attempt (arrival time, ``webhook-id``, status) for the tests to read.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Attempt:
    """One request the receiver got: when (``time.monotonic()``), its ``webhook-id``, the status it was given."""

    at: float
    webhook_id: str
    status: int


class _Recorder:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self.lock = threading.Lock()

    def add(self, webhook_id: str, status: int) -> None:
        with self.lock:
            self.attempts.append(Attempt(time.monotonic(), webhook_id, status))


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status = self.server.answer()
        self.server.recorder.add(self.headers.get("webhook-id", ""), status)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class _Base:
    """Serve on a free loopback port in a thread; ``with`` closes it."""

    def __init__(self) -> None:
        self.recorder = _Recorder()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # the stock server: listen(5), HTTP/1.0
        self.server.answer = self._answer  # type: ignore[attr-defined]
        self.server.recorder = self.recorder  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _answer(self) -> int:
        raise NotImplementedError

    def __enter__(self) -> _Base:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def attempts(self) -> list[Attempt]:
        with self.recorder.lock:
            return list(self.recorder.attempts)

    def delivered(self) -> list[str]:
        """The ``webhook-id`` of every request answered 2xx, in arrival order."""
        return [a.webhook_id for a in self.attempts if 200 <= a.status < 300]

    def wait_for(self, n: int, timeout: float) -> bool:
        """True once ``n`` requests have been answered 2xx (False after ``timeout`` seconds)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if len(self.delivered()) >= n:
                return True
            time.sleep(0.02)
        return len(self.delivered()) >= n


class StockReceiver(_Base):
    """Python's stock threading HTTP server answering 200, after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay

    def _answer(self) -> int:
        if self.delay:
            time.sleep(self.delay)
        return 200


class PoolReceiver(_Base):
    """``capacity`` requests served at a time (``work`` seconds each); 503 at once beyond that."""

    def __init__(self, capacity: int = 4, work: float = 0.02) -> None:
        super().__init__()
        self.work = work
        self._slots = threading.BoundedSemaphore(capacity)

    def _answer(self) -> int:
        if not self._slots.acquire(blocking=False):
            return 503
        try:
            time.sleep(self.work)
        finally:
            self._slots.release()
        return 200
