"""Outages cost little: a down receiver or database sees a few attempts a second in all, and the log gets
one line when the outage starts and one when it ends, not one per attempt."""

from __future__ import annotations

import logging
import time

from nexus_otel.plugins import DatabasePlugin, WebhookPlugin
from nexus_otel.testing import CapturedTelemetry

from .webhook_receiver import WebhookReceiver

PENDING = 50


def _lines(caplog, needle: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if needle in r.getMessage()]


def test_a_down_receiver_gets_a_few_probes_and_two_log_lines(tmp_path, caplog):
    """50 payloads waiting on a 503 receiver for 3 s: a handful of attempts, one line down, one line back."""
    caplog.set_level(logging.INFO)
    with WebhookReceiver(status=503) as receiver:
        app = CapturedTelemetry("outage").app("outage")
        webhook = WebhookPlugin(receiver.url, outbox_path=tmp_path / "outbox.sqlite", max_attempts=1000)
        app.add_plugin(webhook)
        app.register("ship", lambda inputs: inputs["n"])
        for n in range(PENDING):
            app.execute_workflow("ship", {"n": n})
        time.sleep(3.0)
        attempts = len(receiver.requests())
        # One probe at a time, backing off from 0.25-0.5 s: no per-message retry storm (it was ~50 a second).
        assert 1 <= attempts <= 8, f"{attempts} attempts in 3 s of outage"
        assert webhook.stats()["outbox_pending"] == PENDING
        assert len(_lines(caplog, "is unavailable")) == 1
        assert not _lines(caplog, "is back")
        receiver.set_status(200)
        receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs if r.status == 200}) == PENDING,
                          timeout=30)
        app.stop()
    back = _lines(caplog, "is back")
    assert len(back) == 1 and "held back" in back[0]
    assert len(_lines(caplog, "is unavailable")) == 1


def test_a_down_database_gets_a_few_attempts_and_two_log_lines(tmp_path, caplog, postgres):
    """Audit rows waiting on a stopped PostgreSQL for 3 s: a few attempts, one line; then it is back: one line."""
    caplog.set_level(logging.INFO)
    with postgres.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS workflow_executions")
    app = CapturedTelemetry("db-outage").app("db-outage")
    database = DatabasePlugin(postgres.dsn, spool_path=str(tmp_path / "spool.sqlite"))
    app.add_plugin(database)
    app.register("ship", lambda inputs: inputs["n"])
    postgres.stop()
    try:
        for n in range(PENDING):
            app.execute_workflow("ship", {"n": n})
        time.sleep(3.0)
        stats = database.stats()
        assert stats["written"] == 0 and stats["pending"] == PENDING
        assert 1 <= stats["retried"] <= 8, f"{stats['retried']} attempts in 3 s of outage"
        assert len(_lines(caplog, "is unavailable")) == 1
    finally:
        postgres.start()
    deadline = time.monotonic() + 40
    while database.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    app.stop()
    with postgres.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM workflow_executions").fetchone()[0] == PENDING
    assert len(_lines(caplog, "is unavailable")) == 1
    assert len(_lines(caplog, "is back")) == 1
