"""``nexus-otel top``: the executions running now in a served app, as a table that refreshes itself.

A trace arrives when its workflow ends, so an execution that hangs shows up
nowhere until it times out. ``top`` asks the app instead: ``GET /executions``
lists what is in flight (workflow, elapsed, the hook or node it is in, its
trace id to look up once it ends), and ``GET /metrics`` gives a line per
workflow: how many are in flight, how many finish per second and their p95.
Rates and p95 are the difference between two reads of the counters, as
Prometheus's ``rate()`` and ``histogram_quantile()`` would compute them over
the same window, so what ``top`` shows agrees with the dashboards.

Everything shown came from the server and may hold what a caller chose (a
workflow name, a session id): each value goes through :mod:`.terminal` first.
"""

from __future__ import annotations

import math
import os
import select
import signal
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .errors import NexusOtelError
from .telemetry import contract as c
from .terminal import inert_line, inert_markup
from .urls import mask_url

DEFAULT_SLOW = 10.0
"""Seconds after which an execution is shown as slow (``--slow``)."""
DEFAULT_INTERVAL = 1.0
"""Seconds between two reads (``--interval``)."""
TIMEOUT = httpx.Timeout(5.0, connect=2.0)
"""Short: a live view must not hang on a server that stopped answering (under ``--workers`` the
server asks its peers for both answers, so a read gets a few seconds)."""
QUANTILE = 0.95
PLAIN_WIDTH = 1000
"""Columns for output that is not a terminal (``--once`` into a pipe or file): rows are never wrapped."""
FIXED_LINES = 7
"""Lines of a live frame that are not execution rows (header, table headings and rules, the "more" line)."""
COLUMNS = ("WORKFLOW", "ELAPSED", "PLACE", "PLUGIN", "TRACE ID", "CHANNEL", "SESSION")
MIN_WIDTHS = {"WORKFLOW": 10, "PLACE": 12, "TRACE ID": 10}
"""Columns a narrow terminal must not squeeze below these widths."""
DURATION_BUCKET = c.WORKFLOW_DURATION.prometheus_name + "_bucket"
EXECUTIONS_TOTAL = c.WORKFLOW_EXECUTIONS.prometheus_name
ACTIVE = c.WORKFLOW_ACTIVE.prometheus_name


class TopError(NexusOtelError):
    """The app at the URL could not be read: not reachable, or an answer that is not a 200 of the expected shape."""


@dataclass(frozen=True, slots=True)
class InFlight:
    """One execution running now, as ``GET /executions`` lists it."""

    workflow: str
    workflow_id: str
    channel: str
    session_id: str | None
    elapsed: float
    trace_id: str | None
    place: str | None
    plugin: str | None
    worker: str | None = None
    """The process id of the worker running it (listed by a server with ``--workers``, else None)."""

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> InFlight:
        def text(key: str) -> str | None:
            value = item.get(key)
            return None if value is None else str(value)

        return cls(workflow=str(item["workflow"]), workflow_id=str(item.get("workflow_id", "")),
                   channel=str(item.get("channel", "")), session_id=text("session_id"),
                   elapsed=float(item["elapsed_seconds"]), trace_id=text("trace_id"),
                   place=text("place"), plugin=text("plugin"), worker=text("worker"))


@dataclass(frozen=True, slots=True)
class MetricsRead:
    """What one read of ``/metrics`` says per workflow, summed over the other labels (channel, status, ...)."""

    at: float
    """``time.monotonic()`` when it was read: rates divide by the time between two reads."""
    finished: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    """Cumulative duration histogram per workflow: upper bound (``inf`` for ``+Inf``) to count."""
    active: dict[str, float] = field(default_factory=dict)


