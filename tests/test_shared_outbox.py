"""The shared PostgreSQL outbox end to end: replicas of ``nexus-otel serve`` on one database, real receivers.

Each replica is a ``serve`` process with a data directory of its own and
``NEXUS_OTEL_OUTBOX_URL`` naming one real PostgreSQL server; its app
(tests/apps/shared_outbox.py) sends a webhook per execution and writes its
audit row to the same database, in the enqueue's transaction. The receiver is
Python's stock ``http.server`` on loopback that answers 500 to the first
attempt of every tenth message and 200 otherwise, recording every attempt.

An execution is known by the ``trace_id`` its HTTP answer carries: its audit
row and its webhook's body carry it too, and its ``webhook-id`` is
``msg_<workflow_id>`` of that row.
"""

from __future__ import annotations

import collections
import signal
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from nexus_otel import fastjson

from .postgres_server import PostgresServer
from .served import REPO, Served, cli_env

APP = "tests.apps.shared_outbox:app"
LEASE = 5.0
"""``NEXUS_OTEL_OUTBOX_LEASE`` of every replica (the webhook's is max(this, 4 x its 1 s timeout))."""
GRACE = LEASE + 10.0
"""How long after the last answer (and after a kill) every returned execution must have been delivered."""
SENT = 3.0
"""Seconds after a kill in which the receiver may still record a delivery the killed replica sent (its requests
wait in the receiver's sockets on a loaded machine)."""


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt the receiver got: when (``time.monotonic()``), its ids, the status it was given."""

    at: float
    webhook_id: str
    trace_id: str
    status: int


class FlakyReceiver:
    """Python's stock ``ThreadingHTTPServer`` answering 500 to the first attempt of every tenth message
    (by ``webhook-id``: its CRC-32 is a multiple of 10) and 200 to every other attempt.

    :meth:`down` stops listening (a sender's connections are refused) and :meth:`up` listens again on the
    same port, the attempts of both periods in one record.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self._seen: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        self.up()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def _answer(self, webhook_id: str, body: bytes) -> int:
        trace_id = str(fastjson.loads(body).get("trace_id", "")) if body else ""
        with self._lock:
            first = webhook_id not in self._seen
            self._seen.add(webhook_id)
            status = 500 if first and zlib.crc32(webhook_id.encode()) % 10 == 0 else 200
            self._attempts.append(Attempt(time.monotonic(), webhook_id, trace_id, status))
        return status

    def up(self) -> None:
        """Listen (again, on the same port) and answer."""
        answer = self._answer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status = answer(self.headers.get("webhook-id", ""), body)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Stop listening: connections are refused until :meth:`up`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def delivered(self) -> collections.Counter[str]:
        """How many times each ``webhook-id`` was answered 2xx."""
        return collections.Counter(a.webhook_id for a in self.attempts if 200 <= a.status < 300)

    def wait_for(self, webhook_ids: set[str], timeout: float) -> float | None:
        """Seconds until every one of ``webhook_ids`` was answered 2xx; None if some were not within ``timeout``."""
        start = time.monotonic()
        while not webhook_ids <= self.delivered().keys():
            if time.monotonic() - start > timeout:
                return None
            time.sleep(0.05)
        return time.monotonic() - start


@dataclass(frozen=True)
class Answer:
    """One request's outcome: which replica answered, when (``time.monotonic()``), its status and trace id, and
    when it was sent."""

    replica: int
    at: float
    status: int
    trace_id: str
    body: str
    sent: float


class Load:
    """``clients`` threads posting ``ship`` to the live replicas in turn, each with a keep-alive client per
    replica, until ``total`` requests were answered (or :meth:`stop`). A request whose connection failed (its
    replica was killed) is sent again to another: it is not counted."""

    def __init__(self, urls: list[str], total: int, clients: int = 6, pause: float = 0.0) -> None:
        self.urls = urls
        self.live = list(range(len(urls)))
        self.total = total
        self.pause = pause
        self.answers: list[Answer] = []
        self.transport_errors: list[str] = []
        self._taken = 0
        self._turn = 0
        self._stopped = False
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def _next(self) -> int | None:
        with self._lock:
            if self._stopped or self._taken >= self.total or not self.live:
                return None
            self._taken += 1
            self._turn += 1
            return self.live[self._turn % len(self.live)]

    def _client(self) -> None:
        clients = [httpx.Client(timeout=30) for _ in self.urls]
        try:
            while (replica := self._next()) is not None:
                sent = time.monotonic()
                try:
                    r = clients[replica].post(f"{self.urls[replica]}/workflows/ship", json={"order": 1})
                except httpx.TransportError as exc:
                    with self._lock:
                        self._taken -= 1
                        self.transport_errors.append(f"{replica}: {type(exc).__name__}")
                    continue
                trace_id = str(r.json().get("trace_id", "")) if r.headers.get("content-type") == "application/json" \
                    else ""
                with self._lock:
                    self.answers.append(Answer(replica, time.monotonic(), r.status_code, trace_id, r.text[:300], sent))
                if self.pause:
                    time.sleep(self.pause)
        finally:
            for client in clients:
                client.close()

    def answered(self, status: int = 200) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.status == status]

    def leave_out(self, replica: int) -> None:
        """Send no more requests to ``replica``."""
        with self._lock:
            self.live.remove(replica)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def join(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, end - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "the clients did not finish"


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as pg:
        yield pg


@pytest.fixture
def receiver() -> Iterator[FlakyReceiver]:
    flaky = FlakyReceiver()
    try:
        yield flaky
    finally:
        flaky.down()


def start_replicas(n: int, tmp_path: Path, postgres: PostgresServer, receiver: FlakyReceiver,
                   **extra: str) -> list[Served]:
    """``n`` ``serve`` processes of the app, each with its own data directory, on one shared outbox."""
    def start(index: int) -> Served:
        env = cli_env(tmp_path / f"replica-{index}", NEXUS_OTEL_OUTBOX_URL=postgres.dsn,
                      NEXUS_OTEL_OUTBOX_LEASE=str(int(LEASE)), SHARED_WEBHOOK_URL=receiver.url,
                      OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
                      **extra)
        return Served(APP, env, REPO)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(start, range(n)))


