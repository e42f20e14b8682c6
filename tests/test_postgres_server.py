"""Self-test of the PostgreSQL test helper: a real server that survives a stop/start with its data."""

from __future__ import annotations

import os
import pwd
import stat

import psycopg
import pytest

try:  # tests/ may or may not become a package
    from .postgres_server import PostgresServer, pid_alive
except ImportError:
    from postgres_server import PostgresServer, pid_alive

pytestmark = pytest.mark.timeout(60)


def test_data_survives_stop_and_start() -> None:
    """Insert rows, stop the server (connections fail), start it again on the same port: rows still there."""
    with PostgresServer() as pg:
        assert pg.is_running()
        assert pg.dsn == f"postgresql://nexus@127.0.0.1:{pg.port}/nexus"
        port, base = pg.port, pg.base_dir
        assert base is not None and base.is_dir()

        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            assert conn.execute("select current_user, current_database()").fetchone() == ("nexus", "nexus")
            assert conn.execute("show fsync").fetchone() == ("off",)
            conn.execute("create table items (id int primary key, name text not null)")
            conn.execute("insert into items values (1, 'one'), (2, 'two')")

        pg.stop()
        assert not pg.is_running()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.dsn, connect_timeout=2)

        pg.start()
        assert pg.is_running()
        assert pg.port == port
        postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
        with pg.connect() as conn:
            rows = conn.execute("select id, name from items order by id").fetchall()
        assert rows == [(1, "one"), (2, "two")]

    assert not pg.is_running()
    assert not base.exists()
    assert not pid_alive(postmaster), "close() must stop the server process"


def test_runs_as_non_root_in_traversable_dir() -> None:
    """As root, the cluster belongs to a non-root user and its parent dir is world-traversable."""
    with PostgresServer() as pg:
        owner = os.stat(pg.data_dir).st_uid
        if os.geteuid() == 0:
            assert owner != 0
            assert pwd.getpwuid(owner).pw_name in ("postgres", "nexustest")
        assert stat.S_IMODE(os.stat(pg.base_dir).st_mode) == 0o755
        with pg.connect("postgres") as conn:
            assert conn.execute("select inet_server_addr()::text").fetchone()[0].startswith("127.0.0.1")
    pg.close()  # a second close is harmless
