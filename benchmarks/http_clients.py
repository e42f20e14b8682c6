"""CPU per webhook POST for the HTTP clients a delivery worker could use, measured in one run.

Run::

    python benchmarks/http_clients.py            # 3 rounds of 2,000 POSTs per client
    python benchmarks/http_clients.py --quick    # 1 round of 500

The receiver is a separate process (its CPU is not counted): an asyncio HTTP/1.1
server on 127.0.0.1 that answers every POST ``200`` with keep-alive, after
``--delay-ms`` (default 0). Each client posts the same signed-size JSON body with
the same headers; the figure is this process's CPU time (``time.process_time``,
all threads) per POST, median over rounds, and the deliveries per second of wall
time. The receiver must have received every POST sent. Clients:

- ``httpx-sync``: ``httpx.Client.post``, one at a time (the worker's client before its own);
- ``httpx-async``: ``httpx.AsyncClient``, ``--concurrency`` requests in flight;
- ``aiohttp``: ``aiohttp.ClientSession``, ``--concurrency`` requests in flight;
- ``raw-httptools`` (when httptools is installed): the floor, prepared request bytes on
  ``--concurrency`` keep-alive asyncio connections, responses parsed by httptools.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from harness import add_smoke_option, smoke_verdict
from loopback_receiver import Receiver

BODY = (b'{"type":"workflow.completed","workflow":"checkout","status":"completed","duration":0.0123,'
        b'"timestamp":"2026-12-01T12:00:00+00:00","completed_at":"2026-12-01T12:00:00+00:00",'
        b'"workflow_id":"0b6e7a4c-7f1d-4a51-9b6e-3c2f1e0d9a8b","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736",'
        b'"error_type":null,"session_id":"s1","channel":"api"}')
WARMUP = 50  # POSTs per client before the rounds: imports, first connections
HEADERS = {"content-type": "application/json", "user-agent": "nexus-otel-webhooks",
           "webhook-id": "msg_0b6e7a4c", "webhook-timestamp": "1764590400",
           "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="}


def run_httpx_sync(url: str, n: int, concurrency: int) -> None:
    import httpx
    with httpx.Client(timeout=5.0) as client:
        for _ in range(n):
            client.post(url, content=BODY, headers=HEADERS).raise_for_status()


async def _bounded(n: int, concurrency: int, post: Callable[[], Awaitable[None]]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await post()

    await asyncio.gather(*(one() for _ in range(n)))


def run_httpx_async(url: str, n: int, concurrency: int) -> None:
    import httpx

    async def main() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=5.0, limits=limits) as client:
            async def post() -> None:
                (await client.post(url, content=BODY, headers=HEADERS)).raise_for_status()
            await _bounded(n, concurrency, post)

    asyncio.run(main())


def run_aiohttp(url: str, n: int, concurrency: int) -> None:
    import aiohttp

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5.0)) as session:
            async def post() -> None:
                async with session.post(url, data=BODY, headers=HEADERS) as response:
                    await response.read()
                    response.raise_for_status()
            await _bounded(n, concurrency, post)

    asyncio.run(main())


def run_raw_httptools(url: str, n: int, concurrency: int) -> None:
    """The floor for an asyncio client: one keep-alive connection per request in flight, each request
    written as prepared bytes, each response parsed by httptools (llhttp, C). Not a product client:
    no pool, redirects, TLS or timeouts; it measures what such a client could cost."""
    from urllib.parse import urlsplit

    import httptools

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (f"POST {parts.path or '/'} HTTP/1.1\r\nhost: {host}:{port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in HEADERS.items())
               + f"content-length: {len(BODY)}\r\n\r\n").encode() + BODY

    class Connection(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.transport: asyncio.Transport | None = None
            self.waiter: asyncio.Future[int] | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(self.parser.get_status_code())

        def connection_lost(self, exc: Exception | None) -> None:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc or ConnectionError("closed"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        per = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

        async def worker(count: int) -> None:
            _, conn = await loop.create_connection(Connection, host, port)
            for _ in range(count):
                conn.waiter = loop.create_future()
                assert conn.transport is not None
                conn.transport.write(request)
                if await conn.waiter != 200:
                    raise RuntimeError("not 200")
            assert conn.transport is not None
            conn.transport.close()

        await asyncio.gather(*(worker(k) for k in per if k))

    asyncio.run(main())


CLIENTS = {"httpx-sync": run_httpx_sync, "httpx-async": run_httpx_async, "aiohttp": run_aiohttp}
try:
    import httptools  # noqa: F401 - optional: uvicorn[standard] brings it
    CLIENTS["raw-httptools"] = run_raw_httptools
except ImportError:
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=32)
    add_smoke_option(parser, "1 round of 50 POSTs per client")
    args = parser.parse_args(argv)
    rounds, n = (1, 50) if args.smoke else (1, 500) if args.quick else (3, 2000)
    receiver = Receiver(args.delay_ms)
    try:
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in CLIENTS}
        for run in CLIENTS.values():  # warm-up: imports, first connections
            run(receiver.url, WARMUP, args.concurrency)
        for _ in range(rounds):
            for name, run in CLIENTS.items():
                cpu, wall = time.process_time(), time.perf_counter()
                run(receiver.url, n, args.concurrency)
                results[name].append(((time.process_time() - cpu) / n * 1e6, n / (time.perf_counter() - wall)))
        received, sent = receiver.count()["received"], len(CLIENTS) * (WARMUP + rounds * n)
    finally:
        receiver.stop()
    problems = [] if received == sent else [f"the receiver got {received} POSTs of the {sent} sent"]
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    print(f"POST to a receiver in another process, {args.delay_ms:g} ms answers, "
          f"concurrency {args.concurrency} for the async clients; {rounds} x {n} POSTs each")
    print(f"{'client':<12} {'CPU us/POST (median)':>21} {'POSTs/s (median)':>17}")
    for name, figures in results.items():
        cpu = statistics.median(f[0] for f in figures)
        rate = statistics.median(f[1] for f in figures)
        print(f"{name:<12} {cpu:>21.1f} {rate:>17.0f}")
    return smoke_verdict(problems) if args.smoke else 0


if __name__ == "__main__":
    sys.exit(main())
