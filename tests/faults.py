"""Destinations that fail the way real ones do, on 127.0.0.1: a server that accepts and never answers,
a port nobody listens on, a SQLite database another connection holds locked."""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

from .ports import free_port

LOOPBACK = "127.0.0.1"


class SilentServer:
    """Accepts TCP connections, reads what is sent, and never answers, until closed."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((LOOPBACK, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.connections = 0
        self._held: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"silent-{self.port}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _run(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setblocking(False)
            self.connections += 1
            self._held.append(conn)
            for held in self._held:  # read and discard, so senders never block on a full buffer
                try:
                    while held.recv(65536):
                        pass
                except (BlockingIOError, OSError):
                    pass

    def close(self) -> None:
        self._closing.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self._sock.close()

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (connections are refused)."""
    return f"http://{LOOPBACK}:{free_port()}"


class LockedSQLite:
    """Holds an exclusive write lock on a SQLite database file until released."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self._db.execute("ROLLBACK")
        self._db.close()
