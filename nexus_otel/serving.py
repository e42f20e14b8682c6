"""Serving an app over HTTP with uvicorn, in the foreground or on a background thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from .app import Nexus
from .channels.http import create_http_app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def uvicorn_config(nexus: Nexus, host: str, port: int, **kwargs: object) -> uvicorn.Config:
    return uvicorn.Config(
        create_http_app(nexus), host=host, port=port, lifespan="on",
        log_level=str(kwargs.pop("log_level", "warning")), access_log=False, **kwargs,  # type: ignore[arg-type]
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``, or ``OSError`` (say, the port is in use).

    Binding before anything else starts lets a server fail with one clear line, not after the app
    and its plugins announced themselves.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(nexus: Nexus, host: str = "127.0.0.1", port: int = 8000, *, sock: socket.socket | None = None,
          **kwargs: object) -> None:
    """Serve until interrupted (on ``sock`` if given, from :func:`bind`); the app starts and stops with the server."""
    uvicorn.Server(uvicorn_config(nexus, host, port, **kwargs)).run(sockets=[sock] if sock is not None else None)


class BackgroundServer:
    """A uvicorn server on a thread, for demos and tests: ``with BackgroundServer(app) as url: ...``."""

    def __init__(self, nexus: Nexus, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn_config(nexus, self.host, self.port))
        self.thread = threading.Thread(target=self.server.run, name="nexus-otel-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"HTTP server did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