def audit_rows(postgres: PostgresServer) -> dict[str, list[str]]:
    """The ``workflow_executions`` rows' workflow ids by trace id (none if no replica made the table there)."""
    rows: dict[str, list[str]] = collections.defaultdict(list)
    with postgres.connect() as conn:
        try:
            found = conn.execute("SELECT workflow_id, trace_id FROM workflow_executions").fetchall()
        except psycopg.errors.UndefinedTable:
            return rows
    for workflow_id, trace_id in found:
        rows[trace_id].append(workflow_id)
    return rows


def outbox_rows(postgres: PostgresServer) -> int:
    """Messages in the shared outbox's table, of every replica and state."""
    with postgres.connect() as conn:
        return int(conn.execute("SELECT COUNT(*) FROM nexus_otel_outbox").fetchone()[0])


def webhook_ids(answers: list[Answer], rows: dict[str, list[str]]) -> dict[str, str]:
    """The ``webhook-id`` of each answered execution (by its audit row), by trace id; asserts one row each."""
    missing = [a.trace_id for a in answers if len(rows.get(a.trace_id, ())) != 1]
    assert not missing, (f"{len(missing)} of {len(answers)} executions that returned 200 have no audit row or more"
                         f" than one: {[(t, rows.get(t)) for t in missing[:5]]}")
    return {a.trace_id: f"msg_{rows[a.trace_id][0]}" for a in answers}


def stop_all(replicas: list[Served]) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(len(replicas)) as pool:
        return list(pool.map(lambda served: served.stop(), replicas))


