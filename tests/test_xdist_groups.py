"""The parallel run's grouping: a file's tests stay together, the wall-clock-bound tests share one group."""

from __future__ import annotations

import re
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


def test_collected_tests_carry_their_group(request):
    """The plugin runs in this session: this test is marked with its file's group."""
    marks = [m.args[0] for m in request.node.iter_markers("xdist_group")]
    assert marks == ["tests/test_xdist_groups.py"]
