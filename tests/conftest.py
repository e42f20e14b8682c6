"""Shared test set-up: fresh providers per test, and no test writes into the repository."""

import pytest

from nexus_otel.testing import CapturedTelemetry


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Apps built from the environment keep their local traces in the test's temp dir."""
    monkeypatch.setenv("NEXUS_OTEL_DATA_DIR", str(tmp_path / "nexus-data"))


@pytest.fixture
def capture():
    """In-memory span and metric capture (the same tool plugin authors use)."""
    cap = CapturedTelemetry()
    yield cap
    cap.shutdown()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (Debian's binaries) in a temp dir on a loopback port, shared by the session."""
    from .postgres_server import PostgresServer

    with PostgresServer() as pg:
        yield pg
