"""What the overhead cases share: the telemetry both sides of a case are built on, the hosts, and the servers.

* ``Providers``: fresh SDK providers whose exporters discard (counting, keeping spans on request for a check).
* ``BenchPlugin``: the three trivial hooks every side of every case registers; ``trivial_workflow``.
* ``RawSdkReference``: the host's spans and metrics made with the raw OpenTelemetry SDK and no host.
* ``core_host``: the host with core telemetry on fresh providers; ``core_baseline``: it, as a case's baseline.
* ``WebhookReceiver``: a webhook destination in its own process (this module run with ``--webhook-receiver``),
  answering 200 at once and checking every signature; ``JwksIdp``: an OIDC key server on a thread of this one.
* ``span_shape`` and ``metric_total``: what the cases' checks compare and count.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness import Side
from loopback_process import LoopbackProcess
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import nexus_otel
from nexus_otel import Nexus, NexusPlugin
from nexus_otel.caller import Caller
from nexus_otel.telemetry import contract as c

perf_counter = time.perf_counter

AUXILIARY_BUDGET = 10.0  # wall seconds for each of (c-floor), (f), (d), (d-jwt), (d-key) and (e) in a full run
WORKFLOW = "bench"
CHANNEL = "python"
PLUGIN = "bench-plugin"
PLUGIN_VERSION = "1.0.0"
INPUTS: dict[str, Any] = {"name": "ada", "count": 3, "tags": ["x", "y"]}
HOST = "127.0.0.1"


# --------------------------------------------------------------------------------------
# Telemetry: identical configuration for both sides of a case


# --------------------------------------------------------------------------------------


class DiscardingExporter(SpanExporter):
    """Drops spans (counting them); keeps them only while ``keep`` is set (for checks)."""

    def __init__(self) -> None:
        self.count = 0
        self.keep = False
        self.kept: list[Any] = []

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        self.count += len(spans)
        if self.keep:
            self.kept.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class DiscardingLogExporter(LogRecordExporter):
    """Drops log records, counting them."""

    def __init__(self) -> None:
        self.count = 0

    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        self.count += len(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass
class Providers:
    """A fresh TracerProvider (SimpleSpanProcessor -> discard), MeterProvider (in-memory reader) and
    LoggerProvider (a batch processor -> discard: log records are exported, as with OTEL_LOGS_EXPORTER set)."""

    exporter: DiscardingExporter
    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider
    log_exporter: DiscardingLogExporter
    logger_provider: LoggerProvider

    @classmethod
    def fresh(cls) -> Providers:
        resource = Resource.create({c.SERVICE_NAME: "bench"})
        exporter = DiscardingExporter()
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        log_exporter = DiscardingLogExporter()
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
        return cls(exporter, tracer_provider, reader, meter_provider, log_exporter, logger_provider)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


# The hooks: trivial, shared by every side of every case.


def hook_started(event: Any) -> None:
    return None


def hook_completed_1(event: Any) -> None:
    return None


def hook_completed_2(event: Any) -> None:
    return None


class BenchPlugin(NexusPlugin):
    """Registers the three hooks (started, completed, completed) in its setup."""

    name = PLUGIN  # type: ignore[assignment]
    version = PLUGIN_VERSION  # type: ignore[assignment]

    def setup(self, nexus_app: Nexus) -> None:
        nexus_app.on_workflow_started(hook_started)
        nexus_app.on_workflow_completed(hook_completed_1)
        nexus_app.on_workflow_completed(hook_completed_2)


def trivial_workflow(inputs: Mapping[str, Any]) -> Any:
    return inputs


# --------------------------------------------------------------------------------------
# Hosts: the raw SDK reference (case (a)'s baseline) and the host with core telemetry


# --------------------------------------------------------------------------------------


class RawSdkReference:
    """What a hand-instrumented caller would write to get the host's spans and metrics."""

    def __init__(self, providers: Providers, fn: Callable[[Mapping[str, Any]], Any]) -> None:
        version = nexus_otel.__version__
        self.tracer = providers.tracer_provider.get_tracer(c.INSTRUMENTATION_NAME, version)
        meter = providers.meter_provider.get_meter(c.INSTRUMENTATION_NAME, version)
        d, e, a, h = c.WORKFLOW_DURATION, c.WORKFLOW_EXECUTIONS, c.WORKFLOW_ACTIVE, c.HOOK_DURATION
        self.duration = meter.create_histogram(
            d.name, unit=d.unit, description=d.description,
            explicit_bucket_boundaries_advisory=list(d.buckets or ()),
        )
        self.executions = meter.create_counter(e.name, unit=e.unit, description=e.description)
        self.active = meter.create_up_down_counter(a.name, unit=a.unit, description=a.description)
        self.hook_duration = meter.create_histogram(
            h.name, unit=h.unit, description=h.description,
            explicit_bucket_boundaries_advisory=list(h.buckets or ()),
        )
        self.fn = fn
        self.span_name = c.WORKFLOW_SPAN.format(workflow=WORKFLOW)
        self.active_attrs = {c.M_WORKFLOW: WORKFLOW}
        self.metric_attrs = {c.M_WORKFLOW: WORKFLOW, c.M_CHANNEL: CHANNEL, c.M_STATUS: c.STATUS_COMPLETED}

        def hook(event: str, fn: Callable[[Any], Any]) -> tuple[Any, ...]:
            return (
                fn, c.HOOK_SPAN.format(event=event, plugin=PLUGIN),
                {c.PLUGIN_NAME: PLUGIN, c.PLUGIN_VERSION: PLUGIN_VERSION, c.HOOK_EVENT: event},
                {c.M_PLUGIN: PLUGIN, c.M_EVENT: event},
            )

        self.started = (hook(c.WORKFLOW_STARTED, hook_started),)
        self.completed = (
            hook(c.WORKFLOW_COMPLETED, hook_completed_1),
            hook(c.WORKFLOW_COMPLETED, hook_completed_2),
        )
        # Set-up only, as the host does when a hook is registered: the error series exist from
        # the start, at 0 (nothing is recorded on them per execution while no hook fails).
        pe = c.PLUGIN_ERRORS
        errors = meter.create_counter(pe.name, unit=pe.unit, description=pe.description)
        for *_, metric_attrs in (*self.started, *self.completed):
            errors.add(0, metric_attrs)

    def _hooks(self, hooks: tuple[tuple[Any, ...], ...], arg: Any) -> None:
        tracer, record = self.tracer, self.hook_duration.record
        for fn, span_name, span_attrs, metric_attrs in hooks:
            start = perf_counter()
            with tracer.start_as_current_span(span_name, attributes=span_attrs):
                fn(arg)
            record(perf_counter() - start, metric_attrs)

    def execute(self, inputs: Mapping[str, Any]) -> Any:
        attributes = {
            c.WORKFLOW_NAME: WORKFLOW,
            c.WORKFLOW_ID: uuid.uuid4().hex,
            c.CHANNEL: CHANNEL,
            c.WORKFLOW_INPUTS: json.dumps(inputs, sort_keys=True),
        }
        with self.tracer.start_as_current_span(self.span_name, attributes=attributes):
            self.active.add(1, self.active_attrs)
            self._hooks(self.started, inputs)
            start = perf_counter()
            result = self.fn(inputs)
            elapsed = perf_counter() - start
            self.executions.add(1, self.metric_attrs)
            self.duration.record(elapsed, self.metric_attrs)
            self._hooks(self.completed, inputs)
            self.active.add(-1, self.active_attrs)
        return result


