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
import sys

from loopback_process import LoopbackProcess, serve


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

    return serve(handle)


class Receiver(LoopbackProcess):
    def __init__(self, delay_ms: float) -> None:
        super().__init__(os.path.abspath(__file__), "--delay-ms", str(delay_ms), what="receiver")
        self.url = self.base + "/hook"

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = self.get_json("/count", timeout=10)
        return counts


if __name__ == "__main__":
    delay_ms = float(sys.argv[sys.argv.index("--delay-ms") + 1]) if "--delay-ms" in sys.argv else 0.0
    sys.exit(receiver_main(delay_ms / 1000))