def parse_metrics(text: str, at: float) -> MetricsRead:
    """The workflow series of a Prometheus text exposition (a served app's, or the sum of its workers')."""
    read = MetricsRead(at=at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            workflow = sample.labels.get("workflow")
            if workflow is None:
                continue
            if sample.name == EXECUTIONS_TOTAL:
                read.finished[workflow] = read.finished.get(workflow, 0.0) + sample.value
            elif sample.name == ACTIVE:
                read.active[workflow] = read.active.get(workflow, 0.0) + sample.value
            elif sample.name == DURATION_BUCKET and "le" in sample.labels:
                bound = float(sample.labels["le"])
                series = read.buckets.setdefault(workflow, {})
                series[bound] = series.get(bound, 0.0) + sample.value
    return read


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated as Prometheus's ``histogram_quantile`` does.

    Linear within the bucket the rank falls in (the first bucket starts at 0); a rank in the
    ``+Inf`` bucket gives the highest finite bound. None when the histogram counted nothing.
    """
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for i, bound in enumerate(bounds):
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return bounds[i - 1] if i else None
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None  # pragma: no cover  (the +Inf bucket holds the total)


def _difference(now: Mapping[Any, float], before: Mapping[Any, float]) -> dict[Any, float]:
    """``now - before`` key by key; ``now`` itself if any count went down (the app restarted in between)."""
    delta = {key: value - before.get(key, 0.0) for key, value in now.items()}
    return dict(now) if any(value < 0 for value in delta.values()) else delta


@dataclass(frozen=True, slots=True)
class WorkflowLine:
    """A workflow's line above the table."""

    workflow: str
    in_flight: int
    rate: float | None
    """Executions finished per second between the two reads; None on a first read."""
    p95: float | None
    """Seconds; over the window between the two reads (since the app started on a first read), None if none ended."""


def workflow_lines(current: MetricsRead, previous: MetricsRead | None,
                   running: Iterable[InFlight] = ()) -> list[WorkflowLine]:
    """A line per workflow the metrics (or the executions running now) name, by name."""
    names = set(current.finished) | set(current.active) | set(current.buckets) | {r.workflow for r in running}
    window = current.at - previous.at if previous is not None else 0.0
    lines = []
    for name in sorted(names):
        rate = None
        buckets = current.buckets.get(name, {})
        if previous is not None:
            finished = current.finished.get(name, 0.0)
            if finished >= previous.finished.get(name, 0.0):  # else the app restarted: all it counted is new
                finished -= previous.finished.get(name, 0.0)
            rate = finished / window if window > 0 else None
            buckets = _difference(buckets, previous.buckets.get(name, {}))
        lines.append(WorkflowLine(name, int(round(current.active.get(name, 0.0))), rate,
                                  histogram_quantile(QUANTILE, buckets)))
    return lines


@dataclass(frozen=True, slots=True)
class Frame:
    """One refresh: the executions in flight (longest first) and the workflow lines."""

    executions: list[InFlight]
    workflows: list[WorkflowLine]
    window: float | None
    """Seconds between the two reads of /metrics the rates come from; None on a first read."""
    error: str | None = None
    """Why this refresh has no data (the app stopped answering); the view keeps trying."""
    unanswered: tuple[str, ...] = ()
    """Workers of a ``--workers`` server that did not answer in time: their executions are missing."""


@dataclass(frozen=True, slots=True)
class Listing:
    """What ``GET /executions`` answered: the executions (longest first) and the workers that did not answer."""

    executions: list[InFlight]
    unanswered: tuple[str, ...] = ()


class AppReader:
    """Reads ``URL/executions`` and ``URL/metrics`` of a served app, with the workflows' credentials if given."""

    def __init__(self, url: str, *, token: str | None = None, api_key: str | None = None,
                 timeout: httpx.Timeout = TIMEOUT) -> None:
        self.url = url if "://" in url else f"http://{url}"
        try:
            httpx.URL(self.url)
        except httpx.InvalidURL as exc:
            raise TopError(f"{mask_url(url)} is not a URL: {exc}") from None
        self.shown_url = mask_url(self.url)
        headers = {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if api_key:
            headers["x-api-key"] = api_key
        self._client = httpx.Client(timeout=timeout, headers=headers, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def where(self, path: str) -> str:
        """The URL of ``path`` under the app's (which may have a path prefix, behind a proxy), masked."""
        return mask_url(str(self._endpoint(path)))

    def _endpoint(self, path: str) -> httpx.URL:
        base = httpx.URL(self.url)
        return base.copy_with(path=base.path.rstrip("/") + path)

    def _get(self, path: str) -> httpx.Response:
        where = self.where(path)
        try:
            response = self._client.get(self._endpoint(path))
        except httpx.TimeoutException:
            raise TopError(f"cannot read {where}: no answer within {TIMEOUT.read:g} s") from None
        except httpx.HTTPError as exc:
            raise TopError(f"cannot reach {where}: {exc or type(exc).__name__}") from None
        if response.status_code != 200:
            hint = ""
            if response.status_code in (401, 403):
                hint = " (the app's auth is on: give --token or --api-key, or $NEXUS_OTEL_TOKEN)"
            elif response.status_code == 404 and path == "/executions":
                hint = " (is it a nexus-otel app, served by a release that has /executions?)"
            raise TopError(f"{where} answered {response.status_code} {response.reason_phrase}{hint}")
        return response

    def executions(self) -> Listing:
        """The executions in flight, longest first."""
        response = self._get("/executions")
        try:
            body = response.json()
            running = [InFlight.from_json(item) for item in body["executions"]]
            unanswered = tuple(str(pid) for pid in body.get("unanswered") or ())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TopError(f"{self.where('/executions')} did not answer with the executions JSON "
                           f"({type(exc).__name__}: {exc})") from None
        return Listing(sorted(running, key=lambda r: r.elapsed, reverse=True), unanswered)

    def metrics(self) -> MetricsRead:
        """The workflow series of ``/metrics`` now."""
        text = self._get("/metrics").text
        at = time.monotonic()
        try:
            return parse_metrics(text, at)
        except ValueError as exc:
            raise TopError(f"{self.where('/metrics')} is not Prometheus text: {exc}") from None


class Refresher:
    """Frames from an :class:`AppReader`, each one's rates over the time since the one before."""

    def __init__(self, reader: AppReader) -> None:
        self.reader = reader
        self._previous: MetricsRead | None = None

    def prime(self) -> None:
        """A first read of the counters, so the next frame has rates."""
        self._previous = self.reader.metrics()

    def frame(self) -> Frame:
        """Both endpoints read now; :class:`TopError` if the app cannot be read."""
        listing = self.reader.executions()
        current = self.reader.metrics()
        previous, self._previous = self._previous, current
        window = current.at - previous.at if previous is not None else None
        return Frame(listing.executions, workflow_lines(current, previous, listing.executions), window,
                     unanswered=listing.unanswered)


def format_seconds(seconds: float) -> str:
    """``850 ms``, ``12.3 s``, ``4m05s``, ``2h07m``: short, and precise where it matters."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _cell(value: object) -> Text:
    """A value on one line, cut with an ellipsis when its column is narrowed to fit the terminal."""
    return Text("-" if value is None or value == "" else inert_line(value), no_wrap=True, overflow="ellipsis")


def render(frame: Frame, *, url: str, slow: float, max_rows: int | None = None,
           keys_hint: bool = False) -> RenderableType:
    """The frame as rich renderables: a header line, the workflow lines, then a row per execution.

    Executions running longer than ``slow`` seconds are marked ``!`` (and bold red in colour).
    With ``max_rows`` only the longest running are shown, and a line says how many more there are.
    """
    quit_hint = "   q quits" if keys_hint else ""
    header = Text.from_markup(f"[bold]nexus-otel top[/bold]  {inert_markup(url)}{quit_hint}")
    if frame.error is not None:
        return Group(header, Text(inert_line(frame.error), style="bold red"), Text("trying again..."))
    window = (f"rate and p95 over the last {frame.window:.3f} s" if frame.window is not None
              else "p95 since the app started, rates from the next refresh")
    summary = Text(f"{len(frame.executions)} in flight   {window}   ! = running longer than {slow:g} s")

    workflows = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    workflows.add_column("WORKFLOW")
    workflows.add_column("IN FLIGHT", justify="right")
    workflows.add_column("RATE", justify="right")
    workflows.add_column("P95", justify="right")
    for line in frame.workflows:
        workflows.add_row(_cell(line.workflow), str(line.in_flight),
                          "-" if line.rate is None else f"{line.rate:.2f}/s",
                          "-" if line.p95 is None else format_seconds(line.p95))

    shown = frame.executions if max_rows is None else frame.executions[:max(max_rows, 1)]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("", width=1)
    workers = any(run.worker is not None for run in shown)  # a server with --workers: which process runs it
    for name in COLUMNS + (("WORKER",) if workers else ()):
        # In a narrow terminal the widest columns give way first, their cells cut short on one line (a
        # trace id's first digits still find it: `nexus-otel traces PREFIX`); the elapsed time is kept whole.
        table.add_column(name, justify="right" if name == "ELAPSED" else "left", no_wrap=name == "ELAPSED",
                         min_width=MIN_WIDTHS.get(name), overflow="ellipsis")
    for run in shown:
        is_slow = run.elapsed > slow
        cells: list[RenderableType] = [_cell(run.workflow), format_seconds(run.elapsed), _cell(run.place),
                                       _cell(run.plugin), _cell(run.trace_id), _cell(run.channel),
                                       _cell(run.session_id), *([_cell(run.worker)] if workers else [])]
        table.add_row("!" if is_slow else "", *cells,
                      style="bold red" if is_slow else None)
    parts: list[RenderableType] = [header, summary]
    if frame.unanswered:
        parts.append(Text(f"workers {inert_line(', '.join(frame.unanswered))} did not answer in time: "
                          f"their executions are not listed", style="bold yellow"))
    parts += [workflows, Text(""), table]
    if len(shown) < len(frame.executions):
        parts.append(Text(f"... and {len(frame.executions) - len(shown)} more"))
    if not frame.executions:
        parts.append(Text("nothing running"))
    return Group(*parts)


class Keys:
    """Keys pressed in the terminal ``stream`` is, read without Enter and unechoed (cbreak mode).

    The terminal's mode is put back on exit, however the view ends (``q``, Ctrl-C, an error, or
    SIGTERM / SIGHUP, which then end the process with status 128 + the signal's number, as a shell
    reports a process killed by it). Ctrl-C still interrupts: cbreak mode keeps the terminal's
    signal keys. When ``stream`` is not a terminal no key is read, and waiting is sleeping.
    """

    ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stream: IO[Any]) -> None:
        self._fd = stream.fileno() if stream.isatty() else None
        self._saved: list[Any] | None = None
        self._handlers: dict[int, Any] = {}

    def __enter__(self) -> Keys:
        if threading.current_thread() is threading.main_thread():  # only there can Python handle signals
            for signum in self.ENDING_SIGNALS:
                self._handlers[signum] = signal.signal(signum, self._end)
        if self._fd is not None:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd, termios.TCSANOW)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)

    @staticmethod
    def _end(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the live view and __exit__: the terminal restored

    def quit_within(self, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as ``q`` is pressed."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._fd is None:
                time.sleep(left)
                return False
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                pressed = os.read(self._fd, 64)
                if not pressed or b"q" in pressed.lower():  # end of input ends the view too
                    return True
        return False


def run_once(url: str, *, slow: float = DEFAULT_SLOW, interval: float = DEFAULT_INTERVAL,
             token: str | None = None, api_key: str | None = None, console: Console | None = None) -> None:
    """Print one table: /metrics read twice ``interval`` apart (for the rates), /executions at the second read.

    Plain text (no colours, rows never wrapped) when the output is not a terminal. :class:`TopError` when
    the app cannot be read.
    """
    console = console or Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PLAIN_WIDTH, no_color=True, file=console.file)
    reader = AppReader(url, token=token, api_key=api_key)
    try:
        refresher = Refresher(reader)
        refresher.prime()
        time.sleep(interval)
        console.print(render(refresher.frame(), url=reader.shown_url, slow=slow))
    finally:
        reader.close()


def run_live(url: str, *, slow: float = DEFAULT_SLOW, interval: float = DEFAULT_INTERVAL,
             token: str | None = None, api_key: str | None = None, keys_from: IO[Any] | None = None,
             console: Console | None = None) -> None:
    """The live view: a frame every ``interval`` seconds until ``q`` (read from ``keys_from``) or Ctrl-C.

    The first read must succeed (:class:`TopError` otherwise); later failures are shown in the frame
    while the view keeps trying. Output that is not a terminal gets a plain table per refresh instead.
    """
    import sys

    console = console or Console(highlight=False)
    reader = AppReader(url, token=token, api_key=api_key)
    refresher = Refresher(reader)

    def next_frame() -> Frame:
        try:
            return refresher.frame()
        except TopError as exc:
            return Frame([], [], None, error=str(exc))

    try:
        first = refresher.frame()
        with Keys(keys_from or sys.stdin) as keys:
            if not console.is_terminal:
                plain = Console(highlight=False, width=PLAIN_WIDTH, no_color=True, file=console.file)
                frame = first
                while True:
                    plain.print(render(frame, url=reader.shown_url, slow=slow))
                    plain.print()
                    if keys.quit_within(interval):
                        return
                    frame = next_frame()

            def draw(frame: Frame) -> RenderableType:
                return render(frame, url=reader.shown_url, slow=slow, keys_hint=True,
                              max_rows=console.size.height - FIXED_LINES - len(frame.workflows))

            with Live(draw(first), console=console, auto_refresh=False, screen=True) as live:
                while not keys.quit_within(interval):
                    live.update(draw(next_frame()), refresh=True)
    finally:
        reader.close()
