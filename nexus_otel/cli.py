"""The ``nexus-otel`` command: serve an app, run a workflow, list plugins, read traces, run the demo."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from .caller import Caller
from .channels import DEFAULT_THREADS
from .errors import (
    AccessError,
    ConfigurationError,
    NexusOtelError,
    RateLimitExceeded,
    RecordsUnavailableError,
    UnknownWorkflowError,
)
from .telemetry.config import DEFAULT_DATA_DIR, TelemetryConfig
from .terminal import InertFormatter, inert, inert_json, inert_line

RUN_STOP_TIMEOUT = 1.5
"""Seconds ``nexus-otel run`` gives the app to stop once its workflow ended."""
APP_HELP = "MODULE:APP, e.g. myproject.app:app (an app, or a function returning one)"


def _load(target: str, plugins_dir: str | None) -> Any:
    from .loading import load_app

    try:
        app = load_app(target)
        if plugins_dir:
            found = app.load_plugins(plugins_dir)
            for error in found.errors:
                click.echo(f"warning: {inert(error)}", err=True)
        return app
    except ConfigurationError as exc:
        raise SettingError(exc) from exc
    except NexusOtelError as exc:
        raise click.UsageError(str(exc)) from exc


class SettingError(click.ClickException):
    """A bad setting (an environment variable, a plugin setting): one line, exit 2, no usage banner,
    which would point at the command line instead."""

    exit_code = 2

    def __init__(self, error: ConfigurationError) -> None:
        super().__init__(str(error))


def _data_dir(value: str | None) -> str:
    """``--data-dir``, else what the environment's one parsed configuration says (a bad variable: exit 2)."""
    if value:
        return value
    try:
        return TelemetryConfig.from_env().data_dir
    except ConfigurationError as exc:
        raise SettingError(exc) from exc


