"""Shared test set-up: fresh providers per test, and no test writes into the repository."""

import shutil
import tempfile

import pytest

from nexus_otel.testing import CapturedTelemetry


@pytest.fixture(scope="session", autouse=True)
def _outside_the_repository(tmp_path_factory):
    """The run works in a temp dir, module and session fixtures too: whatever an app writes relative to the working
    directory (the local store's default ``.nexus-otel``, for an app given ``environ=`` without a data dir) lands
    there, never in the repository."""
    where = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        patch.setenv("NEXUS_OTEL_DATA_DIR", str(where / "nexus-data"))
        yield


_HYPOTHESIS_HOME = pytest.StashKey[str]()


def pytest_configure(config):
    """Hypothesis keeps its example database and caches in a temp dir, not in ``.hypothesis`` in the working
    directory (it writes there while pytest collects, before any fixture runs)."""
    try:
        from hypothesis.configuration import set_hypothesis_home_dir
    except ImportError:
        return
    home = tempfile.mkdtemp(prefix="nexus-otel-hypothesis-")
    config.stash[_HYPOTHESIS_HOME] = home
    set_hypothesis_home_dir(home)


def pytest_unconfigure(config):
    home = config.stash.get(_HYPOTHESIS_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    """Apps built from the environment keep their local traces in the test's temp dir, which is also the working
    directory while the test runs."""
    monkeypatch.setenv("NEXUS_OTEL_DATA_DIR", str(tmp_path / "nexus-data"))
    monkeypatch.chdir(tmp_path)


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
