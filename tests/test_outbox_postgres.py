"""The shared outbox on a real PostgreSQL: its operations, concurrent leases, group commit, outages, the audit row.

The end-to-end promises with real ``serve`` processes (a replica killed, scaled in,
PostgreSQL stopped mid-run) are in tests/test_shared_outbox.py; the model-based test
runs the same rules against both backends. Here: each operation alone, what two
replicas leasing at once get, what the app wires up, and what an outage does to a put.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from nexus_otel import Nexus
from nexus_otel.errors import ConfigurationError, RecordsUnavailableError, UsageError
from nexus_otel.outbox import (
    WEBHOOK_SCOPE,
    LocalHandle,
    Outbox,
    PostgresOutbox,
    destination_scope,
    open_outbox,
)
from nexus_otel.outbox.group_commit import GroupCommit
from nexus_otel.plugins import DatabasePlugin, WebhookPlugin
from nexus_otel.telemetry.config import TelemetryConfig

from .plain_receivers import StockReceiver
from .postgres_server import PostgresServer

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def dsn(postgres):
    """A database of its own on the session's PostgreSQL: each test starts from an empty outbox."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.dsn_for(name)


@pytest.fixture(autouse=True)
def _closed_after(monkeypatch):
    """Every shared outbox a test opens is closed after it (its connections are not left to the collector)."""
    opened: list[PostgresOutbox] = []
    real_init = PostgresOutbox.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(PostgresOutbox, "__init__", init)
    yield
    for box in opened:
        box.close()


def _rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def _refuse_workflow(dsn: str, workflow: str) -> None:
    """The audit table, made so that the rows of ``workflow`` cannot be written (a constraint of the user's)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE workflow_executions (workflow_id TEXT PRIMARY KEY, workflow_name TEXT NOT NULL"
                     f" CHECK (workflow_name <> '{workflow}'), session_id TEXT, channel TEXT,"
                     " started_at TIMESTAMPTZ NOT NULL, completed_at TIMESTAMPTZ, duration DOUBLE PRECISION,"
                     " status TEXT NOT NULL, error TEXT, trace_id TEXT, baggage TEXT)")


# -- group commit ------------------------------------------------------------------------------
def test_group_commit_writes_concurrent_callers_together_and_each_returns_after_its_own_commit():
    """Items of concurrent submits share transactions (fewer commits than submits); none returns before its commit."""
    committed: set[int] = set()
    lock = threading.Lock()

    def write(items: list[int]) -> None:
        time.sleep(0.002)  # a commit's round trip: callers arrive meanwhile
        with lock:
            committed.update(items)

    group: GroupCommit[int] = GroupCommit(write)
    early: list[int] = []

    def caller(base: int) -> None:
        for i in range(50):
            item = base * 1000 + i
            group.submit([item])
            with lock:
                if item not in committed:
                    early.append(item)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not early, f"submit returned before its items were committed: {early[:5]}"
    assert len(committed) == 400
    assert group.commits < 400 / 2, f"{group.commits} commits for 400 submits: no grouping"


def test_group_commit_fails_only_the_group_whose_write_failed():
    """A write that raises fails the callers of its group; the next submit is written normally."""
    calls: list[list[str]] = []

    def write(items: list[str]) -> None:
        calls.append(items)
        if "bad" in items:
            raise OSError("database gone")

    group: GroupCommit[str] = GroupCommit(write)
    with pytest.raises(OSError, match="database gone"):
        group.submit(["bad"])
    group.submit(["good"])
    assert calls == [["bad"], ["good"]]


# -- the operations ----------------------------------------------------------------------------
def test_operations_on_the_shared_table(dsn):
    """enqueue, lease, retry, dead_letter, replay, hold and ack move rows as the local outbox moves messages."""
    box = PostgresOutbox(dsn)
    view = box.view(WEBHOOK_SCOPE)
    assert box.enqueue([("m1", URL, {"n": 1}), ("a1", "audit", "{}")]) == 2
    assert view.counts() == {"pending": 1, "dead": 0} and box.counts() == {"pending": 2, "dead": 0}
    assert box.view(destination_scope("audit")).counts()["pending"] == 1
    (m,) = view.lease(10, 30)
    assert (m.message_id, m.payload, m.attempts) == ("m1", {"n": 1}, 0)
    assert view.lease(10, 30) == [], "a leased message was leased again"
    assert 25 < view.next_due_in() <= 30
    view.retry(m.handle, 0.0, "HTTP 500")
    (m,) = view.lease(10, 30)
    assert (m.attempts, m.last_error) == (1, "HTTP 500")
    view.dead_letter(m.handle, "HTTP 410")
    assert [d.message_id for d in view.dead_letters()] == ["m1"] and view.counts()["dead"] == 1
    assert view.replay([m.id]) == 1
    assert view.hold(URL, time.time() + 30) == 1
    assert view.lease(10, 30) == [], "a held destination's message was leased"
    assert view.next_due_in() > 25
    box.close()
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE nexus_otel_outbox SET next_attempt_at = 0")
    (m,) = view.lease(10, 30)
    view.ack([m.handle])
    assert view.counts() == {"pending": 0, "dead": 0}
    assert box.left() == 0


def test_a_handle_the_shared_outbox_never_gave_is_a_usage_error(dsn):
    """A local message's handle (or a non-handle) given to the shared outbox is a clear error, not a silent no-op."""
    box = PostgresOutbox(dsn)
    with pytest.raises(UsageError, match="shared outbox"):
        box.ack([LocalHandle(3)])
    with pytest.raises(UsageError):
        box.retry("7", 1.0, "x")  # type: ignore[arg-type]