class InertGroup(click.Group):
    """A command group whose errors are printed inert (:mod:`.terminal`): their messages quote data."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = inert(exc.message)  # type: ignore[misc]  # Final in click's hints; set once here
            raise


@click.group(cls=InertGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="nexus-otel")
def main(log_level: str) -> None:
    """nexus-otel: workflows whose every execution and plugin hook is an OpenTelemetry span."""
    handler = logging.StreamHandler()
    handler.setFormatter(InertFormatter("%(levelname)s %(name)s: %(message)s"))  # log lines quote data too
    logging.basicConfig(level=log_level.upper(), handlers=[handler])


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--plugins-dir", type=click.Path(file_okay=False), help="Folder of plugin files to load.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 1024),
              help="Worker processes on the one port, each importing MODULE:APP; /metrics sums them all. "
                   "SIGHUP replaces them one by one, SIGTERM drains and stops them.")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True, type=click.IntRange(1, 4096),
              help="Threads per worker running sync workflows.")
@click.option("--forwarded-allow-ips", envvar="NEXUS_OTEL_FORWARDED_ALLOW_IPS", default=None, metavar="IPS",
              help="Proxies (IP addresses or networks, comma-separated, or *) whose X-Forwarded-For names the "
                   "client; default none, not even 127.0.0.1: the client is the connection's address "
                   "(or $NEXUS_OTEL_FORWARDED_ALLOW_IPS; uvicorn's FORWARDED_ALLOW_IPS is not read).")
@click.option("--http", default="auto", show_default=True, type=click.Choice(["auto", "httptools", "h11"]),
              help="HTTP/1.1 parser: httptools (C, fast) or h11 (pure Python); auto is httptools when installed.")
@click.pass_context
def serve(ctx: click.Context, target: str, host: str, port: int, plugins_dir: str | None, workers: int,
          threads: int, forwarded_allow_ips: str | None, http: str) -> None:
    """Serve MODULE:APP over HTTP (POST /workflows/NAME, /metrics, /healthz)."""
    from .http_protocols import protocol_class
    from .serving import bind, trusted_proxies
    from .serving import serve as run_server

    try:
        trusted_proxies(forwarded_allow_ips)
        protocol_class(http)  # httptools asked for where it cannot be imported
    except ConfigurationError as exc:
        raise SettingError(exc) from exc

    try:
        sock = bind(host, port)  # first: a port in use is one line, before the app says anything
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    log_level = str(ctx.find_root().params.get("log_level", "WARNING")).lower()
    if workers > 1:
        try:
            TelemetryConfig.from_env()
        except ConfigurationError as exc:
            raise SettingError(exc) from exc
        click.echo(f"serving {target} on http://{host}:{port} with {workers} workers (supervisor pid "
                   f"{os.getpid()}: SIGHUP replaces the workers, SIGTERM stops them)", err=True)
        status = run_server(target, host=host, port=port, sock=sock, workers=workers, threads=threads,
                            plugins_dir=plugins_dir, log_level=log_level, forwarded_allow_ips=forwarded_allow_ips,
                            http=http)
        if status:
            raise click.ClickException("a worker could not start the app (its error is above)")
        return
    app = _load(target, plugins_dir)
    names = inert_line(", ".join(app.workflows.names()))
    click.echo(f"serving {app.name!r} on http://{host}:{port}  (workflows: {names})", err=True)
    run_server(app, host=host, port=port, sock=sock, threads=threads, log_level=log_level,
               forwarded_allow_ips=forwarded_allow_ips, http=http)


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.argument("workflow")
@click.option("--input", "input_json", default="{}", show_default=True, help="Inputs as a JSON object.")
@click.option("--session-id", default=None)
@click.option("--token", envvar="NEXUS_OTEL_TOKEN", default=None, help="Bearer token (or $NEXUS_OTEL_TOKEN).")
@click.option("--api-key", envvar="NEXUS_OTEL_API_KEY", default=None, help="API key (or $NEXUS_OTEL_API_KEY).")
@click.option("--plugins-dir", type=click.Path(file_okay=False))
def run(target: str, workflow: str, input_json: str, session_id: str | None, token: str | None,
        api_key: str | None, plugins_dir: str | None) -> None:
    """Run one workflow (channel "cli"); print its result and trace id."""
    try:
        inputs = json.loads(input_json)
    except ValueError as exc:
        raise click.UsageError(f"--input is not valid JSON: {exc}") from exc
    if not isinstance(inputs, dict):
        raise click.UsageError(f"--input must be a JSON object, got {type(inputs).__name__}")
    app = _load(target, plugins_dir)
    seen: dict[str, Any] = {}

    def remember(event: Any) -> None:
        seen["trace_id"] = event.trace_id

    app.on_workflow_started(remember)
    failure: BaseException | None = None
    app.start()
    try:
        result = app.execute_workflow(workflow, inputs, session_id=session_id, channel="cli",
                                      caller=Caller(bearer_token=token, api_key=api_key))
    except UnknownWorkflowError as exc:
        raise click.UsageError(str(exc)) from exc
    except (AccessError, RateLimitExceeded) as exc:
        failure = exc
    except Exception as exc:  # the workflow's own failure
        failure = exc
    finally:
        # A command must not hang on a silent endpoint: records are already on disk for the next start.
        app.stop(timeout=RUN_STOP_TIMEOUT)
    trace = seen.get("trace_id") or "-"
    if isinstance(failure, AccessError):
        click.echo(f"error: access denied ({failure.reason}): {inert(failure)}", err=True)
        click.echo(f"trace_id: {trace}", err=True)
        sys.exit(1)
    if isinstance(failure, RateLimitExceeded):
        click.echo(f"error: {inert(failure)}", err=True)
        click.echo(f"trace_id: {trace}", err=True)
        sys.exit(1)
    if failure is not None:
        click.echo(f"error: workflow {workflow!r} failed: {type(failure).__name__}: {inert(failure)}", err=True)
        click.echo(f"trace_id: {trace}", err=True)
        sys.exit(1)
    click.echo(inert_json(json.dumps(result, indent=2, default=str, ensure_ascii=False)))
    click.echo(f"trace_id: {trace}", err=True)


@main.command()
@click.argument("target", metavar="MODULE:APP")
@click.option("--plugins-dir", type=click.Path(file_okay=False))
def plugins(target: str, plugins_dir: str | None) -> None:
    """List the plugins of MODULE:APP with their versions."""
    app = _load(target, plugins_dir)
    rows = [(inert_line(name), inert_line(getattr(p, "version", "?")), inert_line(getattr(p, "description", "") or ""))
            for name, p in app.plugins.plugins.items()]
    if not rows:
        click.echo("no plugins")
    width = max((len(r[0]) for r in rows), default=4) + 2
    for name, version, description in rows:
        click.echo(f"{name.ljust(width)}{str(version).ljust(10)}{description}")
    app.stop()


@main.command()
@click.argument("trace_id", required=False)
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(1))
@click.option("--all", "include_all", is_flag=True, help="Also list traces without a workflow (start, stop, scrapes).")
@click.option("--attributes", "-a", "show_attributes", is_flag=True,
              help="With TRACE_ID: show each span's and log record's attributes, and span events (already redacted).")
@click.option("--data-dir", default=None, help=f"Local store (default $NEXUS_OTEL_DATA_DIR or {DEFAULT_DATA_DIR}).")
def traces(trace_id: str | None, limit: int, include_all: bool, show_attributes: bool, data_dir: str | None) -> None:
    """List recent traces from the local store, or show TRACE_ID (or a prefix) as a tree with its log lines."""
    from .traceview import find_trace_records, recent_traces, render_tree

    directory = _data_dir(data_dir)
    if trace_id:
        try:
            found = find_trace_records(directory, trace_id)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        if found is None:
            raise click.ClickException(
                f"no trace {trace_id!r} in {directory} (a trace is written within about a second of its "
                f"request ending; run the command again if it just ended)")
        tid, spans, logs = found.trace_id, found.spans, found.logs
        service = (spans[0].service if spans else logs[0].service) or "-"
        kept = f"{len(spans)} spans" if spans else "no spans kept: the trace was not sampled"
        click.echo(f"trace {inert_line(tid)}  ({kept}, {len(logs)} log records, service {inert_line(service)})")
        for line in render_tree(spans, show_attributes=show_attributes, header=True, logs=logs):
            click.echo(line)
        return
    summaries = recent_traces(directory, limit, include_all=include_all)
    if not summaries:
        click.echo(f"no traces in {inert_line(directory)} yet: run a workflow (nexus-otel run / serve / demo)")
        return
    click.echo(f"{'TRACE ID':<34}{'WORKFLOW':<18}{'STATUS':<8}{'DURATION':>12}  {'SPANS':>5}  STARTED")
    for s in summaries:
        workflow = inert_line(s.workflow)[:17]
        click.echo(f"{inert_line(s.trace_id):<34}{workflow:<18}{s.status:<8}{s.duration_ms:>9.2f} ms  "
                   f"{s.span_count:>5}  {s.started}")


LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL")
FOLLOW_POLL_SECONDS = 0.5
"""How often ``nexus-otel logs --follow`` looks for new records."""


@main.command()
@click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1),
              help="Show the last N matching records.")
@click.option("--workflow", "-w", default=None, metavar="NAME",
              help="Records of workflow NAME's executions: its request log records and every record "
                   "written in the same trace (the workflow's own logging lines).")
@click.option("--level", "-l", default=None, type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="Minimum severity.")
@click.option("--trace", "-t", "trace_id", default=None, metavar="ID", help="Records of one trace (id or prefix).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing records as they are written (Ctrl-C stops).")
@click.option("--attributes", "-a", "show_attributes", is_flag=True,
              help="Show each record's attributes (already redacted).")
@click.option("--data-dir", default=None, help=f"Local store (default $NEXUS_OTEL_DATA_DIR or {DEFAULT_DATA_DIR}).")
def logs(limit: int, workflow: str | None, level: str | None, trace_id: str | None, follow: bool,
         show_attributes: bool, data_dir: str | None) -> None:
    """List recent log records from the local store, newest last."""
    import time

    from .exporters.local_logs import LogFollower
    from .traceview import LogFilter, format_log_line

    directory = _data_dir(data_dir)
    selection = LogFilter(workflow=workflow, level=level, trace_prefix=trace_id)
    follower = LogFollower(directory)
    try:
        stored = list(follower.history())
        shown = selection.latest(stored, limit)
        for record in shown:
            for line in format_log_line(record, show_attributes=show_attributes):
                click.echo(line)
        if not stored and not follow:
            click.echo(f"no log records in {inert_line(directory)} yet: run a workflow (nexus-otel run / serve / "
                       f"demo) with logs going to the local store (OTEL_LOGS_EXPORTER=local, the default without "
                       f"an OTLP endpoint)")
        elif not shown and not follow:
            click.echo(f"none of the {len(stored)} log records in {inert_line(directory)} match")
        if not follow:
            return
        click.echo(f"following log records in {inert_line(directory)} (Ctrl-C stops)", err=True)
        while True:
            time.sleep(FOLLOW_POLL_SECONDS)
            for record in selection.follow(follower.new()):
                for line in format_log_line(record, show_attributes=show_attributes):
                    click.echo(line)
    except KeyboardInterrupt:  # the way --follow ends
        return
    finally:
        follower.close()


@main.group()
def webhooks() -> None:
    """Inspect the webhook outbox: dead letters, and replaying them."""


OUTBOX_HELP = ("Outbox file, or the shared outbox's postgresql:// URL (default $NEXUS_OTEL_OUTBOX_URL if set,"
               " else DATA_DIR/outbox.sqlite).")


def _outbox(path: str | None, data_dir: str | None) -> tuple[Any, Any]:
    """The webhook view of the outbox (None if no file exists yet) and where it is: ``--outbox`` (a file or a
    ``postgresql://`` URL), else ``NEXUS_OTEL_OUTBOX_URL``, else the data directory's file.

    The shared outbox's database is reached first, so one that cannot be is one line naming it (never its
    password), not a traceback.
    """
    from importlib.util import find_spec
    from pathlib import Path

    from .outbox import WEBHOOK_SCOPE, Outbox, PostgresOutbox, default_outbox_path
    from .outbox.postgres import is_url
    from .plugins.webhook import LEGACY_OUTBOX

    url = path if is_url(path) else None
    if path is None:
        try:
            url = TelemetryConfig.from_env().outbox_url
        except ConfigurationError as exc:
            raise SettingError(exc) from exc
    if url is not None:
        with _shared_outbox_errors(url):
            if find_spec("psycopg") is not None:  # (without it, the outbox says what to install)
                import psycopg

                psycopg.connect(url, connect_timeout=5).close()  # before the outbox, which would log its own error
            return PostgresOutbox(url).view(WEBHOOK_SCOPE), url
    file = Path(path) if path else default_outbox_path(_data_dir(data_dir), LEGACY_OUTBOX)
    if not file.exists():  # nothing was ever queued there: an empty outbox, not an error
        return None, file
    try:
        return Outbox(file).view(WEBHOOK_SCOPE), file
    except NexusOtelError as exc:  # its folder is read-only, say: one line naming it, no traceback
        raise click.ClickException(str(exc)) from exc


@contextlib.contextmanager
def _shared_outbox_errors(url: str, doing: str = "reach") -> Iterator[None]:
    """A failure to reach or use the shared outbox at ``url`` as one line naming it without its password (what
    could not be done: ``doing``), not a traceback."""
    from .outbox.postgres import is_url, masked_reason, safe_url

    if not is_url(url):  # a local outbox: its errors are its own
        yield
        return
    try:
        yield
    except ConfigurationError as exc:  # psycopg is not installed
        raise SettingError(exc) from exc
    except Exception as exc:
        import psycopg  # installed: the outbox needs it

        if not isinstance(exc, (psycopg.Error, RecordsUnavailableError)):
            raise
        reason = masked_reason(url, exc)
        raise click.ClickException(f"cannot {doing} the shared outbox at {safe_url(url)}: {reason}") from exc


@webhooks.command("status")
@click.option("--outbox", default=None, help=OUTBOX_HELP)
@click.option("--data-dir", default=None)
def webhooks_status(outbox: str | None, data_dir: str | None) -> None:
    """How many payloads wait (and the oldest one's age), and how many were given up on; then each
    destination's state.

    A running app's payloads in hand (put and not yet settled) are its own to count: its webhook
    stats and queue gauge include them; they are counted here once it stops or ends.
    A line per destination of each process sending from this outbox: concurrency limit/ceiling,
    in flight, hold and breaker, as that process last published them (about once a second). On the
    shared outbox, a sender (of any pod) not heard from for 10 s is shown as possibly ended.
    """
    from .exporters.destination_snapshots_shared import status_lines_for

    box, where = _outbox(outbox, data_dir)
    with _shared_outbox_errors(str(where), "read"):
        counts = box.counts() if box is not None else {"pending": 0, "dead": 0}
        age = box.oldest_age() if box is not None and counts["pending"] else None
        lines = status_lines_for(where)
    oldest = f"  oldest {age:.1f} s" if age is not None else ""
    note = "" if box is not None else f"  (no outbox at {where} yet)"
    click.echo(inert_line(f"pending {counts['pending']}  dead {counts['dead']}{oldest}{note}"))  # the user's path
    for line in lines:
        click.echo(inert_line(line))


@webhooks.command("dead-letters")
@click.option("--outbox", default=None, help=OUTBOX_HELP)
@click.option("--data-dir", default=None)
def webhooks_dead(outbox: str | None, data_dir: str | None) -> None:
    """List payloads given up on, with their last error (URLs with credentials and secret values masked)."""
    from .exporters.webhook import body_of
    from .redaction import Redactor
    from .urls import mask_url

    box, where = _outbox(outbox, data_dir)
    with _shared_outbox_errors(str(where), "read"):
        letters = box.dead_letters() if box is not None else []
    if not letters:
        click.echo("no dead letters")
    redactor = Redactor()
    for m in letters:
        workflow = body_of(m.payload).get("workflow", "?")
        destination = mask_url(m.destination, redactor)
        error = redactor.scrub_credentials_in(m.last_error or "")
        click.echo(inert_line(f"{m.handle!s:<6} {m.message_id}  {workflow!s:<16} attempts={m.attempts}  "
                              f"{destination}  last error: {error}"))


@webhooks.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
@click.option("--outbox", default=None, help=OUTBOX_HELP)
@click.option("--data-dir", default=None)
def webhooks_replay(ids: tuple[int, ...], replay_all: bool, outbox: str | None, data_dir: str | None) -> None:
    """Queue dead letters again (by id, or --all); a running app delivers them."""
    if not ids and not replay_all:
        raise click.UsageError("give dead-letter ids, or --all")
    box, where = _outbox(outbox, data_dir)
    with _shared_outbox_errors(str(where), "replay dead letters in"):
        count = box.replay(None if replay_all else list(ids)) if box is not None else 0
    click.echo(f"queued {count} for delivery")


@main.command()
@click.option("--requests", "-n", default=300, show_default=True, type=click.IntRange(1, 100_000),
              help="Workflow requests to send (and one more, to a workflow that does not exist: a 404).")
@click.option("--plugins-dir", default="plugins", show_default=True, help="Example plugins to load, if present.")
@click.option("--seed", default=7, show_default=True, help="Random seed for the traffic mix.")
def demo(requests: int, plugins_dir: str, seed: int) -> None:
    """Serve the example app, drive traffic through HTTP, and show what telemetry recorded.

    Exits 1 when the telemetry was not delivered (to the OTLP endpoint or the local store) or a check of what it
    promises failed; the output names the endpoint or the check.
    """
    from .demo.driver import run_demo

    try:
        ok = run_demo(requests=requests, plugins_dir=plugins_dir, seed=seed)
    except ConfigurationError as exc:
        raise SettingError(exc) from exc
    if not ok:
        sys.exit(1)


@main.command()
@click.argument("url")
@click.option("--once", is_flag=True,
              help="Print one table and exit, for scripts (plain text when the output is not a terminal).")
@click.option("--slow", default=10.0, show_default=True, type=click.FloatRange(min=0), metavar="SECONDS",
              help="Mark executions running longer than this.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05), metavar="SECONDS",
              help="Seconds between refreshes; with --once, between the two reads of /metrics its rates come from.")
@click.option("--token", envvar="NEXUS_OTEL_TOKEN", default=None,
              help="Bearer token when the app's auth is on (or $NEXUS_OTEL_TOKEN).")
@click.option("--api-key", envvar="NEXUS_OTEL_API_KEY", default=None,
              help="API key when the app's auth is on (or $NEXUS_OTEL_API_KEY).")
def top(url: str, once: bool, slow: float, interval: float, token: str | None, api_key: str | None) -> None:
    """What the app served at URL is running now, longest first, refreshed until q or Ctrl-C.

    Reads URL/executions (workflow, elapsed, the hook or node it is in, trace id) and URL/metrics
    (a line per workflow: in flight, finished per second, p95). Exits 1 when URL cannot be read.
    """
    from .top import TopError, run_live, run_once

    try:
        if once:
            run_once(url, slow=slow, interval=interval, token=token, api_key=api_key)
        else:
            run_live(url, slow=slow, interval=interval, token=token, api_key=api_key)
    except TopError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:  # one way the live view ends
        return


if __name__ == "__main__":  # pragma: no cover
    main()
