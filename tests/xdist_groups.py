"""Which tests share a worker when the suite runs in parallel (``scripts/test.sh``: ``-n 2 --dist loadgroup``).

Loaded by ``addopts`` in pyproject.toml. Under ``--dist loadgroup`` it gives xdist the scheduler that sends a
group's tests to one worker as one unit, a test's group being :func:`group_of` it. (xdist's own loadgroup reads
``xdist_group`` marks by renaming each test's node id, which pytest 9.2 no longer lets it do: with it, the tests of
a file were spread over both workers.) Two rules:

* A file's tests run on one worker, in the file's order, as in a serial run: a module fixture (a real
  Collector and Jaeger, Prometheus, the stack on its fixed loopback ports) starts once, never twice at once.
* The tests in :data:`TIMING` assert a bound in wall-clock time (a stop within its timeout, a rate limit's
  count over a second, a median latency ratio), or load the CPU heavily (the benchmarks' smoke run): they form
  one group, so they run one after another on one worker and never compete with each other for the CPU (the
  other worker's tests still share the machine). Their bounds are unchanged.

And a worker's environment is the run's: a worker process finds ``COLUMNS=80`` and ``LINES=24`` set (GNU
readline, which pytest imports at start, exports them there; a serial run has neither), and a subprocess that sizes
itself by them (``nexus-otel top`` in its pseudo-terminal) would draw 80 columns wide. Each worker is given the
values the run started with.

Without xdist (``-n 0``, or a plain ``pytest tests/test_x.py``) none of this applies.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

TIMING_GROUP = "timing"
TERMINAL_SIZE = ("COLUMNS", "LINES")

# A file (every test in it) or file::test (every parametrization of it), as pytest names them from the rootdir.
TIMING = (
    "tests/test_benchmarks_smoke.py",  # not timed itself: it runs benchmarks three at a time, loading the CPU
    "tests/test_bounded_shutdown.py",  # stop / serve / run within their timeouts
    "tests/test_workers.py",  # rate limits across workers over a second; SIGTERM drains within its bound
    "tests/test_rate_limit.py",  # admitted and refused counts at the limit's rate
    "tests/test_adaptive_delivery.py",  # n deliveries within 12 s
    "tests/test_webhook_concurrency.py",  # parallel delivery faster than n x hang; stop within its timeout
    "tests/test_collector_restart.py",  # request latency while the Collector is down <= 5 x while up
    "tests/test_webhooks.py::test_hanging_receiver_does_not_slow_workflows",  # median latency ratio <= 1.05
    "tests/test_audit.py::test_postgres_outage_loses_no_rows_and_does_not_slow_workflows",  # slowest < 0.5 s
    "tests/test_demo.py::test_demo_fails_within_15_s_naming_the_endpoint_when_nothing_takes_its_telemetry",
    "tests/test_executions_endpoint.py::test_a_peer_that_does_not_answer_in_time_is_left_out",  # < 2 s
    "tests/test_http1.py::test_a_receiver_that_hangs_times_out_like_aiohttp",  # < 2.5 s
    "tests/test_hardening.py::test_a_trace_is_readable_from_the_local_store_within_a_second",
    "tests/test_hardening.py::test_otlp_timeout_is_read_in_milliseconds",  # < 5 s
    "tests/test_lifecycle.py::test_a_stopped_app_that_never_ran_stops_within_its_deadline",  # < 3 s
    "tests/test_webhook_receiver.py::test_hang_does_not_block_other_requests",  # < 2.5 s
    "tests/test_webhook_receiver.py::test_close_interrupts_a_hang",  # < 3 s
    "tests/test_webhook_receiver.py::test_hang_is_capped_and_headers_join",  # < 3 s
    "tests/test_outbox_worker.py::test_a_full_batch_is_followed_at_once_by_the_next",  # < 4.5 s
    "tests/test_outbox_journal.py::test_looks_do_not_wait_out_another_processs_lock",  # < busy_timeout / 2
    "tests/test_shared_outbox.py",  # delivered within lease + 10 s of a kill; 3 serve processes, 3,000 requests
)


def is_timing(nodeid: str) -> bool:
    """Whether ``nodeid`` is one of :data:`TIMING`: the file itself, or the test with any parameters."""
    return any(nodeid.startswith(entry + ("::" if "::" not in entry else "[")) or nodeid == entry
               for entry in TIMING)


def group_of(nodeid: str) -> str:
    """The group of a test: the ``xdist_group`` name xdist appended to its node id if it did (``...@name``, where
    its renaming works), else :data:`TIMING_GROUP` for a timed test, else its file."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[1]
    return TIMING_GROUP if is_timing(nodeid) else nodeid.split("::", 1)[0]


@pytest.hookimpl(optionalhook=True)  # an xdist hook (firstresult): ours answers before xdist's own
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under ``--dist loadgroup`` (and a plain ``-n N``, xdist's ``load``, which would spread a file's tests over the
    workers and start its module fixtures twice): xdist's scheduler by scope, a test's scope its :func:`group_of`."""
    if config.getvalue("dist") not in ("loadgroup", "load"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:  # how LoadScopeScheduling's subclasses choose their scope
            return group_of(nodeid)

    return ByGroup(config, log)


def pytest_configure(config: pytest.Config) -> None:
    run: dict[str, str | None] | None = getattr(config, "workerinput", {}).get("terminal_size")
    for name, value in (run or {}).items():  # in a worker: the terminal size variables as the run had them
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.hookimpl(optionalhook=True)  # an xdist hook: called in the run's process for each worker it starts
def pytest_configure_node(node: Any) -> None:
    node.workerinput["terminal_size"] = {name: os.environ.get(name) for name in TERMINAL_SIZE}

