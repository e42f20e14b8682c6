"""The benchmarks' one method: paired rounds, the order turning every round, medians and their ratios, CPU clocks.

A benchmark compares sides (a baseline and a candidate in this process, or servers in processes of their own)
measured in rounds. Within a round every side runs once, back to back, and the order turns from round to round
(``rotated``: A B C, B C A, ...; for two sides, A B then B A), so drift, frequency changes and other jobs' load
hit all sides alike. Each side's figure is the median over its rounds. Two ratios come from the same rounds:
the ratio of the medians, and the median of the per-round ratios (``paired_ratio``: each round's sides ran back
to back, so a slow spell of the machine mostly cancels out). Both are printed; which one a benchmark judges
is its own choice, written where it prints them.

For sides in this process, ``measure`` runs a ``Case`` (a ``build`` making fresh ``Side``s, checks before and
after) in rounds timed with the garbage collector paused, on the clocks of ``CLOCKS``. CPU time rather than
wall time is the default there: on a shared machine, time spent descheduled would land on whichever side
happened to run. For other processes, ``process_cpu`` and ``tree_cpu`` read Linux's ``/proc``; for the threads
of this one, ``thread_cpu`` reads each thread's own CPU clock.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Clock = Callable[[], float]

CLOCKS: dict[str, Clock] = {
    # CPU time of this thread: time the scheduler gives to other processes is not
    # counted, which is what makes a shared, loaded machine usable. Everything both
    # sides of (a) and (b) do (SimpleSpanProcessor exports included) runs in this thread.
    "cpu": time.thread_time,
    # CPU time of the whole process, every thread: for (c), whose batch processors and
    # outbox workers do their share on background threads.
    "process": time.process_time,
    "wall": time.perf_counter,
}
CLOCK_NAMES = {"cpu": "thread CPU time", "process": "process CPU time", "wall": "wall time"}

MIN_ROUNDS = 15  # a case's rounds stop early when its budget runs out, never before this many
SMOKE_PASSED = "smoke: every check passed"  # the line a --smoke run ends with when its checks passed


# --------------------------------------------------------------------------------------
# Rounds and their statistics
# --------------------------------------------------------------------------------------
def rotated(sides: Sequence[T], r: int) -> list[T]:
    """Round ``r``'s order: the sides take turns going first (A B C, B C A, ...), so drift hits all alike."""
    k = r % len(sides)
    return [*sides[k:], *sides[:k]]


def ratio_of_medians(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """median(numerator) / median(denominator) over the rounds."""
    return statistics.median(numerator) / statistics.median(denominator)


def paired_ratio(numerator: Iterable[float], denominator: Iterable[float]) -> float:
    """The median over rounds of that round's numerator / denominator (the two ran back to back)."""
    return statistics.median(n / d for n, d in zip(numerator, denominator))


def paired_difference(minuend: Iterable[float], subtrahend: Iterable[float]) -> float:
    """The median over rounds of that round's minuend - subtrahend."""
    return statistics.median(m - s for m, s in zip(minuend, subtrahend))


def format_ratio(value: float, target: float | None, at_least: bool = False) -> str:
    """Three decimals, or more when three would round across the target (1.0504 is not 1.050 against <= 1.05;
    0.69996 is not 0.700 against >= 0.7). ``at_least``: the target is a floor, not a ceiling."""
    if target is None:
        return f"{value:.3f}"
    for places in range(3, 7):
        text = f"{value:.{places}f}"
        if at_least:
            if (float(text) >= target) == (value >= target):
                break
        elif (float(text) <= target) == (value <= target):
            break
    return text


def add_smoke_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--smoke``: a run that only shows the script works, ``what`` (its tiny numbers), every check on."""
    parser.add_argument("--smoke", action="store_true",
                        help=f"a run that only shows the script works: {what}, every check on, figures meaningless; "
                             "exits 1 when a check fails")


def smoke_verdict(problems: Sequence[str]) -> int:
    """The end of a ``--smoke`` run (tiny numbers, checks on, figures meaningless): ``SMOKE_PASSED`` and exit
    status 0 when no check failed, else each problem and 1. A smoke run gates correctness only, never a figure."""
    if problems:
        for problem in problems:
            print(f"smoke: CHECK FAILED: {problem}")
        return 1
    print(SMOKE_PASSED)
    return 0


# --------------------------------------------------------------------------------------
# CPU of other processes (Linux's /proc) and of this process's threads
# --------------------------------------------------------------------------------------
def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far; 0 where it cannot be read (ended, not Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return 0.0


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid`` and its descendants so far (a supervisor and its workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += process_cpu(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):  # ended meanwhile
            continue
    return total


def cpu_of_thread(thread: threading.Thread) -> float | None:
    """CPU seconds ``thread`` (of this process) has used so far, from its own CPU clock, read from the calling
    thread; None once it ended, or where thread clocks cannot be read (not Linux)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]
    except (OSError, TypeError, AttributeError):
        return None


def thread_cpu(names: Iterable[str]) -> dict[str, float] | None:
    """CPU seconds so far of this process's threads named in ``names``, summed by name; None where a thread
    clock cannot be read (not Linux, a thread ended meanwhile)."""
    wanted = set(names)
    cpu: dict[str, float] = {}
    for thread in threading.enumerate():
        if thread.name in wanted and thread.ident is not None:
            seconds = cpu_of_thread(thread)
            if seconds is None:
                return None
            cpu[thread.name] = cpu.get(thread.name, 0.0) + seconds
    return cpu