def test_two_replicas_leasing_at_once_never_get_the_same_message(dsn):
    """Workers of two replicas (two objects, two connections) leasing concurrently split the messages, none twice."""
    PostgresOutbox(dsn).enqueue([(f"m{i}", URL, "{}") for i in range(600)])
    boxes = [PostgresOutbox(dsn), PostgresOutbox(dsn)]
    got: list[list[str]] = [[], []]

    def drain(i: int) -> None:
        while True:
            leased = boxes[i].lease(7, 60)
            if not leased:
                return
            got[i] += [m.message_id for m in leased]
            boxes[i].ack([m.handle for m in leased])

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    both = got[0] + got[1]
    assert len(both) == len(set(both)) == 600, "a message was leased by both replicas, or lost"
    assert got[0] and got[1], "one replica waited for the other's locks instead of skipping them"


def test_a_lease_that_ends_lets_another_replica_deliver_and_the_first_cannot_undo_it(dsn):
    """A replica whose lease ran out no longer owns the message: another leases it; the first cannot change it."""
    first, second = PostgresOutbox(dsn), PostgresOutbox(dsn)
    first.enqueue([("m1", URL, "{}")])
    (m,) = first.lease(1, 0.2)
    time.sleep(0.3)
    with psycopg.connect(dsn) as conn:  # the second replica is another process: another owner
        conn.execute("UPDATE nexus_otel_outbox SET claimed_by = 'elsewhere/1/1'")
    (again,) = second.lease(1, 60)
    assert again.message_id == "m1"
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE nexus_otel_outbox SET claimed_by = 'elsewhere/1/1'")
    first.release([m.handle])
    first.retry(m.handle, 0.0, "late")
    ((attempts, claimed, due_in),) = _rows(dsn, "SELECT attempts, claimed_by,"
                                               " next_attempt_at - extract(epoch from clock_timestamp())"
                                               " FROM nexus_otel_outbox")
    assert (attempts, claimed) == (0, "elsewhere/1/1") and due_in > 50, "the lapsed owner changed the new lease"


def test_oldest_age_and_counts_are_of_every_replica(dsn):
    """Depth and oldest age are read from the table: what one replica enqueued, another reports."""
    a, b = PostgresOutbox(dsn), PostgresOutbox(dsn)
    assert b.oldest_age() is None
    a.enqueue([("m1", URL, "{}")])
    time.sleep(0.2)
    a.enqueue([("m2", URL, "{}")])
    assert b.counts()["pending"] == 2
    assert 0.15 <= b.oldest_age() < 30


