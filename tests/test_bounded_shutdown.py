"""Shutdown is bounded in every fault mode: a silent receiver, a locked database, a silent or closed OTLP
endpoint. What is not delivered waits in the outbox for the next start, and the drain never sends twice."""

from __future__ import annotations

import contextlib
import signal
import time
from collections import Counter

import httpx
import pytest

from nexus_otel import Nexus
from nexus_otel.outbox import WEBHOOK_SCOPE, Outbox, destination_scope
from nexus_otel.plugins import DatabasePlugin, RequestLoggerPlugin, WebhookPlugin

from .faults import LockedSQLite, SilentServer, closed_port_url
from .served import Served, cli_env, nexus_otel
from .webhook_receiver import WebhookReceiver

FAULTS = ["webhook-silent", "audit-locked", "otlp-silent", "closed-port"]


@contextlib.contextmanager
def _destinations(fault: str, tmp_path):
    """(webhook URL, OTLP endpoint or None, a callable that locks the audit DB or None), for ``fault``."""
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(WebhookReceiver(hang=60 if fault == "webhook-silent" else 0))
        webhook_url, endpoint, lock = receiver.url, None, None
        if fault == "otlp-silent":
            endpoint = stack.enter_context(SilentServer()).url
        elif fault == "closed-port":
            webhook_url = endpoint = closed_port_url()
        elif fault == "audit-locked":
            def lock():
                held = LockedSQLite(tmp_path / "data" / "audit.sqlite")
                stack.callback(held.release)
        yield receiver, webhook_url, endpoint, lock


def _environ(tmp_path, endpoint: str | None) -> dict[str, str]:
    env = {"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), "OTEL_TRACES_EXPORTER": "none"}
    if endpoint:
        env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_TRACES_EXPORTER="otlp", OTEL_METRICS_EXPORTER="otlp")
    return env


def _ids(receiver: WebhookReceiver) -> Counter:
    return Counter(r.headers["webhook-id"] for r in receiver.requests())


@pytest.mark.parametrize("fault", FAULTS)
def test_stop_returns_within_its_timeout(tmp_path, fault):
    """``app.stop(timeout=1)`` returns within 2 s, though each fault would hold it far longer (a receiver hanging
    60 s, SQLite's 5 s busy timeout, an OTLP export's 10 s); undelivered payloads stay queued; none sent twice. The
    request log's records go to the same OTLP endpoint (logs follow the general endpoint)."""
    with _destinations(fault, tmp_path) as (receiver, webhook_url, endpoint, lock):
        app = Nexus("faulty", environ=_environ(tmp_path, endpoint))
        webhook = WebhookPlugin(webhook_url, max_attempts=1000)
        app.add_plugin(webhook)
        app.add_plugin(DatabasePlugin())
        app.add_plugin(RequestLoggerPlugin(output=None))
        app.register("ship", lambda inputs: {"shipped": inputs["n"]})
        if lock:
            lock()
        app.start()
        for n in range(20):
            app.execute_workflow("ship", {"n": n})
        time.sleep(0.3)  # let the workers reach the fault
        started = time.monotonic()
        app.stop(timeout=1)
        elapsed = time.monotonic() - started
        assert elapsed <= 2.0, f"stop took {elapsed:.1f} s with {fault}"
        assert all(n == 1 for n in _ids(receiver).values()), "a payload was sent twice"
        if fault in ("webhook-silent", "closed-port"):
            assert Outbox(tmp_path / "data" / "outbox.sqlite").view(WEBHOOK_SCOPE).counts()["pending"] == 20
        if fault == "audit-locked":
            spool = Outbox(tmp_path / "data" / "outbox.sqlite").view(destination_scope("audit"))
            assert spool.counts()["pending"] == 20


def test_default_stop_is_bounded_with_everything_down(tmp_path, caplog):
    """Receiver silent, audit DB locked, OTLP silent (spans, metrics and the request log's records) at once: the
    default ``stop()`` returns within 11 s."""
    with WebhookReceiver(hang=60) as receiver, SilentServer() as otlp:
        app = Nexus("down", environ=_environ(tmp_path, otlp.url))
        app.add_plugin(WebhookPlugin(receiver.url, max_attempts=1000))
        app.add_plugin(DatabasePlugin())
        app.add_plugin(RequestLoggerPlugin(output=None))
        app.register("ship", lambda inputs: {"shipped": inputs["n"]})
        held = LockedSQLite(tmp_path / "data" / "audit.sqlite")
        try:
            with app:
                for n in range(10):
                    app.execute_workflow("ship", {"n": n})
                time.sleep(0.3)
                started = time.monotonic()
            elapsed = time.monotonic() - started
        finally:
            held.release()
        assert elapsed <= 11.0, f"stop took {elapsed:.1f} s"
        assert all(n == 1 for n in _ids(receiver).values())
    left = [r.getMessage() for r in caplog.records if "left in" in r.getMessage() or "in flight" in r.getMessage()]
    assert len(left) == 2, left  # one line per sink says what was left


@pytest.mark.parametrize("fault", FAULTS)
def test_serve_exits_within_eleven_seconds_of_sigterm(tmp_path, fault):
    """``nexus-otel serve`` exits within 11 s of SIGTERM in each fault mode."""
    with _destinations(fault, tmp_path) as (receiver, webhook_url, endpoint, lock):
        env = cli_env(tmp_path / "data", TEST_WEBHOOK_URL=webhook_url,
                      TEST_AUDIT_DSN=f"sqlite:///{tmp_path / 'data' / 'audit.sqlite'}",
                      **{k: v for k, v in _environ(tmp_path, endpoint).items() if k.startswith("OTEL_")})
        server = Served("tests.apps.notify:app", env, tmp_path)
        try:
            if lock:
                lock()
            for n in range(5):
                assert httpx.post(f"{server.url}/workflows/ship", json={"order": n}, timeout=10).status_code == 200
            time.sleep(0.3)
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(30)
            elapsed = time.monotonic() - started
        finally:
            code, stderr = server.stop()
        assert elapsed <= 11.0, f"serve took {elapsed:.1f} s to exit with {fault}: {stderr[-2000:]}"
        assert all(n == 1 for n in _ids(receiver).values())


@pytest.mark.parametrize("fault", ["otlp-silent", "closed-port"])
def test_run_returns_within_two_seconds_of_its_workflow(tmp_path, fault):
    """``nexus-otel run`` exits within 2 s of its workflow's end whatever the OTLP endpoint does."""
    with _destinations(fault, tmp_path) as (_, _, endpoint, _):
        marker = tmp_path / "ended"
        env = cli_env(tmp_path / "data", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, TEST_MARKER=str(marker))
        result = nexus_otel("run", "tests.apps.marking:app", "mark", env=env, cwd=tmp_path, timeout=60)
        finished = time.time()
        assert result.returncode == 0, result.stderr
        ended = float(marker.read_text())
        assert finished - ended <= 2.0, f"run took {finished - ended:.1f} s after its workflow ended"