def test_a_replica_killed_mid_run_loses_no_webhook_nor_audit_row(tmp_path, postgres, receiver):
    """3 replicas, 3,000 requests, one SIGKILLed after 1,000: every 200 has one audit row and its webhook."""
    started = time.monotonic()
    replicas = start_replicas(3, tmp_path, postgres, receiver)
    victim = 2
    load = Load([r.url for r in replicas], total=3000)
    try:
        load.start()
        load_started = time.monotonic()
        deadline = time.monotonic() + 120
        while len(load.answered()) < 1000:
            assert time.monotonic() < deadline, f"{len(load.answered())} answered in 120 s: {load.answers[-3:]}"
            time.sleep(0.005)
        load.leave_out(victim)
        replicas[victim].process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        replicas[victim].process.wait(10)
        load.join(180)
        ended = time.monotonic()
        ok = load.answered()
        assert [a for a in load.answers if a.status != 200] == [], "every request that reached a live replica is ok"
        assert len(ok) == 3000
        ids = webhook_ids(ok, audit_rows(postgres))
        took = receiver.wait_for(set(ids.values()), timeout=max(0.0, ended + GRACE - time.monotonic()))
        delivered = receiver.delivered()
        missing = set(ids.values()) - delivered.keys()
        assert took is not None and not missing, (
            f"{len(missing)} of {len(ids)} webhooks not delivered within {GRACE} s of the last answer"
            f" ({ended - killed_at:.1f} s after the kill); outbox rows left: {outbox_rows(postgres)}")
    finally:
        codes = stop_all(replicas)
    ok_at: dict[str, list[float]] = collections.defaultdict(list)
    traces_of: dict[str, set[str]] = collections.defaultdict(set)
    for attempt in receiver.attempts:
        traces_of[attempt.webhook_id].add(attempt.trace_id)
        if attempt.status == 200:
            ok_at[attempt.webhook_id].append(attempt.at - killed_at)
    twice = {mid: at for mid, at in ok_at.items() if len(at) > 1}
    # The killed replica's in flight: sent by it before the kill (the receiver may record it a moment after),
    # its ack lost with it, sent again by another replica once its lease ended (or sooner: a worker on this
    # host sees the killed process gone). Any other repeat is a replica delivering what another one holds.
    unexplained = {mid: [(a.status, round(a.at - killed_at, 3)) for a in receiver.attempts if a.webhook_id == mid]
                   for mid, at in twice.items() if not (len(at) == 2 and at[0] < SENT and at[0] < at[1] <= GRACE)}
    failed_first = {a.webhook_id for a in receiver.attempts if a.status == 500}
    print(f"\n[shared outbox, kill] {len(ok)} answered 200 in {ended - load_started:.1f} s"
          f" ({sum(a.replica == victim for a in ok)} by the killed replica, {len(load.transport_errors)} sent again),"
          f" {len(failed_first)} first attempts failed,"
          f" {len(twice)} delivered twice (repeats {min((at[1] for at in twice.values()), default=0):.1f}"
          f" to {max((at[1] for at in twice.values()), default=0):.1f} s after the kill), all delivered"
          f" {took:.1f} s after the last answer ({ended - killed_at + took:.1f} s after the kill);"
          f" test {time.monotonic() - started:.1f} s")
    assert unexplained == {}, f"delivered twice, not around the kill (s after it): {list(unexplained.items())[:5]}"
    assert len(failed_first) >= 200 and failed_first <= delivered.keys(), "each failed first attempt was repeated"
    assert all(traces_of[mid] == {trace} for trace, mid in ids.items()), "a webhook-id names one execution"
    assert outbox_rows(postgres) == 0, "nothing is left in the outbox"
    assert all("Traceback" not in err for _, err in codes), [err[-2000:] for _, err in codes]


def first_after(answers: list[Answer], since: float) -> dict[int, float]:
    """When each replica first answered after ``since``, by replica."""
    first: dict[int, float] = {}
    for answer in answers:
        if answer.at > since:
            first[answer.replica] = min(answer.at, first.get(answer.replica, answer.at))
    return first


def seconds(value: float | None) -> str:
    return "not" if value is None else f"{value:.1f} s"


def files_holding_messages(data_dir: Path) -> list[str]:
    """The files under ``data_dir`` that are a local outbox or its journal, or hold a message (its ``msg_`` id)."""
    found = []
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        if path.name.startswith("outbox") or ".journal." in path.name or b"msg_" in path.read_bytes():
            found.append(f"{path.relative_to(data_dir)} ({path.stat().st_size} bytes)")
    return found


