"""Case (c-floor), the durable floor: the host with core telemetry plus one record processor that only puts the
record's JSON in an outbox (one journal append; no payload, no worker, no other sink), over the host with core
telemetry alone. Reported, no target: the least that "durable before ``execute_workflow`` returns" can cost."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable

from fixtures import AUXILIARY_BUDGET, INPUTS, WORKFLOW, core_host
from harness import Case, Side

from nexus_otel import ExecutionRecord, RecordProcessor
from nexus_otel.outbox import Outbox


class DurableFloor(RecordProcessor):
    """The least a durable-on-return record can cost: one outbox put (a journal append) of its JSON, nothing else."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self.count = 0

    def on_end(self, record: ExecutionRecord) -> None:
        self.outbox.enqueue([(record.workflow_id, "floor", record.to_json())])
        self.count += 1


def build_floor_case(clock: Callable[[], float]) -> tuple[Side, Side]:
    """(c-floor): core telemetry + one bare outbox put per execution, over core telemetry."""
    base_app, base_providers, base_close = core_host()
    baseline = Side("core telemetry", lambda: base_app.execute_workflow(WORKFLOW, INPUTS), base_close)
    tmp = tempfile.mkdtemp(prefix="nexus-otel-floor-")
    app, providers, close_app = core_host()
    floor = DurableFloor(Outbox(os.path.join(tmp, "floor.sqlite")))
    app.records.add(floor)

    def close() -> None:
        try:
            close_app()
        finally:
            floor.outbox.close()
            shutil.rmtree(tmp, ignore_errors=True)

    candidate = Side("+ one outbox put", lambda: app.execute_workflow(WORKFLOW, INPUTS), close, {"floor": floor})
    return baseline, candidate


def check_floor_case(baseline: Side, candidate: Side) -> list[str]:
    candidate.run()
    floor = candidate.state["floor"]
    return [] if floor.count == 1 and floor.outbox.counts()["pending"] == 1 else ["the floor sink did not write"]


CASES = [
    Case(
        key="c-floor", title="durable floor: host with one bare outbox put per execution (the record's JSON, "
                             "no payload, no worker) vs host with core telemetry (trivial workflow, 3 hooks)",
        baseline_label="core telemetry", candidate_label="+ one outbox put",
        build=build_floor_case, target=None, n=100, check=check_floor_case, budget=AUXILIARY_BUDGET,
    ),
]
