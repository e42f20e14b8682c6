"""A worker of ``nexus-otel serve --workers 2`` killed outright (SIGKILL) under load: ``/metrics`` stays exact.

The run is real: the command's supervisor and worker processes on a loopback
port, 4 clients posting 1,000 requests, a scraper reading ``/metrics`` all the
while, and two workers SIGKILLed (the supervisor starts a new one each time).

A request cut off by the kill has no honest count: it may have been counted
just before its answer was lost. So the clients pause for each kill: a worker
is killed right after its last answer, with no request in flight (scrapes go
on), and every one of the 1,000 requests was answered exactly once. That is the
case a periodic snapshot gets wrong: the counts since the dead worker's last
snapshot are lost, and the totals drop.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from .test_workers import CLOSE, scrape_total, serve_workers

REQUESTS = 1000
KILL_AFTER = (300, 650)
"""Answered requests after which a worker is killed."""


@pytest.fixture
def short_dir():
    """A short temporary directory for the server's (Unix socket names are limited to about 100 characters)."""
    path = Path(tempfile.mkdtemp(prefix="nk-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Load:
    """``clients`` threads posting ``work`` until ``total`` requests were answered 200; a failed attempt is retried.

    :meth:`quiet` holds the clients between requests, so a kill lands with none in flight.
    """

    def __init__(self, url: str, total: int, clients: int = 4) -> None:
        self.url = url
        self.total = total
        self.answered: collections.Counter[int] = collections.Counter()
        self.last_pid = 0
        self.retried: list[str] = []
        self.errors: list[str] = []
        self._taken = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def _client(self) -> None:
        with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while True:
                self._open.wait()
                with self._lock:
                    if not self._open.is_set():
                        continue
                    if self._taken >= self.total:
                        return
                    self._taken += 1
                    self._in_flight += 1
                pid = error = None
                try:
                    r = client.post(f"{self.url}/workflows/work", json={}, headers=CLOSE)
                    if r.status_code == 200:
                        pid = r.json()["result"]["pid"]
                    else:
                        error = f"{r.status_code} {r.text[:200]}"
                except httpx.TransportError as exc:  # its connection went to the dying worker: sent again
                    error = f"retried: {type(exc).__name__}"
                with self._lock:
                    self._in_flight -= 1
                    if pid is not None:
                        self.answered[pid] += 1
                        self.last_pid = pid
                    else:
                        self._taken -= 1
                        (self.retried if error.startswith("retried") else self.errors).append(error)

    def done(self) -> int:
        with self._lock:
            return sum(self.answered.values())

    def quiet(self) -> None:
        """Hold the clients and wait until no request is in flight."""
        self._open.clear()
        while True:
            with self._lock:
                if self._in_flight == 0:
                    return
            time.sleep(0.002)

    def resume(self) -> None:
        self._open.set()


def gone(pid: int) -> bool:
    """Whether ``pid`` has ended (a zombie its supervisor has not reaped yet counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_totals_never_decrease_and_count_every_request_of_killed_workers(tmp_path, short_dir):
    """Two SIGKILLs during 1,000 requests: every scrape's total is at least the one before, and the last is 1,000."""
    served = serve_workers(tmp_path, short_dir)
    totals: list[float] = []
    scrape_failures: list[str] = []
    scraping = threading.Event()
    scraping.set()

    def scraper() -> None:
        while scraping.is_set():
            try:
                totals.append(scrape_total(served.url, "nexus_workflow_executions_total"))
            except httpx.TransportError as exc:  # a scrape answered by the worker being killed
                scrape_failures.append(type(exc).__name__)
            time.sleep(0.01)

    load = Load(served.url, REQUESTS)
    killed: list[tuple[int, int]] = []  # (pid, scrapes before its kill)
    scraping_thread = threading.Thread(target=scraper, daemon=True)
    try:
        scraping_thread.start()
        for t in load.threads:
            t.start()
        for after in KILL_AFTER:
            deadline = time.monotonic() + 30
            while load.done() < after:
                assert time.monotonic() < deadline, f"{load.done()} answered in 30 s; errors: {load.errors[:3]}"
                time.sleep(0.005)
            load.quiet()
            victim = load.last_pid  # it has just answered: its newest counts are in no periodic snapshot
            os.kill(victim, signal.SIGKILL)
            while not gone(victim):
                time.sleep(0.002)
            killed.append((victim, len(totals)))
            load.resume()
        for t in load.threads:
            t.join(30)
        deadline = time.monotonic() + 15  # the supervisor replaces the dead: two live workers again
        while True:
            live = {int(p.stem) for p in short_dir.glob("nexus-otel-workers-*/*.sock") if p.stem.isdigit()}
            live = {pid for pid in live if not gone(pid)}
            if len(live) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # a few scrapes with the replacement answering too
        scraping.clear()
        scraping_thread.join(15)
        final = scrape_total(served.url, "nexus_workflow_executions_total")
        durations = scrape_total(served.url, "nexus_workflow_duration_seconds_count")
    finally:
        scraping.clear()
        load.resume()
        code, err = served.stop()
    assert code == 0, err
    assert load.errors == [] and load.done() == REQUESTS, (load.errors[:5], load.done())
    assert len(killed) == 2 and all(load.answered[pid] > 0 for pid, _ in killed), (killed, load.answered)
    assert len(live) == 2 and not live & {pid for pid, _ in killed}, f"the supervisor replaced the dead: {live}"
    assert all(len(totals) > before + 3 for _, before in killed), "scrapes went on after each kill"
    drops = [(i, a, b) for i, (a, b) in enumerate(zip(totals, totals[1:])) if b < a]
    assert drops == [], f"totals went backwards (scrape, before, after): {drops[:5]}; kills at {killed}"
    assert final == REQUESTS and durations == REQUESTS, (final, durations, load.answered)