def test_a_replica_stopped_with_a_backlog_leaves_it_to_the_others(tmp_path, postgres, receiver):
    """SIGTERM with the receiver down: nothing on the stopped replica's disk; the others deliver it all."""
    started = time.monotonic()
    receiver.down()
    replicas = start_replicas(3, tmp_path, postgres, receiver)
    try:
        load = Load([r.url for r in replicas], total=300, clients=3).start()
        load.join(60)
        ok = load.answered()
        assert len(ok) == 300, load.answers[-3:]
        ids = webhook_ids(ok, audit_rows(postgres))
        time.sleep(1.0)  # every replica tries its leases, and the receiver refuses them
        assert receiver.attempts == [] and outbox_rows(postgres) == 300, "the backlog waits in the database"
        stopping = time.monotonic()
        code, stderr = replicas[2].stop()
        stopped = time.monotonic() - stopping
        on_disk = files_holding_messages(tmp_path / "replica-2")
        pending = outbox_rows(postgres)
        receiver.up()
        took = receiver.wait_for(set(ids.values()), timeout=GRACE)
    finally:
        stop_all(replicas[:2])
    delivered = receiver.delivered()
    print(f"\n[shared outbox, scale-in] 300 answered 200; the stopped replica exited ({code}) in {stopped:.1f} s"
          f" with {len(on_disk)} files holding messages, {pending} messages waiting in the database; all delivered"
          f" {seconds(took)} after the receiver came back, {sum(n > 1 for n in delivered.values())} twice;"
          f" test {time.monotonic() - started:.1f} s")
    assert on_disk == [], f"the stopped replica left messages on its disk: {on_disk}"
    assert pending == 300, f"the stopped replica's backlog stays in the database: {pending} of 300"
    assert "Traceback" not in stderr, stderr[-2000:]
    assert took is not None, (f"{len(set(ids.values()) - delivered.keys())} of 300 not delivered within {GRACE} s"
                              f" of the receiver's return by the replicas left")


def test_a_database_outage_fails_executions_with_503_and_loses_none_that_returned(tmp_path, postgres, receiver):
    """PostgreSQL down 10 s mid-run: 503 meanwhile, no 200 lost, delivery resumes without a restart."""
    started = time.monotonic()
    replicas = start_replicas(2, tmp_path, postgres, receiver)
    try:
        load = Load([r.url for r in replicas], total=1_000_000, clients=4, pause=0.02).start()
        time.sleep(2.0)
        down_at = time.monotonic()
        postgres.stop()
        time.sleep(10.0)
        postgres.start()
        up_at = time.monotonic()
        deadline = up_at + GRACE
        while len(back_at := first_after(load.answered(), up_at)) < len(replicas):
            assert time.monotonic() < deadline, f"replicas {sorted(back_at)} of {len(replicas)} succeeded within" \
                                                f" {GRACE} s of the database's return"
            time.sleep(0.05)
        time.sleep(2.0)
        load.stop()
        load.join(30)
        ended = time.monotonic()
        ok = load.answered()
        refused = load.answered(503)
        ids = webhook_ids(ok, audit_rows(postgres))
        took = receiver.wait_for(set(ids.values()), timeout=max(0.0, ended + GRACE - time.monotonic()))
    finally:
        codes = stop_all(replicas)
    delivered = receiver.delivered()
    others = [a for a in load.answers if a.status not in (200, 503)]
    # A 503 answered before the outage began, or sent after its replica had answered 200 again: answers of
    # concurrent clients can arrive in another order than their requests were decided, their sending cannot.
    outside = [(a.replica, round(a.at - down_at, 2)) for a in refused
               if not (down_at <= a.at and a.sent <= back_at[a.replica])]
    during = [a for a in ok if down_at <= a.at <= up_at]
    back = ", ".join(f"{at - up_at:.1f}" for _, at in sorted(back_at.items()))
    print(f"\n[shared outbox, database outage] {len(ok)} answered 200 ({len(during)} while it was down),"
          f" {len(refused)} answered 503, {len(others)} other; each replica's first 200 {back} s after its start;"
          f" all delivered {seconds(took)} after the last answer, {sum(n > 1 for n in delivered.values())} twice;"
          f" test {time.monotonic() - started:.1f} s")
    assert others == [] and load.transport_errors == [], (others[:3], load.transport_errors[:3])
    assert refused and all("records unavailable" in a.body for a in refused), refused[:1]
    assert outside == [], f"503 outside the outage (replica, s after it began): {outside[:5]}"
    assert took is not None, (f"{len(set(ids.values()) - delivered.keys())} of {len(ids)} executions that returned"
                              f" 200 not delivered within {GRACE} s of the last answer")
    assert outbox_rows(postgres) == 0, "nothing is left in the outbox"
    assert all("Traceback" not in err for _, err in codes), [err[-2000:] for _, err in codes]
