"""Reading traces and their logs back from the local stores: recent traces, one trace as a tree, log lines.

The tree reads like a trace view in Jaeger: each span with its duration and
its start offset from the beginning of the trace, children indented under
their parent, errors marked; the trace's log records stand among them, each
under the span it was written in, at its time. Its lines are safe to print:
every value from a span or a log record (which a caller may have chosen, like
a session id or a URL path) is made inert for a terminal.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .errors import AmbiguousTraceIdError, ConfigurationError
from .exporters.local import read_spans
from .exporters.local_logs import read_logs
from .exporters.logfile import LogLine
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
        raise AmbiguousTraceIdError(trace_id, len(traces))
    return next(iter(traces.items()))


@dataclass(slots=True)
class TraceRecords:
    """What the local stores hold of one trace: its spans (none when it was not sampled) and its log records."""

    trace_id: str
    spans: list[SpanRecord]
    logs: list[LogLine]


def find_trace_records(directory: str | os.PathLike[str], trace_id: str) -> TraceRecords | None:
    """The spans and log records of the trace whose id is (or starts with) ``trace_id``.

    A trace that was not sampled has no spans but may still have log records (they are
    exported whatever the sampler decided), so either kind finds it; ``ValueError`` if the
    prefix matches more than one trace.
    """
    wanted = trace_id.lower().strip()
    spans = group_traces(s for s in read_spans(directory) if s.trace_id.startswith(wanted))
    logs: dict[str, list[LogLine]] = {}
    for line in read_logs(directory, trace_prefix=wanted):
        if line.trace_id is not None and line.trace_id.startswith(wanted):
            logs.setdefault(line.trace_id, []).append(line)
    found = set(spans) | set(logs)
    if not found:
        return None
    if len(found) > 1:
        raise AmbiguousTraceIdError(trace_id, len(found))
    tid = found.pop()
    return TraceRecords(tid, spans.get(tid, []), sorted(logs.get(tid, []), key=lambda line: line.time_ns))


LOG_LABEL_WIDTH = 80
"""A log record's body is cut to fit a tree line this wide (``-a`` shows it whole)."""


def _start_ns(node: SpanRecord | LogLine) -> int:
    return node.start_ns if isinstance(node, SpanRecord) else node.time_ns


def _log_label(line: LogLine) -> str:
    return f"log {inert_line(line.level)} {inert_line(line.body)}"


def render_tree(spans: list[SpanRecord], show_attributes: bool = False, header: bool = False,
                logs: Iterable[LogLine] = ()) -> list[str]:
    """The trace as text lines: ``name  duration  +offset`` with tree branches.

    Each of ``logs`` stands under the span whose id it carries (else under the first root,
    or on its own when no span was kept) as ``log LEVEL body  +offset``, among that span's
    children in time order. With ``show_attributes`` each span is followed by its attributes
    and events, and each log record by its attributes, indented under it; with ``header`` a
    first line labels the columns (the offset is from the trace's first span or record).
    """
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRecord | LogLine]] = {}
    for s in spans:
        parent = s.parent_id if s.parent_id in ids else None
        children.setdefault(parent, []).append(s)
    roots = sorted(children.get(None, []), key=_start_ns)
    fallback = roots[0].span_id if roots and isinstance(roots[0], SpanRecord) else None
    log_list = list(logs)
    for line in log_list:
        children.setdefault(line.span_id if line.span_id in ids else fallback, []).append(line)
    for kids in children.values():
        kids.sort(key=lambda n: (_start_ns(n), isinstance(n, LogLine), n.name if isinstance(n, SpanRecord) else ""))
    starts = [s.start_ns for s in spans] + [line.time_ns for line in log_list]
    if not starts:
        return []
    t0 = min(starts)
    rows: list[tuple[str, SpanRecord | LogLine, str]] = []

    def walk(node: SpanRecord | LogLine, prefix: str, last: bool, top: bool) -> None:
        branch = "" if top else ("└─ " if last else "├─ ")
        kids = children.get(node.span_id, []) if isinstance(node, SpanRecord) else []
        child_prefix = prefix if top else prefix + ("   " if last else "│  ")
        label = inert_line(node.name) if isinstance(node, SpanRecord) else _log_label(node)
        rows.append((prefix + branch + label, node, child_prefix + ("│  " if kids else "   ")))
        for i, kid in enumerate(kids):
            walk(kid, child_prefix, i == len(kids) - 1, False)

    for root in children.get(None, []):
        walk(root, "", True, True)
    span_width = max((len(label) for label, node, _ in rows if isinstance(node, SpanRecord)), default=0)
    log_width = min(max((len(label) for label, node, _ in rows if isinstance(node, LogLine)), default=0),
                    LOG_LABEL_WIDTH)
    width = max(span_width, log_width, 4) + 2
    lines = [f"{'SPAN'.ljust(width)}{'DURATION':>13}   {'STARTED AFTER':>13}"] if header else []
    for label, node, detail_prefix in rows:
        offset = f"+{(_start_ns(node) - t0) / 1e6:>9.3f} ms"
        if isinstance(node, LogLine):
            cut = label if len(label) <= width - 2 else label[: width - 3] + "…"
            lines.append(f"{cut.ljust(width)}{'':>13}   {offset}")
            if show_attributes:
                if cut != label:
                    lines.append(f"{detail_prefix}body = {inert_line(node.body)}")
                for key in sorted(node.attributes):
                    lines.append(f"{detail_prefix}{inert_line(key)} = {inert_line(node.attributes[key])}")
            continue
        span = node
        error = span.attributes.get(c.ERROR_TYPE) or span.status_message
        mark = f"  ERROR {inert_line(error)}" if span.status == "ERROR" else ""
        lines.append(f"{label.ljust(width)}{span.duration_ms:>10.3f} ms   {offset}{mark}")
        if show_attributes:
            for key in sorted(span.attributes):
                lines.append(f"{detail_prefix}{inert_line(key)} = {inert_line(span.attributes[key])}")
            for event in span.events:
                details = ", ".join(f"{k}={v}" for k, v in sorted(event["attributes"].items())
                                    if k != "exception.stacktrace")
                lines.append(f"{detail_prefix}event {inert_line(event['name'])}: {inert_line(details)}")
    return lines


