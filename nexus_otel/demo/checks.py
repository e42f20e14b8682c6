"""What the demo checks: each promise the telemetry makes about the traffic it saw, one named check each.

Traces are sampled, records and metrics are not (see ``docs/records.md``). So
the demo does not compare stored spans with executions under a sampler: it
checks what each path promises. Every execution is counted in the metrics
and gets one record, whatever the sampler; a caller's trace is continued;
and of the traces, the ones the sampling promises to keep are kept: with no
tail sampling, exactly the traces the head sampler sampled (each response's
``traceresponse`` header says whether it did); with tail sampling, every
trace that failed and every trace whose caller asked for it (sampled flag),
plus the ratio's share of the rest, which is not checked. A failed check
says what it expected and what it found.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from ..records import ExecutionRecord, RecordProcessor


@dataclass(frozen=True, slots=True)
class Request:
    """One request the demo sent to a workflow, and what its response said."""

    workflow: str
    failed: bool
    """The response was a 5xx (the workflow raised)."""
    trace_id: str
    """From the response's ``x-trace-id`` (empty if it had none)."""
    head_sampled: bool
    """The sampled flag of the response's ``traceresponse``: the head sampler's decision."""
    caller_sampled: bool
    """The request carried a caller's ``traceparent`` with the sampled flag."""
    continued: bool
    """The request carried a caller's ``traceparent`` and the response's trace is the caller's."""


@dataclass
class Sent:
    """What the demo sent and got back."""

    requests: list[Request] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    sample_trace: str | None = None
    """A caller's trace that was continued into a successful checkout: the one shown as a tree."""

    @property
    def by_workflow(self) -> Counter:
        return Counter(r.workflow for r in self.requests)

    @property
    def failed_by_workflow(self) -> Counter:
        return Counter(r.workflow for r in self.requests if r.failed)

    @property
    def caller_traces(self) -> int:
        return sum(1 for r in self.requests if r.caller_sampled)

    @property
    def continued_traces(self) -> int:
        return sum(1 for r in self.requests if r.continued)


class RecordCounter(RecordProcessor):
    """Counts the records the app gives its record processors, by workflow and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter = Counter()

    def on_end(self, record: ExecutionRecord) -> None:
        with self._lock:
            self.counts[(record.workflow, record.status)] += 1


@dataclass(frozen=True, slots=True)
class Check:
    """One promise checked: its name, whether it held, and what was found."""

    name: str
    ok: bool
    detail: str


def _by_status(sent: Sent) -> Counter:
    expected: Counter = Counter()
    for r in sent.requests:
        expected[(r.workflow, "failed" if r.failed else "completed")] += 1
    return expected


def _differences(expected: Counter, found: Counter | dict) -> list[str]:
    keys = sorted(set(expected) | {k for k, v in found.items() if v})
    return [f"{w} {s}: {found.get((w, s), 0):.0f} for {expected.get((w, s), 0)} sent"
            for w, s in keys if found.get((w, s), 0) != expected.get((w, s), 0)]


def metrics_check(sent: Sent, executions: dict[tuple[str, str], float]) -> Check:
    """Every execution counted once in ``nexus_workflow_executions_total``, by workflow and status."""
    expected = _by_status(sent)
    wrong = _differences(expected, {k: v for k, v in executions.items() if k[1] != "rejected"})
    total = sum(v for k, v in executions.items() if k[1] != "rejected")
    name = "metrics count every execution"
    if wrong:
        return Check(name, False, "nexus_workflow_executions_total differs: " + "; ".join(wrong))
    return Check(name, True, f"{total:.0f} of {len(sent.requests)} in nexus_workflow_executions_total, "
                             "by workflow and status")


def records_check(sent: Sent, counter: RecordCounter) -> Check:
    """One record per execution, with its workflow and status."""
    expected = _by_status(sent)
    wrong = _differences(expected, counter.counts)
    name = "one record per execution"
    if wrong:
        return Check(name, False, "records differ: " + "; ".join(wrong))
    return Check(name, True, f"{sum(counter.counts.values())} of {len(sent.requests)} records, "
                             "by workflow and status")


def context_check(sent: Sent) -> Check:
    """A caller's ``traceparent`` is continued: the execution's trace is the caller's."""
    name = "caller traces continued"
    callers, continued = sent.caller_traces, sent.continued_traces
    return Check(name, callers == continued, f"{continued} of {callers} requests with a traceparent")


def traces_check(sent: Sent, stored: Counter, tail_sampling: bool) -> Check:
    """The stored workflow spans (by trace id) are the traces the sampling promises to keep.

    ``stored`` counts the workflow spans in the local store by trace id.
    """
    sent_ids = {r.trace_id for r in sent.requests}
    unknown = [t for t in stored if t not in sent_ids]
    twice = [t for t, n in stored.items() if n > 1]
    if tail_sampling:
        name = "tail sampling kept every error and every caller-sampled trace"
        must = {r.trace_id for r in sent.requests if r.failed or (r.caller_sampled and r.head_sampled)}
        missing = [t for t in must if t not in stored]
        errors = sum(1 for r in sent.requests if r.failed)
        detail = (f"{errors} error traces and {len(must) - errors} more caller-sampled traces kept; "
                  f"{len(stored) - len(must)} of the other {len(sent.requests) - len(must)} "
                  "(the ratio's share, and slow ones)")
    else:
        name = "every sampled trace stored, no other"
        must = {r.trace_id for r in sent.requests if r.head_sampled}
        missing = [t for t in must if t not in stored]
        unknown += [t for t in stored if t in sent_ids and t not in must]
        detail = f"{len(must)} of {len(sent.requests)} traces sampled, {len(stored)} stored"
    problems = []
    if missing:
        problems.append(f"{len(missing)} traces not stored (e.g. {sorted(missing)[0]})")
    if unknown:
        problems.append(f"{len(unknown)} stored traces not expected (e.g. {sorted(unknown)[0]})")
    if twice:
        problems.append(f"{len(twice)} traces with more than one workflow span (e.g. {sorted(twice)[0]})")
    return Check(name, not problems, "; ".join(problems) if problems else detail)
