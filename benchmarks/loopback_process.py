"""A loopback HTTP server in a process of its own, for the benchmarks' receivers and sinks (its CPU is not
the measured process's).

In the child, :func:`serve` runs an asyncio server on a free 127.0.0.1 port and prints ``PORT n`` once it
listens; in the parent, :class:`LoopbackProcess` starts the child and reads that line.
"""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

HOST = "127.0.0.1"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def serve(handle: Handler) -> int:
    """Serve ``handle`` on a free loopback port until terminated (the child's main); prints ``PORT n`` first."""

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0, backlog=1024)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())
    return 0


class LoopbackProcess:
    """``python script *args`` as a child serving on loopback: ``base`` is its ``http://127.0.0.1:port``.

    A child that does not print ``PORT n`` within ``timeout`` seconds (or exits first) is stopped, and the
    error carries the end of what it wrote to stderr (kept in a file: nobody reads it while the child runs).
    """

    def __init__(self, script: str, *args: str, what: str = "server", timeout: float = 30.0) -> None:
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and not line.startswith("PORT "):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:  # it exited
                    break
        if not line.startswith("PORT "):
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")
            self.stop()
            raise RuntimeError(f"{what} did not start: {err.strip()[-500:] or repr(line)}")
        self.base = f"http://{HOST}:{int(line.split()[1])}"

    def get_json(self, path: str, timeout: float = 30) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
