"""Every benchmark script runs end to end with ``--smoke`` (tiny numbers, its correctness checks on), and they pass.

Each script runs in a process of its own (``sys.executable``, from the repository root, output to a file), a few
at a time, the longest first: all at once, the servers some of them start would not answer in time on two cores.
A test per script then reads its exit status and output. No figure is asserted: a smoke run's figures mean
nothing, only its checks do. (``http_throughput.py --peers --smoke`` is left to be run by hand: seven servers more.)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SMOKE_PASSED = "smoke: every check passed"  # what benchmarks/harness.py's smoke_verdict prints when checks passed
TIMEOUT = 180.0  # seconds for the whole smoke run, on a loaded machine
AT_ONCE = 3  # runs at a time

# Longest first: those that start servers of their own (Kailash Nexus apps, six uvicorn servers) lead.
RUNS: dict[str, list[str]] = {
    "kailash_overhead": ["kailash_overhead.py", "--smoke"],
    "logs_cost": ["logs_cost.py", "--smoke"],
    "throughput": ["throughput.py", "--smoke"],
    "otlp_encoding": ["otlp_encoding.py", "--smoke"],
    "receivers": ["receivers.py", "--smoke"],
    "http_throughput": ["http_throughput.py", "--smoke"],
    "local_store": ["local_store.py", "--smoke"],
    "shared_outbox_throughput": ["shared_outbox_throughput.py", "--smoke"],
    "overhead": ["overhead.py", "--smoke"],
    "http_clients": ["http_clients.py", "--smoke"],
    "pg_outbox_choice": ["pg_outbox_choice.py", "--smoke"],
    "redaction": ["redaction.py", "--smoke"],
}
# Scripts the benchmarks start as processes of their own (servers, sinks, fixtures), not benchmarks themselves.
HELPERS = {"fixtures.py", "http_peers.py", "loopback_receiver.py", "otlp_sink.py"}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int | None, str]]:
    """Every run of ``RUNS``, ``AT_ONCE`` at a time: {name: (exit status, or None when killed at the deadline,
    output)}."""
    out_dir = tmp_path_factory.mktemp("benchmark-smoke")
    waiting = list(RUNS)
    running: dict[str, tuple[subprocess.Popen[str], IO[str]]] = {}
    results: dict[str, tuple[int | None, str]] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        while waiting or running:
            while waiting and len(running) < AT_ONCE:
                name = waiting.pop(0)
                script, *args = RUNS[name]
                out = open(out_dir / f"{name}.log", "w+")
                running[name] = (subprocess.Popen([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT,
                                                  stdout=out, stderr=subprocess.STDOUT, text=True), out)
            for name, (proc, out) in list(running.items()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    status = proc.poll()
                    if status is None:
                        proc.kill()
                        proc.wait(10)
                    out.seek(0)
                    results[name] = (status, out.read())
                    out.close()
                    del running[name]
            time.sleep(0.1)
    finally:
        for proc, out in running.values():
            proc.kill()
            proc.wait(10)
            out.close()
    return results


@pytest.mark.parametrize("name", list(RUNS))
def test_benchmark_smoke_run_passes_its_checks(name: str, smoke_runs: dict[str, tuple[int | None, str]]) -> None:
    """A benchmark's smoke run exits 0 and says every correctness check ran and passed."""
    status, output = smoke_runs[name]
    tail = "\n".join(output.splitlines()[-40:])
    assert status == 0, f"{name} --smoke exited {status}:\n{tail}"
    assert SMOKE_PASSED in output.splitlines(), f"{name} --smoke did not report its checks passed:\n{tail}"
    assert "CHECK FAILED" not in output, f"{name} --smoke reported a failed check:\n{tail}"


def test_every_benchmark_script_has_a_smoke_run() -> None:
    """Each runnable script in benchmarks/ is either smoke-run here or a helper the benchmarks start."""
    runnable = {p.name for p in BENCHMARKS.glob("*.py") if '__name__ == "__main__"' in p.read_text()}
    covered = {script for script, *_ in RUNS.values()}
    assert runnable - HELPERS == covered, f"not smoke-run: {sorted(runnable - HELPERS - covered)}"
