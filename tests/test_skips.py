"""Under ``CI=true`` a skip fails the run, naming the test and its reason; elsewhere a skip is a skip.

Each test runs a small suite with the real ``tests/conftest.py`` (``pytester``), once with and once without
``CI=true``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

ON_PURPOSE = """
import pytest

def test_runs():
    pass

def test_skipped_on_purpose():
    pytest.skip("a tool this test needs is missing")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_a_known_bug():
    assert False
"""

MODULE_SKIPPED = """
import pytest

pytest.skip("this module's tool is missing", allow_module_level=True)

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A temporary directory with the suite's conftest.py."""
    pytester.makeconftest(CONFTEST.read_text())
    return pytester


def test_under_ci_a_skip_fails_the_run_naming_the_test_and_its_reason(suite, monkeypatch):
    """CI=true: the skipped test is a failure whose message names it and the skip's reason; an xfail stays one."""
    suite.makepyfile(test_on_purpose=ON_PURPOSE)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*test_on_purpose.py::test_skipped_on_purpose was skipped, and under CI=true "
                                 "every test must run*a tool this test needs is missing*"])


def test_without_ci_the_same_run_passes_with_the_skip(suite, monkeypatch):
    """Without CI=true the same suite passes, the skip counted as one."""
    suite.makepyfile(test_on_purpose=ON_PURPOSE)
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)


def test_under_ci_a_module_skipped_whole_fails_the_run_naming_it(suite, monkeypatch):
    """CI=true: a module-level skip fails the run (the rest still runs) and the summary names the module."""
    suite.makepyfile(test_on_purpose="def test_runs():\n    pass\n", test_module_skipped=MODULE_SKIPPED)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true, where every test must run*",
                                 "test_module_skipped.py: *this module's tool is missing*"])
    monkeypatch.delenv("CI")
    assert suite.runpytest("-p", "no:cacheprovider").ret == pytest.ExitCode.OK


def test_under_ci_skips_fail_the_run_on_pytest_xdist_workers_too(suite, monkeypatch):
    """CI=true with two pytest-xdist workers (as the test command runs): a skipped test and a module skipped whole
    each fail the run, named."""
    suite.makepyfile(test_on_purpose=ON_PURPOSE, test_module_skipped=MODULE_SKIPPED)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider", "-n", "2")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, xfailed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_on_purpose.py::test_skipped_on_purpose was skipped, and under CI=true*"])
    result.stdout.fnmatch_lines(["test_module_skipped.py: *this module's tool is missing*"])



NOT_RUN = """
import pytest

@pytest.mark.xfail(reason="would hang", run=False)
def test_never_run():
    pass
"""


def test_under_ci_an_xfail_that_never_runs_fails_the_run(suite, monkeypatch):
    """CI=true: ``xfail(run=False)`` never ran, so it fails the run (an error at set-up); elsewhere it is an xfail."""
    suite.makepyfile(test_not_run=NOT_RUN)
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_not_run.py::test_never_run was skipped, and under CI=true*"])
    monkeypatch.delenv("CI")
    suite.runpytest("-p", "no:cacheprovider").assert_outcomes(xfailed=1)