# --------------------------------------------------------------------------------------
# Cases measured in this process: a baseline and a candidate side, alternating
# --------------------------------------------------------------------------------------
@dataclass
class Side:
    """One side of a case: ``run()`` performs one execution; ``close()`` tears down.

    ``drain()``, when set, runs at the end of every timed round: it waits for the work
    the round left to background threads. It counts in a case's single figure, or, for
    a case with a ``total``, in the total only (the judged hot path stops before it).
    """

    label: str
    run: Callable[[], Any]
    close: Callable[[], None] = lambda: None
    state: dict[str, Any] = field(default_factory=dict)
    drain: Callable[[], Any] | None = None


@dataclass
class Case:
    """What a case measures: ``build(clock)`` returns fresh baseline and candidate sides (``clock`` is the one
    the rounds are timed on, for a workflow that busy-waits on it), with the checks that make its figures
    mean something."""

    key: str
    title: str
    baseline_label: str
    candidate_label: str
    build: Callable[[Clock], tuple[Side, Side]]
    target: float | None  # None: the ratio is reported, not judged
    n: int  # executions per side per round (full run)
    check: Callable[[Side, Side], list[str]] | None = None  # before timing
    final_check: Callable[[Side, Side], list[str]] | None = None  # after timing, before close
    clock: str | None = None  # the clock this case needs in place of the default "cpu" (thread) clock
    budget: float | None = None  # wall seconds for this case (full run), in place of --budget's default
    max_rounds: int | None = None  # at most this many rounds (full run), in place of --rounds' default
    # Two figures per round: the judged one, this thread's CPU around the executions only (the
    # hot path), and a reported "total", the process's CPU around the executions plus the drain.
    total: bool = False


@dataclass
class Result:
    case: Case
    baseline: list[float]  # per-execution seconds, one per round
    candidate: list[float]
    problems: list[str]
    rounds_planned: int = 0
    clock: str = "cpu"
    notes: list[str] = field(default_factory=list)
    # Cases with a total: per-execution seconds per round, loop plus drain (reported, not judged).
    base_total: list[float] = field(default_factory=list)
    cand_total: list[float] = field(default_factory=list)
    total_clock: str = "process"

    @property
    def base_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def cand_median(self) -> float:
        return statistics.median(self.candidate)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios (each round's two sides ran back to back): judged."""
        return paired_ratio(self.candidate, self.baseline)

    @property
    def ratio_of_medians(self) -> float:
        """median(candidate) / median(baseline): shown for comparison."""
        return ratio_of_medians(self.candidate, self.baseline)

    @property
    def total_ratio(self) -> float:
        """Median of the per-round ratios of the totals (informational)."""
        return paired_ratio(self.cand_total, self.base_total)

    @property
    def total_ratio_of_medians(self) -> float:
        return ratio_of_medians(self.cand_total, self.base_total)

    @property
    def paired_extra(self) -> float:
        """Median over rounds of candidate - baseline (seconds per execution)."""
        return paired_difference(self.candidate, self.baseline)

    @property
    def passed(self) -> bool:
        """Checks passed and, for a case with a target, the ratio met it."""
        return not self.problems and (self.case.target is None or self.ratio <= self.case.target)


def time_round(side: Side, n: int, clock: Clock = time.thread_time,
               total_clock: Clock | None = None) -> tuple[float, float | None]:
    """Per-execution seconds: (judged figure, total or None).

    Without ``total_clock`` the judged figure spans the executions and the drain. With
    it, the judged figure spans the executions only (the hot path), and the total, on
    ``total_clock``, spans the executions and the drain.
    """
    fn, drain = side.run, side.drain
    loop = range(n)
    gc.collect()
    gc.disable()
    try:
        total_start = total_clock() if total_clock is not None else 0.0
        start = clock()
        for _ in loop:
            fn()
        if total_clock is None:
            if drain is not None:
                drain()
            return (clock() - start) / n, None
        elapsed = clock() - start
        if drain is not None:
            drain()
        total = total_clock() - total_start
    finally:
        gc.enable()
    return elapsed / n, total / n


def measure(case: Case, rounds: int, n: int, warmup: int,
            clock: Clock = time.thread_time, budget: float = float("inf"),
            total_clock: Clock | None = None) -> Result:
    """Up to ``rounds`` rounds, fewer (but at least MIN_ROUNDS) if ``budget`` wall seconds run out."""
    deadline = time.perf_counter() + budget
    baseline, candidate = case.build(clock)
    try:
        problems = case.check(baseline, candidate) if case.check else []
        for side in (baseline, candidate, baseline, candidate):
            for _ in range(warmup):
                side.run()
            if side.drain is not None:
                side.drain()
        times: dict[int, list[float]] = {id(baseline): [], id(candidate): []}
        totals: dict[int, list[float]] = {id(baseline): [], id(candidate): []}

        def timed(side: Side) -> None:
            elapsed, total = time_round(side, n, clock, total_clock)
            times[id(side)].append(elapsed)
            if total is not None:
                totals[id(side)].append(total)

        for i in range(rounds):
            if i >= MIN_ROUNDS and i % 2 == 0 and time.perf_counter() > deadline:
                break
            for side in rotated((baseline, candidate), i):
                timed(side)
        if case.final_check:
            problems += case.final_check(baseline, candidate)
        return Result(case, times[id(baseline)], times[id(candidate)], problems, rounds,
                      notes=list(candidate.state.get("notes", ())),
                      base_total=totals[id(baseline)], cand_total=totals[id(candidate)])
    finally:
        baseline.close()
        candidate.close()
