"""The audit trail: a row per execution in SQLite and in a real PostgreSQL, surviving a database outage."""

import sqlite3
import threading
import time

import pytest

from nexus_otel.errors import PluginSetupError
from nexus_otel.plugins import DatabasePlugin


def _app(capture, dsn, tmp_path):
    app = capture.app("shop")

    @app.workflow("order")
    def order(inputs):
        return {"ok": inputs.get("n")}

    @app.workflow("boom")
    def boom(inputs):
        raise ValueError("out of stock")

    plugin = DatabasePlugin(dsn, spool_path=str(tmp_path / "spool.sqlite"))
    app.add_plugin(plugin)
    return app, plugin


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def test_sqlite_rows_match_the_spans(capture, tmp_path):
    """SQLite (the default): a row per execution with the columns of Kailash Nexus's audit example, error, trace id."""
    db = tmp_path / "audit.sqlite"
    app, plugin = _app(capture, f"sqlite:///{db}", tmp_path)
    app.execute_workflow("order", {"n": 1}, session_id="s1", channel="api")
    with pytest.raises(ValueError):
        app.execute_workflow("boom", {})
    app.stop()
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = {r["workflow_name"]: dict(r) for r in conn.execute("SELECT * FROM workflow_executions")}
    assert set(rows) == {"order", "boom"}
    ok, bad = rows["order"], rows["boom"]
    span = capture.span("workflow order")
    assert ok["workflow_id"] == span.attributes["nexus.workflow.id"]
    assert ok["trace_id"] == f"{span.context.trace_id:032x}"
    assert (ok["session_id"], ok["channel"], ok["status"]) == ("s1", "api", "completed")
    assert ok["duration"] > 0 and ok["started_at"] <= ok["completed_at"]
    assert ok["error"] is None
    assert bad["status"] == "failed" and "ValueError" in bad["error"]
    assert plugin.stats()["written"] == 2


def test_default_dsn_is_sqlite_in_the_data_dir(capture, tmp_path, monkeypatch):
    """With no DSN, rows go to audit.sqlite in the app's data directory."""
    app = capture.app()
    app.telemetry.config = type(app.telemetry.config)(data_dir=str(tmp_path / "data"))
    app.register("w", lambda i: 1)
    app.add_plugin(DatabasePlugin())
    app.execute_workflow("w", {})
    app.stop()
    count = sqlite3.connect(tmp_path / "data" / "audit.sqlite").execute(
        "SELECT COUNT(*) FROM workflow_executions").fetchone()[0]
    assert count == 1


def test_postgres_rows_are_written_and_idempotent(capture, tmp_path, postgres):
    """PostgreSQL (psycopg 3): rows land, the table is created if missing, a repeat upserts by workflow_id."""
    with postgres.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS workflow_executions")
    app, plugin = _app(capture, postgres.dsn, tmp_path)
    for n in range(5):
        app.execute_workflow("order", {"n": n})
    app.stop()
    with postgres.connect() as conn:
        rows = conn.execute("SELECT workflow_id, status, started_at FROM workflow_executions").fetchall()
    assert len(rows) == 5 and {r[1] for r in rows} == {"completed"}
    assert all(r[2].tzinfo is not None for r in rows)
    # Writing the same rows again changes nothing: rows are keyed by workflow_id.
    from nexus_otel.exporters.audit import COLUMNS, PostgresAuditStore

    with postgres.connect() as conn:
        again = [dict(zip(COLUMNS, r)) for r in conn.execute(f"SELECT {', '.join(COLUMNS)} FROM workflow_executions")]
    store = PostgresAuditStore(postgres.dsn, "workflow_executions")
    store.write(again)
    store.close()
    with postgres.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM workflow_executions").fetchone()[0] == 5


def test_postgres_outage_loses_no_rows_and_does_not_slow_workflows(capture, tmp_path, postgres):
    """Stop PostgreSQL mid-run, keep executing, start it again: every row arrives; workflows never waited."""
    with postgres.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS workflow_executions")
    app, plugin = _app(capture, postgres.dsn, tmp_path)
    for n in range(20):
        app.execute_workflow("order", {"n": n})
    assert _wait(lambda: plugin.stats()["written"] == 20)
    postgres.stop()
    slowest = 0.0
    for n in range(30):
        start = time.perf_counter()
        app.execute_workflow("order", {"n": n})
        slowest = max(slowest, time.perf_counter() - start)
    assert _wait(lambda: plugin.stats()["retried"] >= 1, 10)
    assert plugin.stats()["pending"] == 30
    assert slowest < 0.5  # nothing on the workflow's path talks to the database
    postgres.start()
    assert _wait(lambda: plugin.stats()["written"] == 50, 90), plugin.stats()
    app.stop()
    with postgres.connect() as conn:
        ids = {r[0] for r in conn.execute("SELECT workflow_id FROM workflow_executions")}
    assert ids == {s.attributes["nexus.workflow.id"] for s in capture.spans_named("workflow order")}
    assert len(ids) == 50


def test_rows_spooled_while_down_survive_a_restart_of_the_app(capture, tmp_path, postgres):
    """Rows spooled during an outage are written by the next app that uses the same spool."""
    with postgres.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS workflow_executions")
    postgres.stop()
    try:
        app, plugin = _app(capture, postgres.dsn, tmp_path)
        for n in range(5):
            app.execute_workflow("order", {"n": n})
        done = threading.Event()
        threading.Thread(target=lambda: (app.stop(), done.set()), daemon=True).start()
        assert done.wait(30)
    finally:
        postgres.start()
    app2, plugin2 = _app(capture, postgres.dsn, tmp_path)
    app2.start()  # the next start writes them
    assert _wait(lambda: plugin2.stats()["written"] == 5, 90), plugin2.stats()
    app2.stop()
    with postgres.connect() as conn:
        assert conn.execute("SELECT COUNT(*) FROM workflow_executions").fetchone()[0] == 5


@pytest.mark.parametrize(
    ("dsn", "needle"),
    [
        ("mysql://localhost/db", "DatabasePlugin.dsn='mysql://localhost/db'"),
        ("postgresql://u:hunter2@127.0.0.1/x?bad", None),
        ("sqlite://", "DatabasePlugin.dsn='sqlite://'"),
    ],
)
def test_bad_dsn_fails_at_setup_without_echoing_passwords(capture, tmp_path, dsn, needle):
    """An unsupported DSN fails at setup naming it; a password is never echoed."""
    app = capture.app()
    if needle is None:
        app.add_plugin(DatabasePlugin(dsn, spool_path=str(tmp_path / "s.sqlite")))  # connects lazily
        app.plugins.unregister("database")
        return
    with pytest.raises(PluginSetupError) as info:
        app.add_plugin(DatabasePlugin(dsn, spool_path=str(tmp_path / "s.sqlite")))
    assert needle in str(info.value) and "hunter2" not in str(info.value)
