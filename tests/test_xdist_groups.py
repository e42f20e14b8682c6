"""The parallel run's grouping: a file's tests stay together, the wall-clock-bound tests share one group."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .xdist_groups import TIMING, TIMING_GROUP, group_of

ROOT = Path(__file__).resolve().parent.parent


def test_a_tests_group_is_its_file_unless_it_is_timed():
    """Untimed tests are grouped by file; a timed file or test (any parametrization) is in the timing group."""
    assert group_of("tests/test_demo.py::test_demo_runs_and_its_summary_matches_what_it_sent") == "tests/test_demo.py"
    assert group_of("tests/test_workers.py::test_both_workers_served") == TIMING_GROUP
    timed = "tests/test_demo.py::test_demo_fails_within_15_s_naming_the_endpoint_when_nothing_takes_its_telemetry"
    assert group_of(timed + "[closed-port]") == group_of(timed) == TIMING_GROUP
    assert group_of("tests/test_lifecycle.py::test_a_stopped_app_that_never_ran_stops_within_its_deadline_x") == (
        "tests/test_lifecycle.py")  # a longer name is another test
    assert group_of("tests/test_workers_more.py::test_x") == "tests/test_workers_more.py"


@pytest.mark.parametrize("entry", TIMING)
def test_every_timed_entry_names_a_test_that_exists(entry):
    """A renamed or moved test would silently leave the timing group: each entry names a file and a test in it."""
    path, _, name = entry.partition("::")
    assert (ROOT / path).is_file(), f"{entry}: no such file"
    if name:
        assert re.search(rf"^(async )?def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), (
            f"{entry}: no such test in {path}")


def test_two_workers_run_each_group_on_one_of_them(tmp_path):
    """Under ``-n 2 --dist loadgroup`` each file's tests, and the timed tests of several files, share a worker."""
    timed = "test_a_stopped_app_that_never_ran_stops_within_its_deadline"
    files = {"test_lifecycle": [timed] + [f"test_l{i}" for i in range(12)],
             "test_workers": [f"test_w{i}" for i in range(12)], "test_other": [f"test_o{i}" for i in range(12)]}
    (tmp_path / "tests").mkdir()
    (tmp_path / "ran").mkdir()
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    for name, tests in files.items():  # each test writes its worker's name to ran/<file>::<test>
        (tmp_path / "tests" / f"{name}.py").write_text("import os\n" + "".join(
            f"def {test}():\n    open('{tmp_path}/ran/{name}.py::{test}', 'w')"
            f".write(os.environ['PYTEST_XDIST_WORKER'])\n" for test in tests))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:nexus_otel",
               "-p", "tests.xdist_groups", "-n", "2", "--dist", "loadgroup", "tests"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workers: dict[str, set[str]] = {}
    for ran in (tmp_path / "ran").iterdir():
        workers.setdefault(group_of(f"tests/{ran.name}"), set()).add(ran.read_text())
    assert sum(len(tests) for tests in files.values()) == len(list((tmp_path / "ran").iterdir())) == 37
    assert set(workers) == {TIMING_GROUP, "tests/test_lifecycle.py", "tests/test_other.py"}
    assert all(len(on) == 1 for on in workers.values()), workers