def test_open_outbox_picks_the_backend_by_its_name(dsn, tmp_path):
    """A postgresql:// URL opens the shared outbox, a path the local one; the URL's password never shows."""
    assert isinstance(open_outbox(dsn), PostgresOutbox)
    assert isinstance(open_outbox(tmp_path / "outbox.sqlite"), Outbox)
    shown = PostgresOutbox(dsn.replace("nexus@", "nexus:s3cret@")).path
    assert "s3cret" not in shown and "***" in shown


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["mysql://db/x", "http://db", "/data/outbox.sqlite"])
def test_an_outbox_url_that_is_not_postgresql_is_refused_naming_the_variable(value):
    """NEXUS_OTEL_OUTBOX_URL must be a postgresql:// URL: anything else is an error naming it."""
    with pytest.raises(ConfigurationError, match="NEXUS_OTEL_OUTBOX_URL"):
        TelemetryConfig.from_env({"NEXUS_OTEL_OUTBOX_URL": value})


def test_outbox_settings_parse_and_a_bad_one_names_itself_without_the_password():
    """The URL and the lease are read from the environment; a bad value's error hides a password."""
    config = TelemetryConfig.from_env({"NEXUS_OTEL_OUTBOX_URL": " postgresql://u:pw@db/x ",
                                       "NEXUS_OTEL_OUTBOX_LEASE": "15"})
    assert (config.outbox_url, config.outbox_lease) == ("postgresql://u:pw@db/x", 15.0)
    assert TelemetryConfig.from_env({"NEXUS_OTEL_OUTBOX_URL": ""}).outbox_url is None
    with pytest.raises(ConfigurationError) as caught:
        TelemetryConfig.from_env({"NEXUS_OTEL_OUTBOX_URL": "redis://u:hunter2@db"})
    assert "hunter2" not in str(caught.value)
    for bad in ("0", "-5", "soon", "1e9"):
        with pytest.raises(ConfigurationError, match="NEXUS_OTEL_OUTBOX_LEASE"):
            TelemetryConfig.from_env({"NEXUS_OTEL_OUTBOX_LEASE": bad})
    with pytest.raises(ConfigurationError, match="outbox"):
        Nexus("t", outbox=42, environ={})  # type: ignore[arg-type]


# -- the app -----------------------------------------------------------------------------------
def test_an_app_with_a_shared_outbox_puts_nothing_on_its_disk(dsn, tmp_path):
    """Nexus(outbox=url): webhooks and audit rows go to PostgreSQL, the audit row in the enqueue's transaction."""
    with StockReceiver() as receiver:
        app = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
        app.register("greet", lambda params: {"hi": 1})
        app.add_plugin(WebhookPlugin(webhook_url=receiver.url, secret="whsec_" + "A" * 32))
        database = app.add_plugin(DatabasePlugin(dsn))
        app.start()
        try:
            assert database.exporter is not None and database.exporter.joined
            assert app.records.outbox(tmp_path / "anything.sqlite") is app.records.outbox(tmp_path / "other")
            for _ in range(20):
                app.execute_workflow("greet", {})
            assert receiver.wait_for(20, 10)
        finally:
            app.stop()
    assert _rows(dsn, "SELECT count(*) FROM workflow_executions") == [(20,)]
    assert _rows(dsn, "SELECT count(*) FROM nexus_otel_outbox") == [(0,)]
    assert not list(Path(tmp_path).glob("outbox*")), "the shared outbox left a local one"


def test_the_audit_row_and_the_webhook_commit_together_or_not_at_all(dsn, tmp_path):
    """An audit row the database refuses fails the execution, and its webhook is not queued either."""
    _refuse_workflow(dsn, "refused")
    app = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    app.register("refused", lambda params: {})
    app.register("fine", lambda params: {})
    app.add_plugin(WebhookPlugin(webhook_url=URL, secret="whsec_" + "A" * 32))
    app.add_plugin(DatabasePlugin(dsn))
    try:
        app.execute_workflow("fine", {})
        with pytest.raises(RecordsUnavailableError):
            app.execute_workflow("refused", {})
        assert _rows(dsn, "SELECT workflow_name FROM workflow_executions") == [("fine",)]
        payloads = [p for (p,) in _rows(dsn, "SELECT payload FROM nexus_otel_outbox")]
        assert len(payloads) == 1 and '"fine"' in payloads[0], payloads
    finally:
        app.stop()


@pytest.fixture(scope="module")
def own_server():
    """A PostgreSQL of this module's own, to stop and start."""
    with PostgresServer() as pg:
        yield pg