class CountingStreamHandler(logging.StreamHandler):
    """A StreamHandler (the plugin's JSON formatter, a write per record) that also counts records."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        super().emit(record)


def core_host(plugins: Sequence[NexusPlugin] = (), *,
              outbox: str | None = None) -> tuple[Nexus, Providers, Callable[[], None]]:
    """The host with core telemetry (fresh SDK providers, as in (a)), the 3-hook plugin, ``plugins``; with
    ``outbox``, on that shared outbox (``Nexus(outbox=...)``)."""
    providers = Providers.fresh()
    app = Nexus("bench", tracer_provider=providers.tracer_provider, meter_provider=providers.meter_provider,
                logger_provider=providers.logger_provider, outbox=outbox)
    app.add_plugin(BenchPlugin())
    for plugin in plugins:
        app.add_plugin(plugin)
    app.register(WORKFLOW, trivial_workflow)
    app.start()

    def close() -> None:
        app.stop()
        providers.shutdown()

    return app, providers, close


def span_shape(span: Any) -> tuple[str, tuple[str, ...], str | None]:
    return span.name, tuple(sorted(span.attributes or {})), None if span.parent is None else "child"


# --------------------------------------------------------------------------------------
# Servers: the webhook receiver (its own process) and the OIDC key server (a thread)


# --------------------------------------------------------------------------------------


def send_json(handler: BaseHTTPRequestHandler, body: bytes) -> None:
    """Answer ``handler``'s request 200 with the JSON ``body``."""
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def receiver_main(secret: str) -> int:
    """``--webhook-receiver`` mode (its own process): answers every POST 200 at once, counts them.

    It checks each payload's Standard Webhooks signature and keeps the ids it saw;
    ``GET /count`` returns the tallies as JSON. It runs until it is terminated.
    """
    from standardwebhooks.webhooks import Webhook

    verifier = Webhook(secret)
    lock = threading.Lock()
    tally = {"received": 0, "valid": 0, "invalid": 0}
    ids: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the webhook client expects

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()
            try:
                verifier.verify(body, dict(self.headers.items()))
                valid = True
            except Exception:
                valid = False
            with lock:
                tally["received"] += 1
                tally["valid" if valid else "invalid"] += 1
                ids.add(self.headers.get("webhook-id") or "")

        def do_GET(self) -> None:
            with lock:
                body = json.dumps({**tally, "unique_ids": len(ids)}).encode()
            send_json(self, body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # The webhook poster opens up to 64 connections at once: with socketserver's default
        # listen backlog of 5, the kernel drops SYNs, connections wait for a retransmit, and
        # requests time out and are retried (counted twice here, though delivered once each).
        request_queue_size = 128
        daemon_threads = True

    server = Server((HOST, 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    server.serve_forever(poll_interval=0.5)
    return 0


class WebhookReceiver(LoopbackProcess):
    """The webhook destination: ``receiver_main`` in a subprocess (its CPU is not the host's)."""

    def __init__(self, secret: str, timeout: float = 30.0) -> None:
        super().__init__(os.path.abspath(__file__), "--webhook-receiver", "--secret", secret, what="webhook receiver",
                         timeout=timeout)
        self.url = f"{self.base}/hook"

    def count(self) -> dict[str, int]:
        return self.get_json("/count", timeout=10)


AUDIENCE = "bench"
SUBJECT = "bench-user"
SCOPE = "bench:run bench:read"


class JwksIdp:
    """A minimal OIDC key server on 127.0.0.1 (a thread of this process): one RSA 2048 key.

    Serves ``/jwks.json`` (counted) and mints RS256 tokens with that key. A copy of the
    essentials of ``tests/jwks_server.py``, so the benchmark does not import the test tree.
    """

    def __init__(self) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        self.kid = "bench-key-1"
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        body = json.dumps({"keys": [jwk]}).encode()
        self.counts: dict[str, int] = {}
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with lock:
                    owner.counts[path] = owner.counts.get(path, 0) + 1
                if path != "/jwks.json":
                    self.send_error(404)
                    return
                send_json(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._jwt = jwt
        self.httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{HOST}:{self.httpd.server_address[1]}"
        self.jwks_url = self.url + "/jwks.json"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="bench-jwks", daemon=True)
        self._thread.start()

    def fetches(self, path: str = "/jwks.json") -> int:
        return self.counts.get(path, 0)

    def token(self, **overrides: Any) -> str:
        """A valid RS256 token for the plugin's issuer and audience, valid for a day."""
        return self._jwt.encode(claims(self.url, **overrides), self.private, algorithm="RS256",
                                headers={"kid": self.kid})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def claims(issuer: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": issuer, "aud": AUDIENCE, "sub": SUBJECT, "scope": SCOPE, "iat": now, "nbf": now,
            "exp": now + 86400, **overrides}


# --------------------------------------------------------------------------------------
# What the checks compare and count; a baseline called as the candidate is


# --------------------------------------------------------------------------------------


def metric_total(reader: InMemoryMetricReader, name: str) -> float:
    """Sum over the data points of the metric ``name`` (0 when nothing was recorded on it)."""
    data = reader.get_metrics_data()
    total = 0.0
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    total += sum(getattr(p, "value", 0) for p in metric.data.data_points)
    return total


def counted(execute: Callable[..., Any], caller: Callable[[], Caller], count: list[int]) -> Callable[[], Any]:
    """One execution with a fresh ``Caller`` (as a channel makes one per request), counted."""

    def run() -> Any:
        count[0] += 1
        return execute(WORKFLOW, INPUTS, caller=caller())

    return run


def core_baseline(caller: Callable[[], Caller]) -> Side:
    """(a)'s candidate, the host with core telemetry, called with the same ``Caller`` as the candidate."""
    app, providers, close = core_host()
    count = [0]
    return Side("core telemetry", counted(app.execute_workflow, caller, count), close,
                {"app": app, "providers": providers, "executions": count})


def main(argv: Sequence[str] | None = None) -> int:
    """The fixtures that run in a process of their own: ``--webhook-receiver --secret S``."""
    parser = argparse.ArgumentParser(description="a benchmark fixture in its own process")
    parser.add_argument("--webhook-receiver", action="store_true", required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args(argv)
    return receiver_main(args.secret)


if __name__ == "__main__":
    sys.exit(main())
