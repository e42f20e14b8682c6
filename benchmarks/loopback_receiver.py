"""A loopback HTTP/1.1 receiver in a process of its own, for the benchmarks (its CPU is not theirs).

    receiver = Receiver(delay_ms=50)      # starts ``python loopback_receiver.py --delay-ms 50``
    ... POST to receiver.url ...
    receiver.count()                      # {"received": n, "unique_ids": distinct webhook-id headers}
    receiver.stop()

It answers every POST ``200`` (keep-alive) after the delay, on asyncio streams,
so thousands of requests a second cost it little; ``GET /count`` returns its tallies.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request

HOST = "127.0.0.1"


def receiver_main(delay: float) -> int:
    """Serve until terminated: 200 after ``delay`` seconds for each POST; GET /count -> the tallies."""
    ids: set[str] = set()
    total = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, webhook_id = 0, ""
                lines = head.split(b"\r\n")
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                if lines[0].startswith(b"GET"):
                    body = json.dumps({"received": total[0], "unique_ids": len(ids)}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                if delay:
                    await asyncio.sleep(delay)
                total[0] += 1
                ids.add(webhook_id)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, HOST, 0, backlog=1024)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())
    return 0


class Receiver:
    def __init__(self, delay_ms: float) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--delay-ms", str(delay_ms)],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.base = f"http://{HOST}:{int(line.split()[1])}"
        self.url = self.base + "/hook"

    def count(self) -> dict[str, int]:
        with urllib.request.urlopen(self.base + "/count", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


if __name__ == "__main__":
    delay_ms = float(sys.argv[sys.argv.index("--delay-ms") + 1]) if "--delay-ms" in sys.argv else 0.0
    sys.exit(receiver_main(delay_ms / 1000))
