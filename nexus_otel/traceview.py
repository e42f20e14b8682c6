"""Reading traces back from the local store: a list of recent traces, and one trace as a tree.

The tree reads like a trace view in Jaeger: each span with its duration and
its start offset from the beginning of the trace, children indented under
their parent, errors marked. Its lines are safe to print: every value from a
span (which a caller may have chosen, like a session id or a URL path) is
made inert for a terminal.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable
from dataclasses import dataclass

from .exporters.local import read_spans
from .exporters.spanfile import SpanRecord
from .telemetry import contract as c
from .terminal import inert_line


@dataclass(slots=True)
class TraceSummary:
    """One line of ``nexus-otel traces``."""

    trace_id: str
    root: str
    workflow: str
    status: str
    duration_ms: float
    start_ns: int
    span_count: int
    service: str

    @property
    def started(self) -> str:
        return _dt.datetime.fromtimestamp(self.start_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def group_traces(spans: Iterable[SpanRecord]) -> dict[str, list[SpanRecord]]:
    traces: dict[str, list[SpanRecord]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def summarize(trace_id: str, spans: list[SpanRecord]) -> TraceSummary:
    ids = {s.span_id for s in spans}
    roots = sorted((s for s in spans if s.parent_id not in ids), key=lambda s: s.start_ns)
    workflows = [s for s in spans if c.WORKFLOW_NAME in s.attributes]
    failed = any(s.status == "ERROR" for s in workflows) or any(
        s.status == "ERROR" for s in roots
    )
    start = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    return TraceSummary(
        trace_id=trace_id,
        root=roots[0].name if roots else spans[0].name,
        workflow=str(workflows[0].attributes[c.WORKFLOW_NAME]) if workflows else "-",
        status="failed" if failed else "ok",
        duration_ms=(end - start) / 1e6,
        start_ns=start,
        span_count=len(spans),
        service=spans[0].service,
    )


def recent_traces(directory: str | os.PathLike[str], limit: int = 20,
                  include_all: bool = False) -> list[TraceSummary]:
    """The ``limit`` most recent traces with a workflow (any trace if ``include_all``), newest first."""
    traces = group_traces(read_spans(directory))
    summaries = [summarize(tid, spans) for tid, spans in traces.items()]
    if not include_all:
        summaries = [s for s in summaries if s.workflow != "-"]
    summaries.sort(key=lambda s: s.start_ns, reverse=True)
    return summaries[:limit]


def find_trace(directory: str | os.PathLike[str], trace_id: str) -> tuple[str, list[SpanRecord]] | None:
    """The spans of the trace whose id is (or starts with) ``trace_id``; ``ValueError`` if ambiguous."""
    wanted = trace_id.lower().strip()
    traces = group_traces(s for s in read_spans(directory) if s.trace_id.startswith(wanted))
    if not traces:
        return None
    if len(traces) > 1:
        raise ValueError(f"trace id prefix {trace_id!r} matches {len(traces)} traces; give more digits")
    return next(iter(traces.items()))


def render_tree(spans: list[SpanRecord], show_attributes: bool = False, header: bool = False) -> list[str]:
    """The trace as text lines: ``name  duration  +offset`` with tree branches.

    With ``show_attributes`` each span is followed by its attributes and events, indented under it;
    with ``header`` a first line labels the columns (the offset is from the trace's first span).
    """
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRecord]] = {}
    for s in spans:
        parent = s.parent_id if s.parent_id in ids else None
        children.setdefault(parent, []).append(s)
    for kids in children.values():
        kids.sort(key=lambda s: (s.start_ns, s.name))
    t0 = min(s.start_ns for s in spans)
    rows: list[tuple[str, SpanRecord, str]] = []

    def walk(span: SpanRecord, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        kids = children.get(span.span_id, [])
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        rows.append((prefix + branch + inert_line(span.name), span, child_prefix + ("│  " if kids else "   ")))
        for i, kid in enumerate(kids):
            walk(kid, child_prefix, i == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    width = max(len(label) for label, _, _ in rows) + 2
    lines = [f"{'SPAN'.ljust(width)}{'DURATION':>13}   {'STARTED AFTER':>13}"] if header else []
    for label, span, detail_prefix in rows:
        error = span.attributes.get(c.ERROR_TYPE) or span.status_message
        mark = f"  ERROR {inert_line(error)}" if span.status == "ERROR" else ""
        lines.append(
            f"{label.ljust(width)}{span.duration_ms:>10.3f} ms   +{(span.start_ns - t0) / 1e6:>9.3f} ms{mark}"
        )
        if show_attributes:
            for key in sorted(span.attributes):
                lines.append(f"{detail_prefix}{inert_line(key)} = {inert_line(span.attributes[key])}")
            for event in span.events:
                details = ", ".join(f"{k}={v}" for k, v in sorted(event["attributes"].items())
                                    if k != "exception.stacktrace")
                lines.append(f"{detail_prefix}event {inert_line(event['name'])}: {inert_line(details)}")
    return lines