def test_a_database_outage_fails_puts_closed_and_they_resume_on_their_own(own_server):
    """PostgreSQL down: a put raises RecordsUnavailableError naming the URL, leaves nothing; back up: puts work."""
    box = PostgresOutbox(own_server.dsn, connect_timeout=2)
    box.enqueue([("before", URL, "{}")])
    own_server.stop()
    try:
        with pytest.raises(RecordsUnavailableError, match="127.0.0.1"):
            box.enqueue([("during", URL, "{}")])
        assert box.enqueue([("dropped", URL, "{}")], required=False) == 0
        assert box.writable.error is not None and box.writable.check() is not None
    finally:
        own_server.start()
    deadline = time.monotonic() + 10
    while box.writable.check() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert box.writable.check() is None, "the probe did not see the database back"
    box.enqueue([("after", URL, "{}")])
    ids = sorted(m for (m,) in _rows(own_server.dsn, "SELECT message_id FROM nexus_otel_outbox"))
    assert ids == ["after", "before"]


def test_an_app_starts_while_its_shared_outbox_is_down_and_refuses_executions_until_it_is_back(own_server, tmp_path):
    """A replica starting during an outage starts; its executions are refused (503) before they run, then served."""
    own_server.stop()
    ran: list[int] = []
    try:
        app = Nexus("t", outbox=own_server.dsn,
                    environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
        app.register("w", lambda params: ran.append(1))
        app.add_plugin(WebhookPlugin(webhook_url=URL, secret="whsec_" + "A" * 32))
        with pytest.raises(RecordsUnavailableError):
            app.execute_workflow("w", {})
        assert not ran, "the workflow ran although its records could not be made durable"
    finally:
        own_server.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                app.execute_workflow("w", {})
                break
            except RecordsUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        assert ran
    finally:
        app.stop()


def test_every_replica_reports_the_shared_queue_depth_and_oldest_age(dsn, tmp_path):
    """Depth and oldest age are gauges read from the table: two apps on one shared outbox report the same rows."""
    from nexus_otel.testing import CapturedTelemetry

    captures = [CapturedTelemetry(), CapturedTelemetry()]
    apps = [cap.app("t", outbox=dsn) for cap in captures]
    try:
        for app in apps:
            app.add_plugin(WebhookPlugin(webhook_url=URL, secret="whsec_" + "A" * 32))  # port 9: never delivered
            app.register("w", lambda params: {})
        apps[0].execute_workflow("w", {})
        apps[0].execute_workflow("w", {})
        time.sleep(0.1)
        for cap in captures:
            text = cap.prometheus_text()
            pending = [line for line in text.splitlines()
                       if line.startswith("nexus_records_outbox_messages{") and 'state="pending"' in line]
            assert len(pending) == 1 and pending[0].endswith(" 2.0"), pending
            assert "***" not in pending[0] and "127.0.0.1" in pending[0]
            (age,) = [line for line in text.splitlines() if line.startswith("nexus_records_outbox_oldest_age_seconds{")]
            assert float(age.rsplit(" ", 1)[1]) >= 0.1
    finally:
        for app in apps:
            app.stop(timeout=1)
        for cap in captures:
            cap.shutdown()


def test_a_database_that_never_answers_does_not_hold_up_the_executions_it_refuses(tmp_path):
    """Against a silent database (a partition), refusals come at once: the probe waits on a thread of its own."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections complete in the kernel; nothing ever answers them
    try:
        url = f"postgresql://nexus@127.0.0.1:{silent.getsockname()[1]}/nexus"
        started = time.monotonic()
        box = PostgresOutbox(url, connect_timeout=2)
        opened = time.monotonic() - started  # the app's start pays the connection attempt, once
        assert box.writable.error is not None
        slowest = 0.0
        for _ in range(20):
            started = time.monotonic()
            assert box.writable.check() is not None
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        assert slowest < opened / 4, f"a check waited {slowest:.2f} s for a probe (connecting: {opened:.2f} s)"
    finally:
        silent.close()


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents_alone(dsn):
    """An outbox made before a fork: the child enqueues on its own session; the parent's session still works."""
    box = PostgresOutbox(dsn)
    box.enqueue([("parent-1", URL, "{}")])
    box.counts()
    pid = os.fork()
    if pid == 0:  # the child: exit status says whether its enqueue and read worked
        try:
            box.enqueue([("child", URL, "{}")])
            ok = box.counts()["pending"] == 2
            box.close()  # a child that stops cleanly closes its connections: not the parent's
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not use the outbox"
    box.enqueue([("parent-2", URL, "{}")])  # the parent's sessions were not ended by the child
    assert box.counts()["pending"] == 3


# -- what the review of the shared outbox found ---------------------------------------------------
def test_one_refused_value_fails_only_its_own_execution(dsn, tmp_path):
    """Concurrent executions share commits: one whose audit row the database refuses fails alone, nothing is marked."""
    _refuse_workflow(dsn, "refused")
    app = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    app.register("refused", lambda params: {})
    app.register("fine", lambda params: time.sleep(0.001))
    app.add_plugin(WebhookPlugin(webhook_url=URL, secret="whsec_" + "A" * 32))
    app.add_plugin(DatabasePlugin(dsn))
    failed: list[str] = []

    def run(name: str, n: int) -> None:
        for _ in range(n):
            try:
                app.execute_workflow(name, {})
            except RecordsUnavailableError:
                failed.append(name)

    try:
        threads = [threading.Thread(target=run, args=("fine", 40)) for _ in range(6)]
        threads.append(threading.Thread(target=run, args=("refused", 10)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failed.count("refused") == 10
        assert "fine" not in failed, f"{failed.count('fine')} executions failed for another one's row"
        assert app.records.outbox(tmp_path).writable.error is None
        assert _rows(dsn, "SELECT count(*) FROM workflow_executions") == [(240,)]
    finally:
        app.stop()


def test_a_nul_in_an_audit_row_is_stored_not_refused(dsn, tmp_path):
    """PostgreSQL text holds no NUL: an error message with one is stored with a replacement, not refused."""
    def broken(params):
        raise ValueError("bad byte \x00 here")

    app = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    app.register("broken", broken)
    app.add_plugin(DatabasePlugin(dsn))
    try:
        with pytest.raises(ValueError):
            app.execute_workflow("broken", {})
    finally:
        app.stop()
    ((error,),) = _rows(dsn, "SELECT error FROM workflow_executions")
    assert error.endswith("bad byte \ufffd here"), error


def test_a_database_that_answers_but_refuses_writes_stays_unwritable(dsn, postgres):
    """A read-only database (a standby after failover) passes no probe: puts stay refused until it takes writes."""
    box = PostgresOutbox(dsn)
    box.enqueue([("m1", URL, "{}")])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {dsn.rsplit('/', 1)[1]} SET default_transaction_read_only = on")
    box.close()  # new sessions take the setting
    with pytest.raises(RecordsUnavailableError, match="read-only"):
        box.enqueue([("m2", URL, "{}")])
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert box.writable.check() is not None, "a probe found a read-only database writable"
        time.sleep(0.25)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:  # not a session of the read-only database
        conn.execute(f"ALTER DATABASE {dsn.rsplit('/', 1)[1]} SET default_transaction_read_only = off")
    deadline = time.monotonic() + 10
    while box.writable.check() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert box.writable.check() is None


def test_a_role_that_may_only_use_the_table_uses_it(dsn):
    """A least-privilege role (no CREATE in the schema) works on a table an administrator made."""
    PostgresOutbox(dsn).close()  # the table, made by the owner
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN CREATE ROLE outbox_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON nexus_otel_outbox TO outbox_app")
        conn.execute("GRANT USAGE ON SEQUENCE nexus_otel_outbox_id_seq TO outbox_app")
    box = PostgresOutbox(dsn.replace("//nexus@", "//outbox_app@"))
    assert box.writable.error is None, box.writable.error
    box.enqueue([("m1", URL, "{}")])
    (m,) = box.lease(1, 30)
    box.ack([m.handle])
    assert name and box.counts()["pending"] == 0


def test_a_connection_cut_while_idle_costs_no_execution(dsn):
    """A dead idle connection (a server restart, a proxy's idle cut) is replaced: the next put is written."""
    box = PostgresOutbox(dsn)
    box.enqueue([("m1", URL, "{}")])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    box.enqueue([("m2", URL, "{}")])
    assert box.writable.error is None and box.counts()["pending"] == 2


def test_a_frozen_database_fails_the_write_within_its_limit(dsn):
    """A backend that stops answering (SIGSTOP: hung storage) has its write cut: callers get 503, not a hang."""
    import signal

    box = PostgresOutbox(dsn)
    box.write_limit = 1.5
    box.enqueue([("m1", URL, "{}")])
    (pid,) = _rows(dsn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND query LIKE 'INSERT%'")[0]
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(RecordsUnavailableError):
            box.enqueue([("m2", URL, "{}")])
        waited = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert waited < 6, f"the write hung {waited:.1f} s past its limit of 1.5 s"


def test_a_lease_of_another_pid_namespace_is_never_taken_as_ended(dsn):
    """Host networking shares a host name across containers: a lease from another PID namespace waits for its end."""
    import socket as socket_module

    box = PostgresOutbox(dsn)
    box.enqueue([("theirs", URL, "{}"), ("ours", URL, "{}")])
    host = socket_module.gethostname()
    dead_pid = 4_000_000  # above any pid_max: no such process
    own_ns = os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE nexus_otel_outbox SET next_attempt_at = next_attempt_at + 60,"
                     " claimed_by = %s || CASE message_id WHEN 'theirs' THEN '999' ELSE %s END",
                     (f"{host}/{dead_pid}/1/", own_ns))
    assert box.release_orphans() == 1
    assert [m.message_id for m in box.lease(10, 30)] == ["ours"]


def test_safe_url_hides_a_password_given_in_the_query():
    """A password in the URL's query is masked as one in its user part is."""
    from nexus_otel.outbox.postgres import safe_url

    shown = safe_url("postgresql://nexus@db/x?password=hunter2&sslmode=require")
    assert "hunter2" not in shown and "sslmode=require" in shown


def test_the_urls_own_options_are_kept(dsn):
    """options= in the URL (a search_path) still applies: the table is made in that schema."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA outq")
    box = PostgresOutbox(dsn + "?options=-csearch_path%3Doutq")
    box.enqueue([("m1", URL, "{}")])
    assert _rows(dsn, "SELECT schemaname FROM pg_tables WHERE tablename = 'nexus_otel_outbox'") == [("outq",)]
    assert not box.same_database(dsn), "a URL with another search_path was taken for the same database"


def test_after_teardown_the_webhook_plugin_reads_the_shared_outbox(dsn, tmp_path):
    """WebhookPlugin.outbox / dead_letters after the app stopped open the shared outbox again, not a local file."""
    app = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    plugin = app.add_plugin(WebhookPlugin(webhook_url=URL, secret="whsec_" + "A" * 32))
    app.start()
    app.stop()
    assert isinstance(plugin.outbox.outbox, PostgresOutbox)
    assert plugin.dead_letters() == []
    assert not list(Path(tmp_path).glob("outbox*"))


def test_a_running_worker_takes_over_the_leases_of_a_killed_peer_on_its_host(dsn, monkeypatch):
    """A replica killed holding a long lease: a worker already running on the host releases it, not its lease's end."""
    import signal
    import subprocess
    import sys

    from nexus_otel.outbox import OK, OutboxWorker
    from nexus_otel.outbox import worker as worker_module

    monkeypatch.setattr(worker_module, "ORPHAN_CHECK", 0.5)
    PostgresOutbox(dsn).enqueue([("m1", URL, "{}")])
    delivered: list[str] = []

    def deliver(batch, deadline):
        delivered.extend(m.message_id for m in batch)
        return [OK] * len(batch)

    worker = OutboxWorker(PostgresOutbox(dsn).view(WEBHOOK_SCOPE), deliver, idle_poll=0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from nexus_otel.outbox import PostgresOutbox;"
         f" box = PostgresOutbox({dsn!r}); print(len(box.lease(10, 300)), flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "1"
        worker.start()
        time.sleep(1.0)
        assert delivered == [], "a live process's lease was taken"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 10
        while not delivered and time.monotonic() < deadline:
            time.sleep(0.1)
        assert delivered == ["m1"], "the killed process's lease was left to run out (300 s)"
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
        worker.stop(2)


@pytest.mark.parametrize("n", [1, 16, 17, 300])
def test_a_group_of_any_size_is_written_whole_with_its_joined_rows(dsn, n):
    """Small groups go as a VALUES list, large ones as arrays: either way every message and audit row is written."""
    from nexus_otel.exporters.audit import PostgresAuditStore

    store = PostgresAuditStore(dsn, "workflow_executions")
    store.write([])
    row = {"workflow_name": "w", "session_id": None, "channel": "api", "started_at": "2026-12-07T10:00:00+00:00",
           "completed_at": "2026-12-07T10:00:01+00:00", "duration": 1.5, "status": "completed", "error": None,
           "trace_id": "t", "baggage": None}
    box = PostgresOutbox(dsn)
    box.join("audit", lambda payloads: store.upsert_statement([dict(row, workflow_id=p) for p in payloads]))
    items = [(f"m{i}", URL, {"i": i}) for i in range(n)] + [(f"a{i}", "audit", f"wf{i % max(1, n - 1)}")
                                                          for i in range(n)]
    box.enqueue(items)  # a workflow id twice in one group (n > 1) keeps one row
    assert box.counts()["pending"] == n
    assert sorted(m.payload["i"] for m in box.due(1000)) == list(range(n))
    expected = {f"wf{i % max(1, n - 1)}" for i in range(n)}
    assert {w for (w,) in _rows(dsn, "SELECT workflow_id FROM workflow_executions")} == expected
    ((duration, started),) = _rows(dsn, "SELECT duration, started_at FROM workflow_executions LIMIT 1")
    assert duration == 1.5 and started.year == 2026


def _grouped(write, rest: list[str]) -> tuple[list[list[str]], dict[str, BaseException | None]]:
    """Submit "lead" (whose write waits until the others queued behind it), then ``rest`` as one group written
    with ``write``; every write's items, and each caller's outcome."""
    calls: list[list[str]] = []
    release = threading.Event()

    def held(items: list[str]) -> None:
        calls.append(items)
        if items == ["lead"]:
            release.wait(2)
            return
        write(items)

    group: GroupCommit[str] = GroupCommit(held, alone=lambda exc: isinstance(exc, ValueError))
    outcome: dict[str, BaseException | None] = {}
    threading.Timer(0.2, release.set).start()

    def submit(item: str) -> None:
        try:
            group.submit([item])
            outcome[item] = None
        except BaseException as exc:
            outcome[item] = exc

    threads = [threading.Thread(target=submit, args=("lead",))]
    threads[0].start()
    time.sleep(0.05)
    for item in rest:
        threads.append(threading.Thread(target=submit, args=(item,)))
        threads[-1].start()
        time.sleep(0.01)
    for t in threads:
        t.join(5)
    return calls, outcome


def test_a_group_that_fails_for_one_value_is_written_caller_by_caller():
    """One caller's refused value in a group: the group is retried one caller at a time, the others succeed."""
    def write(items: list[str]) -> None:
        if "bad" in items:
            raise ValueError("refused value")

    calls, outcome = _grouped(write, ["a", "bad", "c"])
    assert calls[0] == ["lead"] and sorted(calls[1]) == ["a", "bad", "c"]
    assert outcome["a"] is None and outcome["c"] is None and isinstance(outcome["bad"], ValueError)


def test_a_split_group_stops_trying_once_the_database_itself_fails():
    """While a split group is written caller by caller, a failure of the database fails the rest without tries."""
    def write(items: list[str]) -> None:
        if len(items) > 1:
            raise ValueError("refused value")
        raise OSError("database gone")

    calls, outcome = _grouped(write, ["a", "b", "c"])
    assert len(calls) == 3, f"tried {len(calls) - 2} callers alone after the database failed: {calls}"
    assert all(isinstance(outcome[x], OSError) for x in "abc")


def test_the_last_row_of_a_workflow_id_given_twice_in_one_group_wins(dsn):
    """Two rows for one workflow id in one group: the later one is written (one upsert cannot touch a row twice)."""
    from nexus_otel.exporters.audit import PostgresAuditStore

    store = PostgresAuditStore(dsn, "workflow_executions")
    store.write([])
    row = {"workflow_name": "w", "session_id": None, "channel": "api", "started_at": "2026-12-07T10:00:00+00:00",
           "completed_at": None, "duration": 1, "error": None, "trace_id": "t", "baggage": None}
    box = PostgresOutbox(dsn)
    box.join("audit", lambda payloads: store.upsert_statement([dict(row, workflow_id="wf", status=p)
                                                               for p in payloads]))
    box.enqueue([("a1", "audit", "running"), ("a2", "audit", "completed")])
    assert _rows(dsn, "SELECT status FROM workflow_executions") == [("completed",)]
    box.enqueue([(f"b{i}", "audit", s) for i, s in enumerate(["x"] * 20 + ["failed"])])  # the array path
    assert _rows(dsn, "SELECT status FROM workflow_executions") == [("failed",)]


def test_a_password_the_driver_quotes_in_part_never_shows(tmp_path):
    """An unescaped "@" in a password makes the driver quote its tail as a host: masked in errors and the mark."""
    url = "postgresql://nexus:ab@TAILSECRET@127.0.0.1:9/x"
    box = PostgresOutbox(url, connect_timeout=1)
    with pytest.raises(RecordsUnavailableError) as caught:
        box.enqueue([("m1", URL, "{}")])
    assert "TAILSECRET" not in str(caught.value) and "TAILSECRET" not in (box.writable.error or "")


def test_webhooks_status_on_an_outbox_that_cannot_be_opened_is_one_line(dsn, postgres):
    """A database that answers but cannot hold the outbox (read-only, no table): one line, no traceback."""
    from click.testing import CliRunner

    from nexus_otel.cli import main

    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {dsn.rsplit('/', 1)[1]} SET default_transaction_read_only = on")
    result = CliRunner().invoke(main, ["webhooks", "status", "--outbox", dsn])
    assert result.exit_code == 1 and result.exception is not None
    assert "Traceback" not in result.output and "cannot read the shared outbox" in result.output, result.output


def test_a_role_that_may_not_write_the_audit_table_is_refused_before_running(dsn, tmp_path):
    """The audit table may not be written: the first execution fails, the next are refused before they run."""
    owner = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    owner.add_plugin(DatabasePlugin(dsn))  # the tables, made by their owner
    owner.stop()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN CREATE ROLE audit_reader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON nexus_otel_outbox TO audit_reader")
        conn.execute("GRANT USAGE ON SEQUENCE nexus_otel_outbox_id_seq TO audit_reader")
        conn.execute("GRANT SELECT ON workflow_executions TO audit_reader")
    url = dsn.replace("//nexus@", "//audit_reader@")
    ran: list[int] = []
    app = Nexus("t", outbox=url, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    app.register("w", lambda params: ran.append(1))
    app.add_plugin(DatabasePlugin(url))
    try:
        for _ in range(4):
            with pytest.raises(RecordsUnavailableError, match="permission denied"):
                app.execute_workflow("w", {})
            time.sleep(0.6)
        assert len(ran) == 1, f"{len(ran)} executions ran although their audit rows could not be written"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("GRANT INSERT, UPDATE ON workflow_executions TO audit_reader")
        deadline = time.monotonic() + 10
        while True:
            try:
                app.execute_workflow("w", {})
                break
            except RecordsUnavailableError:
                assert time.monotonic() < deadline, "still refused after the grant"
                time.sleep(0.3)
    finally:
        app.stop()
    assert _rows(dsn, "SELECT count(*) FROM workflow_executions") == [(1,)]  # the one that returned


def test_an_app_moved_to_the_shared_outbox_warns_of_the_local_one_it_leaves(dsn, tmp_path, caplog):
    """A local outbox left in the data dir is not delivered from the shared one: the app says so, naming it."""
    local = Outbox(tmp_path / "outbox.sqlite")
    local.enqueue([("old", URL, "{}")])
    local.close()
    app = Nexus("t", outbox=dsn, environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_SDK_DISABLED": "true"})
    with caplog.at_level("WARNING", logger="nexus_otel.records"):
        app.add_plugin(WebhookPlugin(webhook_url=URL, secret="whsec_" + "A" * 32))
        app.add_plugin(DatabasePlugin(dsn))
    app.stop()
    warnings = [r.getMessage() for r in caplog.records if "local outbox" in r.getMessage()]
    assert len(warnings) == 1 and str(tmp_path / "outbox.sqlite") in warnings[0]
