"""A real Redis server (Debian's ``redis-server``) on a loopback port, for end-to-end tests.

    with RedisServer() as redis_server:
        redis_server.client().set("k", "v")
        storage = redis_server.url          # redis://127.0.0.1:PORT

As a pytest fixture::

    @pytest.fixture(scope="module")
    def redis_server():
        with RedisServer() as server:
            yield server

The server runs in the foreground as our own subprocess (``--daemonize no``), listens only on
127.0.0.1 (no Unix socket), keeps nothing on disk (``--save ''``, ``--appendonly no``), has its
working directory in a private ``mkdtemp`` directory under ``/tmp``, and is always stopped and the
directory removed on :meth:`RedisServer.close` (also at interpreter exit).
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .ports import free_port

LOOPBACK = "127.0.0.1"
INSTALL_HINT = ("redis-server was not found in /usr/bin nor on PATH: install Debian's redis-server "
                "package (apt-get install redis-server)")


def redis_server_binary() -> str:
    """The ``redis-server`` executable, or a clear error saying how to get it."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise RuntimeError(INSTALL_HINT)


class RedisServer:
    """One throw-away Redis server on 127.0.0.1, in memory only."""

    def __init__(self, *, port: int | None = None) -> None:
        """Prepare (but do not start) a server; ``port`` defaults to a free loopback port."""
        self.binary = redis_server_binary()
        self.host = LOOPBACK
        self.port = port or free_port()
        self._fixed_port = port is not None
        self.base_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._closed = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT`` (what ``limits`` and ``redis.Redis.from_url`` take)."""
        return f"redis://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._base() / "redis.log"

    def log(self) -> str:
        """What the server has written to its log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _base(self) -> Path:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="nexus-redis-", dir="/tmp"))
        return self.base_dir

    def _command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", self.host,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
                "--dir", str(self._base()), "--logfile", str(self.log_path)]

    def _ping(self) -> bool:
        """A raw RESP ``PING`` (no client library needed): whether the server answers ``+PONG``."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None and self._ping()

    def start(self, timeout: float = 15.0) -> RedisServer:
        """Start the server and wait until it answers ``PING``; retry on another port if it was taken."""
        if self._closed:
            raise RuntimeError("this RedisServer was closed; make a new one")
        if self.is_running():
            return self
        atexit.register(self.close)
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.process = subprocess.Popen(self._command(), cwd=self._base(), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None or self._ping():
                    break
                time.sleep(0.02)
            if self.process.poll() is None and self._ping():
                return self
            stderr = self._reap()
            log = self.log()
            if attempt < attempts - 1 and "in use" in log + stderr:
                self.port = free_port()
                continue
            raise RuntimeError(f"redis-server did not answer PING on {self.url} within {timeout} s:\n"
                               f"{stderr}\n--- server log ---\n{log}")
        raise AssertionError("unreachable")

    def _reap(self) -> str:
        """Stop the process (SIGTERM, then SIGKILL) and return its stderr."""
        process, self.process = self.process, None
        if process is None:
            return ""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        err = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.stderr:
            process.stderr.close()
        return err

    def stop(self) -> None:
        """Stop the server (its data is in memory only, so it is gone)."""
        self._reap()

    def close(self) -> None:
        """Stop the server and remove its directory; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            atexit.unregister(self.close)
            self.stop()
        finally:
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def client(self, **kwargs: Any) -> Any:
        """A ``redis.Redis`` client for this server (strings decoded unless told otherwise)."""
        import redis

        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("socket_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def __enter__(self) -> RedisServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
