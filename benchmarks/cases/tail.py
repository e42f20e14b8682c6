"""Case (f), tail sampling: the host exporting its spans to the local trace store (the real encoder and file
writes) with ``NEXUS_OTEL_TAIL_SAMPLING_RATIO=0.1``, over the same host keeping every trace. Reported, no target;
two figures like (c): the hot path (the tail sampler buffers and decides on the workflow's thread) and the total
CPU including the export (a ``force_flush`` ends each round)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable

from fixtures import AUXILIARY_BUDGET, INPUTS, WORKFLOW, BenchPlugin, trivial_workflow
from harness import Case, Side

from nexus_otel import Nexus


def _sampled_host(tmp: str, environ_extra: dict[str, str]) -> tuple[Nexus, Callable[[], None]]:
    """The host with its own providers built from the environment: traces to the local store (the real encoder)."""
    environ = {"NEXUS_OTEL_DATA_DIR": tmp, "OTEL_TRACES_EXPORTER": "local", "OTEL_METRICS_EXPORTER": "none",
               **environ_extra}
    app = Nexus("bench", environ=environ)
    app.add_plugin(BenchPlugin())
    app.register(WORKFLOW, trivial_workflow)
    app.start()
    return app, lambda: app.stop(timeout=10)


def build_tail_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    """(f): tail sampling at 0.1 vs keep-all, both exporting to the local store; total CPU includes the export."""
    dirs = [tempfile.mkdtemp(prefix="nexus-otel-tail-") for _ in range(2)]
    base_app, base_close = _sampled_host(dirs[0], {})
    cand_app, cand_close = _sampled_host(dirs[1], {"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0.1"})

    def closer(close: Callable[[], None], tmp: str) -> Callable[[], None]:
        def run() -> None:
            try:
                close()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return run

    baseline = Side("keep all", lambda: base_app.execute_workflow(WORKFLOW, INPUTS), closer(base_close, dirs[0]),
                    {"app": base_app})
    candidate = Side("tail sampling 0.1", lambda: cand_app.execute_workflow(WORKFLOW, INPUTS),
                     closer(cand_close, dirs[1]), {"app": cand_app})
    baseline.drain = lambda: base_app.telemetry.force_flush()
    candidate.drain = lambda: cand_app.telemetry.force_flush()
    return baseline, candidate


def check_tail_case(baseline: Side, candidate: Side) -> list[str]:
    problems = []
    if baseline.state["app"].telemetry.tail_sampler is not None:
        problems.append("the keep-all side has a tail sampler")
    if candidate.state["app"].telemetry.tail_sampler is None:
        problems.append("the tail-sampling side has none")
    return problems


CASES = [
    Case(
        key="f", title="tail sampling: NEXUS_OTEL_TAIL_SAMPLING_RATIO=0.1 vs keep-all, both exporting to the "
                       "local store (trivial workflow, 3 hooks); total includes the export",
        baseline_label="keep all", candidate_label="tail 0.1",
        build=build_tail_case, target=None, n=100, check=check_tail_case, budget=AUXILIARY_BUDGET, total=True,
    ),
]
