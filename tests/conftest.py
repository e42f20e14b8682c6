"""Shared test set-up: fresh providers per test, no test writes into the repository, and no skip under CI."""

import os
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
    """Under CI=true, modules skipped whole fail the run (:class:`_ModulesSkippedUnderCI`). Hypothesis keeps its
    example database and caches in a temp dir, not in ``.hypothesis`` in the working directory (it writes there
    while pytest collects, before any fixture runs)."""
    if _skips_fail() and not hasattr(config, "workerinput"):  # not in a pytest-xdist worker: the controller
        config.pluginmanager.register(_ModulesSkippedUnderCI(), "nexus-otel-modules-skipped-under-ci")
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


def _skips_fail() -> bool:
    """Under ``CI=true`` every test must run: a skip means the test command did not install what a test needs."""
    return os.environ.get("CI") == "true"


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """Why ``report`` was skipped (``Skipped: <the reason given>``)."""
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI=true a skipped test (in its set-up, call or tear-down) fails, naming itself and the reason; an
    expected failure (xfail) stays what it is, unless it was never run (``xfail(run=False)``: reported at set-up)."""
    report = yield
    never_ran = hasattr(report, "wasxfail") and report.when == "setup"
    if report.skipped and (never_ran or not hasattr(report, "wasxfail")) and _skips_fail():
        reason = _skip_reason(report)
        if never_ran:
            del report.wasxfail  # else pytest counts the failure as an expected one
        report.outcome = "failed"
        report.longrepr = (f"{report.nodeid} was skipped, and under CI=true every test must run "
                           f"(the test command installs what they need): {reason}")
    return report


class _ModulesSkippedUnderCI:
    """Under CI=true, a module skipped as a whole (``pytest.skip(..., allow_module_level=True)``, ``importorskip`` at
    import) fails the run at its end, named in the summary; the rest still runs, so every such module is named.
    Registered in the process that reports (under pytest-xdist the controller, which gets the workers' collection
    reports through ``pytest_collectreport``)."""

    def __init__(self) -> None:
        self.skipped: dict[str, str] = {}

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Note a skipped module and why."""
        if report.skipped:
            self.skipped[report.nodeid] = _skip_reason(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """A skipped module fails a run that would otherwise pass."""
        if self.skipped and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        """Name each skipped module and why."""
        if self.skipped:
            terminalreporter.section("skipped under CI=true, where every test must run", red=True)
            for nodeid, reason in self.skipped.items():
                terminalreporter.line(f"{nodeid}: {reason} (the test command installs what the tests need)", red=True)


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
