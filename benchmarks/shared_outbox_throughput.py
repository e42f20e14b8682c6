"""Webhook deliveries per second from the shared PostgreSQL outbox: one delivering process against three.

Run::

    python benchmarks/shared_outbox_throughput.py            # full run (about two minutes)
    python benchmarks/shared_outbox_throughput.py --smoke    # a tiny run that only shows it works

What runs, all on this machine:

- PostgreSQL (``tests/postgres_server.py``), started with its own defaults (``fsync`` and
  ``synchronous_commit`` on: a commit waits for the disk, as users run it; ``--pg fast`` turns them off).
- The receiver, a process of its own: Python's stock ``http.server.ThreadingHTTPServer`` with nothing tuned to
  the sender (its accept queue of 5, HTTP/1.0 so a connection per request, a thread per connection). It answers
  each POST 200 after ``--delay`` seconds (default 10 ms, the middle of what a receiver that does its own work
  before answering takes: a commit to its own database, a job queued) and records each ``webhook-id`` with its
  arrival time. It does not check signatures (the delay stands for its work).
- The delivering processes: each a Nexus app on the shared outbox (``Nexus(outbox=<URL>)``) with
  ``WebhookPlugin(<receiver>, secret=...)`` and every other setting its default (128 in flight at most per
  destination, adaptive; 5 s timeout; delivery spans to the local trace store, as with no OTLP endpoint set).

A round puts a backlog of ``--messages`` webhook messages in the outbox (``PostgresOutbox.enqueue``, one
transaction; each the stored record of a completed execution, as ``WebhookPlugin`` queues it) once its delivering
processes are ready, and ends when the receiver has every one and the table is empty. Rounds alternate between
one process and ``--processes`` (default 3), the order turning every pair (harness.rotated). A round's rate is
the steady one: the deliveries between the 10th and the 90th percentile of arrivals divided by the time between
them (an idle worker looks for due messages once a second, so the first ones start up to a second apart; the
last batch's tail is not the rate). The figure is the median over rounds; the ratio is the median over pairs of
that pair's rates (they ran back to back), the ratio of the medians beside it.

Each round checks that every message arrived (the ``webhook-id`` of each, counted at the receiver; the
delivering processes' own counts add up to the backlog), none more often than at-least-once allows (repeats no
more than the attempts the processes retried: an answer that timed out may have been received) and the table is
empty: a lease lasts 60 s, far longer than a round, so any other repeat could only be a lease that failed.

The ceilings, measured in the same run: the receiver alone, before the rounds (a plain asyncio client in a
process of its own, 8 and then 32 requests at once, a connection each, no outbox: the most it answers); the CPU
each process used (the delivering processes, the receiver, PostgreSQL's server processes) per message and as
cores busy over the round, against this machine's cores (and the whole machine's busy cores, other work
included); the receiver's accept-queue overflows (the kernel's ``ListenOverflows``, all sockets). The
per-message CPU of delivery from the shared outbox is the delivering processes' CPU (lease, sign, post, ack,
their spans) divided by the messages, PostgreSQL's share beside it. The script always exits 0 (``--smoke``: 1
when a check fails).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import add_smoke_option, paired_ratio, process_cpu, rotated, smoke_verdict, tree_cpu
from loopback_process import HOST, LoopbackProcess

from tests.postgres_server import SERVER_SETTINGS, PostgresServer

HERE = os.path.abspath(__file__)
READY = "READY"
ROUND_TIMEOUT = 120.0  # seconds a round may take before it is reported stalled
WINDOW = (0.10, 0.90)  # the steady part of a round: between these fractions of the arrivals
SETTINGS = {"durable": (), "fast": SERVER_SETTINGS}
CAPACITY_CONCURRENCY = (8, 32)  # requests at once of the plain client that measures the receiver alone


# --------------------------------------------------------------------------------------
# The receiver (a process of its own): the stock threading server, a fixed delay
# --------------------------------------------------------------------------------------
def receiver_main(delay: float, accept_queue: int) -> int:
    """``--receiver`` mode: answer each POST 200 after ``delay`` s; ``GET /count``, ``GET /arrivals?since=k``.
    ``accept_queue``: the listen backlog (socketserver's is 5)."""
    lock = threading.Lock()
    arrivals: list[tuple[float, str]] = []

    class Handler(BaseHTTPRequestHandler):  # HTTP/1.0, as the stock handler: a connection per request
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            time.sleep(delay)
            with lock:
                arrivals.append((time.monotonic(), self.headers.get("webhook-id") or ""))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            with lock:
                if self.path.startswith("/arrivals"):
                    since = int(self.path.partition("since=")[2] or 0)
                    body = json.dumps(arrivals[since:]).encode()
                else:
                    body = json.dumps({"count": len(arrivals)}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = accept_queue  # 5 unless told: socketserver's listen(5), as shipped
        daemon_threads = True

    server = Server((HOST, 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server.serve_forever(poll_interval=0.5)
    return 0


class Receiver(LoopbackProcess):
    """``receiver_main`` in a child process: its CPU is its own."""

    def __init__(self, delay: float, accept_queue: int) -> None:
        super().__init__(HERE, "--receiver", "--delay", str(delay), "--accept-queue", str(accept_queue),
                         what="webhook receiver")
        self.url = f"{self.base}/hook"

    def count(self) -> int:
        return int(self.get_json("/count", timeout=10)["count"])

    def arrivals(self, since: int) -> list[tuple[float, str]]:
        return [(float(t), str(i)) for t, i in self.get_json(f"/arrivals?since={since}", timeout=30)]


# --------------------------------------------------------------------------------------
# A delivering process: a Nexus app on the shared outbox with the WebhookPlugin
# --------------------------------------------------------------------------------------
def deliver_main(outbox: str, url: str, secret: str) -> int:
    """``--deliver`` mode: deliver from the shared outbox until SIGTERM; then print this process's counts."""
    from nexus_otel import Nexus
    from nexus_otel.plugins import WebhookPlugin

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    app = Nexus("throughput", outbox=outbox)
    webhook = WebhookPlugin(url, secret=secret)
    app.add_plugin(webhook)
    app.start()
    print(READY, flush=True)
    stop.wait()
    exporter = webhook.exporter
    assert exporter is not None
    report = {**exporter.counts, **{f"attempts_{k}": v for k, v in exporter.attempts.counts.items()},
              "limit": max((d.limit for d in exporter.destinations()), default=0)}
    app.stop()
    print(json.dumps(report), flush=True)
    return 0


class Deliverer:
    """``deliver_main`` in a child process, ready once it printed ``READY``."""

    def __init__(self, outbox: str, url: str, secret: str, data_dir: str, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "NEXUS_OTEL_"))}
        env["NEXUS_OTEL_DATA_DIR"] = data_dir
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, HERE, "--deliver", "--outbox", outbox, "--url", url,
                                      "--secret", secret], stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     env=env)
        self.timeout = timeout

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, deadline: float) -> None:
        assert self.proc.stdout is not None
        line = ""
        while time.monotonic() < deadline and line.strip() != READY:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
        if line.strip() != READY:
            raise RuntimeError(f"delivering process did not start: {self._error()}")

    def stop(self) -> dict[str, int]:
        """SIGTERM; its delivery counts (empty if it printed none)."""
        assert self.proc.stdout is not None
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate(timeout=10)
        self._stderr.close()
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                return {k: int(v) for k, v in json.loads(line).items()}
        return {}

    def _error(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()[-800:] or "(nothing on stderr)"


# --------------------------------------------------------------------------------------
# The receiver's capacity alone: a plain client (a process of its own), no outbox
# --------------------------------------------------------------------------------------
def load_main(url: str, concurrency: int, seconds: float) -> int:
    """``--load`` mode: ``concurrency`` asyncio clients POST to ``url`` for ``seconds``, each request on a connection
    of its own (the stock server's HTTP/1.0); prints ``{"answered": n, "seconds": s}``."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body = b"{}"

    async def client(c: int, end: float, answered: list[int]) -> None:
        i = 0
        while time.monotonic() < end:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(f"POST {parts.path} HTTP/1.0\r\nhost: {parts.netloc}\r\nwebhook-id: load-{c}-{i}\r\n"
                         f"content-length: {len(body)}\r\n\r\n".encode() + body)
            head = await reader.read()  # HTTP/1.0: the server closes after its answer
            writer.close()
            if head.startswith(b"HTTP/1.0 200"):
                answered[0] += 1
            i += 1

    async def main() -> tuple[int, float]:
        answered = [0]
        start = time.monotonic()
        await asyncio.gather(*(client(c, start + seconds, answered) for c in range(concurrency)))
        return answered[0], time.monotonic() - start

    answered, took = asyncio.run(main())
    print(json.dumps({"answered": answered, "seconds": took}), flush=True)
    return 0


def receiver_capacity(receiver: Receiver, concurrency: int, seconds: float) -> tuple[float, float]:
    """(requests/s the receiver answered, cores its process was busy) under ``load_main`` at ``concurrency``."""
    before = process_cpu(receiver.proc.pid)
    out = subprocess.run([sys.executable, HERE, "--load", "--url", receiver.url, "--concurrency", str(concurrency),
                          "--seconds", str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    busy = process_cpu(receiver.proc.pid) - before
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise RuntimeError(f"the load client failed: {out.stderr.strip()[-500:]}") from exc
    return result["answered"] / result["seconds"], busy / result["seconds"]


# --------------------------------------------------------------------------------------
# Rounds
# --------------------------------------------------------------------------------------
def listen_overflows() -> int:
    """The kernel's ``TcpExt: ListenOverflows`` (every socket): connections an accept queue had no room for."""
    try:
        lines = [line.split() for line in Path("/proc/net/netstat").read_text().splitlines()
                 if line.startswith("TcpExt:")]
        return int(dict(zip(lines[0], lines[1]))["ListenOverflows"])
    except (OSError, KeyError, IndexError, ValueError):
        return 0


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far, every process (``/proc/stat``; (0, 0) elsewhere)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return sum(fields) - fields[3] - fields[4], sum(fields)  # all but idle and iowait


def backlog(n: int, url: str) -> list[tuple[str, str, str]]:
    """``n`` webhook messages as ``WebhookPlugin`` queues them: the stored record of a completed execution."""
    from nexus_otel.exporters.webhook import message_id_of
    from nexus_otel.records import ExecutionRecord

    items = []
    now = time.time()
    for _ in range(n):
        record = ExecutionRecord("ship", uuid.uuid4().hex, "completed", "api", None, now, now + 0.001, 0.001,
                                 uuid.uuid4().hex, uuid.uuid4().hex[:16], True)
        items.append((message_id_of(record.workflow_id), url, record.to_json()))
    return items


@dataclass
class Round:
    processes: int
    rate: float = 0.0  # deliveries/s, steady window
    overall: float = 0.0  # deliveries/s, from the enqueue's commit to the last arrival
    seconds: float = 0.0  # the steady window's length
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds over the round: deliver, receiver, database
    elapsed: float = 0.0  # wall seconds from the enqueue's commit to the table's being empty
    overflows: int = 0
    shares: list[int] = field(default_factory=list)  # deliveries per process
    limits: list[int] = field(default_factory=list)  # each process's adaptive limit as it stopped
    slow_accepts: int = 0  # attempts whose connection was not accepted in time, all processes
    retried: int = 0  # failed attempts the processes retried (an answer that timed out may have arrived)
    problems: list[str] = field(default_factory=list)


def run_round(k: int, n: int, pg: PostgresServer, outbox: Any, receiver: Receiver, postmaster: int,
              secret: str, tmp: str) -> Round:
    """Start ``k`` delivering processes, give them a backlog of ``n``, time its delivery, check it, stop them."""
    result = Round(k)
    deliverers: list[Deliverer] = []
    try:
        for i in range(k):
            deliverers.append(Deliverer(pg.dsn, receiver.url, secret, os.path.join(tmp, f"p{k}-{i}-{time.time()}")))
        deadline = time.monotonic() + 60
        for d in deliverers:
            d.wait_ready(deadline)
        items = backlog(n, receiver.url)
        expected = {message_id for message_id, _, _ in items}
        since = receiver.count()
        overflows = listen_overflows()
        outbox.enqueue(items)
        start = time.monotonic()
        ticks = machine_ticks()
        cpu0 = {"deliver": sum(process_cpu(d.pid) for d in deliverers), "receiver": process_cpu(receiver.proc.pid),
                "database": tree_cpu(postmaster)}  # after the enqueue: its insert is not the delivery's
        stall = start + ROUND_TIMEOUT
        sleep = 0.01
        while time.monotonic() < stall and (receiver.count() - since < n or outbox.counts()["pending"]):
            time.sleep(sleep)
            sleep = min(sleep * 1.5, 0.1)
        result.elapsed = time.monotonic() - start
        result.cpu = {"deliver": sum(process_cpu(d.pid) for d in deliverers) - cpu0["deliver"],
                      "receiver": process_cpu(receiver.proc.pid) - cpu0["receiver"],
                      "database": tree_cpu(postmaster) - cpu0["database"]}
        busy, total = (b - a for a, b in zip(ticks, machine_ticks()))
        result.cpu["machine"] = busy / total * (os.cpu_count() or 1) * result.elapsed if total else 0.0
        result.overflows = listen_overflows() - overflows
        arrivals = receiver.arrivals(since)
    finally:
        ends = [d.stop() for d in deliverers]
        result.shares = [end.get("delivered", -1) for end in ends]
        result.limits = [end.get("limit", -1) for end in ends]
        result.slow_accepts = sum(end.get("attempts_connect_timeout", 0) for end in ends)
        result.retried = sum(end.get("retried", 0) for end in ends)
    ids = [i for _, i in arrivals]
    lost, twice = len(expected - set(ids)), len(ids) - len(set(ids))
    # At least once: an attempt whose answer timed out may have been received, and is sent again (the same
    # webhook-id). More repeats than retried attempts would be a message delivered by two processes at once.
    if lost or twice > result.retried or set(ids) - expected:
        stalled = f" (the round stopped at {ROUND_TIMEOUT:g} s)" if result.elapsed >= ROUND_TIMEOUT else ""
        result.problems.append(f"{k} process(es): {len(ids)} deliveries of {n} messages: {lost} never arrived, "
                               f"{twice} arrived twice, {len(set(ids) - expected)} not of this backlog{stalled}")
    if sum(result.shares) != n:
        result.problems.append(f"{k} process(es): the processes count {result.shares} deliveries, not {n} in all")
    left = outbox.counts()
    if left["pending"] or left["dead"]:
        result.problems.append(f"{k} process(es): the outbox table holds {left} after the round")
    times = sorted(t for t, _ in arrivals)
    if len(times) >= 2:
        lo, hi = int(WINDOW[0] * (len(times) - 1)), int(WINDOW[1] * (len(times) - 1))
        result.seconds = times[hi] - times[lo]
        result.rate = (hi - lo) / result.seconds if result.seconds > 0 else 0.0
        result.overall = len(times) / max(times[-1] - start, 1e-9)
    return result


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def _per_message_us(rounds: list[Round], key: str, n: int) -> float:
    return statistics.median(r.cpu[key] for r in rounds) / n * 1e6


def _cores(rounds: list[Round], key: str) -> float:
    """Cores busy over a round (CPU seconds / wall seconds), median over rounds."""
    return statistics.median(r.cpu[key] / r.elapsed for r in rounds if r.elapsed > 0)


def report(rounds: list[Round], k: int, n: int, delay: float, capacity: dict[int, tuple[float, float]]) -> None:
    one = [r for r in rounds if r.processes == 1]
    many = [r for r in rounds if r.processes != 1]
    print()
    print("deliveries/s (steady window: 10th to 90th percentile of arrivals), each round in the order it ran:")
    for r in rounds:
        print(f"  {r.processes} process(es): {r.rate:8.0f}/s steady, {r.overall:8.0f}/s overall "
              f"({r.elapsed:.1f} s), per process {r.shares}, in flight at the receiver {r.rate * delay:.1f} on "
              f"average, adaptive limits at the end {r.limits}, accept-queue overflows {r.overflows}, "
              f"connect timeouts {r.slow_accepts}")
    rate1, ratek = statistics.median(r.rate for r in one), statistics.median(r.rate for r in many)
    ratio = paired_ratio([r.rate for r in many], [r.rate for r in one])
    print()
    print(f"1 process: {rate1:.0f} deliveries/s;  {k} processes: {ratek:.0f} deliveries/s (medians over "
          f"{len(one)} rounds each)")
    print(f"ratio {k} processes / 1 process: {ratio:.2f} (median over pairs; ratio of medians "
          f"{ratek / rate1:.2f}); target >= 2.5: {'MET' if ratio >= 2.5 else 'NOT MET'}")
    print()
    print("CPU per message delivered (median over rounds, microseconds):")
    cores = os.cpu_count() or 1
    for label, rounds in (("1 process", one), (f"{k} processes", many)):
        parts = {key: _per_message_us(rounds, key, n) for key in ("deliver", "receiver", "database")}
        busy = {key: _cores(rounds, key) for key in parts}
        print(f"  {label:<11}: delivering processes {parts['deliver']:.0f} us, receiver {parts['receiver']:.0f} us, "
              f"PostgreSQL {parts['database']:.0f} us; cores busy: delivering {busy['deliver']:.2f}, receiver "
              f"{busy['receiver']:.2f}, PostgreSQL {busy['database']:.2f}, these {sum(busy.values()):.2f}, the "
              f"whole machine {_cores(rounds, 'machine'):.2f} (other work included) of {cores}")
    parts = {key: _per_message_us(many, key, n) for key in ("deliver", "receiver", "database")}
    cpu_bound = cores / sum(parts.values()) * 1e6
    receiver_busy, machine_busy, db_busy = _cores(many, "receiver"), _cores(many, "machine"), _cores(many, "database")
    overflows = statistics.median(r.overflows for r in many)
    print()
    for concurrency, (rate, busy) in sorted(capacity.items()):
        print(f"the receiver alone (a plain asyncio client, {concurrency} requests at once, a connection each): "
              f"{rate:.0f} answers/s, its process {busy:.2f} of a core busy")
    receiver_bound = max((rate for rate, _ in capacity.values()), default=float("inf"))
    print(f"ceilings of {k} processes' rate, as measured here (the 1-process rate is {rate1:.0f}/s):")
    print(f"  the receiver, alone: {receiver_bound:.0f}/s = {receiver_bound / rate1:.2f}x (with {k} processes it "
          f"was {receiver_busy:.2f} of a core busy; its accept queue overflowed {overflows:.0f} times a round)")
    print(f"  the CPU: {cores} cores / {sum(parts.values()):.0f} us per message (delivering {parts['deliver']:.0f} + "
          f"receiver {parts['receiver']:.0f} + PostgreSQL {parts['database']:.0f}) = {cpu_bound:.0f}/s = "
          f"{cpu_bound / rate1:.2f}x, if nothing else ran (the whole machine was {machine_busy:.2f} of {cores} "
          f"cores busy)")
    print(f"  the database: {db_busy:.2f} of a core busy ({parts['database']:.0f} us per message)")
    lowest = "the receiver" if receiver_bound <= cpu_bound else "the CPU"
    print(f"what stops it: {lowest} ({k} processes reached {ratek / min(receiver_bound, cpu_bound):.0%} of it)")
    print(f"per-message CPU of delivery from the shared outbox (1 process; lease, sign, post, ack, spans): "
          f"{_per_message_us(one, 'deliver', n):.0f} us in the delivering process + "
          f"{_per_message_us(one, 'database', n):.0f} us in PostgreSQL")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_smoke_option(parser, "40 messages, one round each of 1 and 3 processes")
    parser.add_argument("--messages", type=int, default=None, help="backlog per round (default 6000; smoke 40)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="rounds of each kind, alternating (default 4; smoke 1)")
    parser.add_argument("--processes", type=int, default=3, help="delivering processes against one (default 3)")
    parser.add_argument("--delay", type=float, default=0.010, help="the receiver's seconds before it answers")
    parser.add_argument("--accept-queue", type=int, default=5,
                        help="the receiver's listen backlog (default 5, socketserver's; more is a tuned receiver)")
    parser.add_argument("--pg", choices=sorted(SETTINGS), default="durable",
                        help="PostgreSQL's settings: durable (its defaults, fsync on) or fast (fsync off)")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--deliver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--outbox", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=4.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        return receiver_main(args.delay, args.accept_queue)
    if args.deliver:
        return deliver_main(args.outbox, args.url, args.secret)
    if args.load:
        return load_main(args.url, args.concurrency, args.seconds)

    from nexus_otel.outbox import PostgresOutbox

    n = args.messages or (40 if args.smoke else 6000)
    pairs = args.pairs or (1 if args.smoke else 4)
    k = args.processes
    t0 = time.perf_counter()
    print(f"shared outbox throughput  python {platform.python_version()}  nproc {os.cpu_count()}  load "
          f"{os.getloadavg()[0]:.2f}  {'smoke' if args.smoke else 'full'} run: {n} messages per round, {pairs} "
          f"round(s) each of 1 and {k} processes, receiver delay {args.delay * 1000:g} ms, "
          f"accept queue {args.accept_queue}, PostgreSQL {args.pg}",
          flush=True)
    problems: list[str] = []
    rounds: list[Round] = []
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with tempfile.TemporaryDirectory(prefix="nexus-otel-throughput-") as tmp, \
            PostgresServer(settings=SETTINGS[args.pg]) as pg:
        receiver = Receiver(args.delay, args.accept_queue)
        outbox = PostgresOutbox(pg.dsn)
        try:
            postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
            capacity = {c: receiver_capacity(receiver, c, 0.5 if args.smoke else 4.0) for c in CAPACITY_CONCURRENCY}
            print("  the receiver alone: " + ", ".join(f"{rate:.0f} answers/s at {c} at once"
                                                        for c, (rate, _) in capacity.items()), flush=True)
            for i in range(pairs):
                for processes in rotated((1, k), i):
                    r = run_round(processes, n, pg, outbox, receiver, postmaster, secret, tmp)
                    print(f"  round {i + 1}, {processes} process(es): {r.rate:.0f} deliveries/s "
                          f"({r.elapsed:.1f} s)", flush=True)
                    rounds.append(r)
                    problems += r.problems
                    for p in r.problems:
                        print(f"  CHECK FAILED: {p}", flush=True)
        finally:
            outbox.close()
            receiver.stop()
    if rounds and all(r.rate for r in rounds):
        report(rounds, k, n, args.delay, capacity)
    passed = "every message delivered, repeats only of retried attempts, the table empty after every round"
    print(f"checks: {passed if not problems else 'FAILED'}")
    print(f"total elapsed: {time.perf_counter() - t0:.1f} s")
    if args.smoke:
        return smoke_verdict(problems)
    return 0


if __name__ == "__main__":
    sys.exit(main())