LEVEL_NUMBERS = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21,
                 "CRITICAL": 21}
"""A level name (OpenTelemetry's or Python's) to the lowest severity number it covers."""


def severity_of(line: LogLine) -> int:
    """The record's severity number; one without a number (0) is judged by its severity text."""
    return line.severity_number or LEVEL_NUMBERS.get(line.severity_text.upper(), 0)


@dataclass(slots=True)
class LogFilter:
    """Which log records ``nexus-otel logs`` shows.

    ``workflow`` keeps the records that name the workflow (``nexus.workflow.name``) and
    every record in the same trace as one of those: the lines a workflow writes with
    ``logging`` carry its trace, not its name. While following, a record whose trace is
    not known yet waits up to ``pending_seconds`` for the workflow's own record, which
    may be written after it.
    """

    workflow: str | None = None
    level: str | None = None
    trace_prefix: str | None = None
    pending_seconds: float = 10.0
    _traces: set[str] = field(default_factory=set, init=False)
    _pending: list[tuple[float, LogLine]] = field(default_factory=list, init=False)
    _min_severity: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.level is not None:
            if self.level.upper() not in LEVEL_NUMBERS:
                raise ConfigurationError("level", self.level, f"one of {', '.join(LEVEL_NUMBERS)}")
            self._min_severity = LEVEL_NUMBERS[self.level.upper()]
        if self.trace_prefix is not None:
            self.trace_prefix = self.trace_prefix.lower().strip()

    def _note(self, lines: Iterable[LogLine]) -> None:
        if self.workflow is None:
            return
        for line in lines:
            if line.trace_id is not None and line.attributes.get(c.WORKFLOW_NAME) == self.workflow:
                self._traces.add(line.trace_id)

    def _passes(self, line: LogLine) -> bool:
        if self._min_severity and severity_of(line) < self._min_severity:
            return False
        if self.trace_prefix is not None and not (line.trace_id or "").startswith(self.trace_prefix):
            return False
        return True

    def _in_workflow(self, line: LogLine) -> bool:
        return (self.workflow is None or line.attributes.get(c.WORKFLOW_NAME) == self.workflow
                or line.trace_id in self._traces)

    def latest(self, lines: list[LogLine], limit: int) -> list[LogLine]:
        """The last ``limit`` of ``lines`` that match, oldest first."""
        self._note(lines)
        kept = [line for line in lines if self._passes(line) and self._in_workflow(line)]
        kept.sort(key=lambda line: line.time_ns)
        return kept[-limit:]

    def follow(self, lines: list[LogLine], now: float | None = None) -> list[LogLine]:
        """Of records just written (and those waiting for their trace), the ones that match."""
        now = time.monotonic() if now is None else now
        self._note(lines)
        out: list[LogLine] = []
        waiting: list[tuple[float, LogLine]] = []
        for since, line in [*self._pending, *((now, line) for line in lines)]:
            if not self._passes(line):
                continue
            if self._in_workflow(line):
                out.append(line)
            elif line.trace_id is not None and now - since < self.pending_seconds:
                waiting.append((since, line))
        self._pending = waiting
        out.sort(key=lambda line: line.time_ns)
        return out


def local_time(time_ns: int) -> str:
    """``2026-01-02 15:04:05.123`` in this machine's time zone."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return f"{_dt.datetime.fromtimestamp(seconds):%Y-%m-%d %H:%M:%S}.{rest // 1_000_000:03d}"


def format_log_line(line: LogLine, show_attributes: bool = False) -> list[str]:
    """One record as ``time  LEVEL  scope  body  trace=<8 hex>``, then with ``show_attributes`` its attributes."""
    trace = f"  trace={inert_line(line.trace_id[:8])}" if line.trace_id else ""
    out = [f"{local_time(line.time_ns)}  {inert_line(line.level):<5}  {inert_line(line.scope or '-')}  "
           f"{inert_line(line.body)}{trace}"]
    if show_attributes:
        out += [f"    {inert_line(key)} = {inert_line(line.attributes[key])}" for key in sorted(line.attributes)]
    return out
