"""The peer servers ``http_throughput.py --peers`` measures nexus-otel against: FastAPI apps, as their users run them.

Each serves what a nexus-otel app with the benchmark's workflow serves:
``POST /workflows/{name}`` with a JSON object body, answering
``{"result": ..., "workflow": "bench", "trace_id": ...}`` (404 for another
name), and ``GET /healthz``. The workflow is the same sync function as
``http_app.py``'s ``bench`` (optional busy ``work_ms``), in a FastAPI ``def``
endpoint, so it runs on Starlette's thread pool; the plugin's hooks are plain
callables around it, one ``workflow_started`` before and the rest
``workflow_completed`` after (``http_app.hook_events``).

* ``fastapi-bare``: ``FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})``,
  no spans, no metrics.
* ``fastapi-native``: FastAPI's own telemetry (its SERVER span and HTTP server metrics,
  ``operation_spans`` off) with an SDK ``TracerProvider`` (``BatchSpanProcessor``,
  OTLP/HTTP span exporter) and ``MeterProvider`` (``PeriodicExportingMetricReader``,
  OTLP/HTTP metric exporter), both to the sink, plus the spans nexus-otel makes
  around a workflow, by hand (:func:`traced_run`): the workflow span under the
  SERVER span and a span per hook under it, with nexus-otel's names and key
  attributes. The same trace as a nexus-otel server's: 2 + hooks spans a request.
* ``fastapi-contrib``: the bare app with ``opentelemetry-instrumentation-fastapi``
  (``FastAPIInstrumentor.instrument_app``), the same providers and the same
  hand-made spans. The instrumentor adds its ``http receive`` / ``http send``
  spans (one receive, two sends a request here): 5 + hooks spans a request.

Run as ``python http_peers.py --peer NAME --port N --sink URL [--hooks N] [--work-ms MS]``:
it serves with ``uvicorn.run`` (one worker; uvicorn's default protocol, httptools
when installed) until SIGTERM; its lifespan then shuts its providers down (their spans flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from http_app import WORKFLOW, hook_events

HOST = "127.0.0.1"
PEERS = ("fastapi-bare", "fastapi-native", "fastapi-contrib")
EXTRA_SPANS = {"fastapi-bare": None, "fastapi-native": 0, "fastapi-contrib": 3}
"""Spans a request makes besides the SERVER, workflow and hook spans (None: no telemetry)."""
PLUGIN, PLUGIN_VERSION = "bench-plugin", "1.0.0"  # http_app.py's BenchPlugin


def spans_per_request(peer: str, hooks: int) -> int:
    """How many spans a request to ``peer`` makes (0 without telemetry)."""
    extra = EXTRA_SPANS[peer]
    return 0 if extra is None else 2 + hooks + extra


def announce_protocol() -> None:
    """Make uvicorn print the HTTP protocol class and event loop it picked, once it has loaded its config.

    uvicorn chooses both at start (``http="auto"``: httptools when installed, else h11;
    ``loop="auto"``: uvloop when installed), and the figures depend on them; every
    benchmark server calls this first, so each one's log says what it ran.
    """
    import uvicorn

    load = uvicorn.Config.load

    def load_and_announce(config: uvicorn.Config) -> None:
        load(config)
        protocol = config.http_protocol_class
        loop = type(asyncio.get_running_loop())
        print(f"HTTP protocol: {protocol.__module__}.{protocol.__qualname__}; "
              f"event loop: {loop.__module__}.{loop.__qualname__}", flush=True)

    uvicorn.Config.load = load_and_announce  # type: ignore[method-assign]


def bench(work_ms: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``http_app.py``'s sync workflow: ``work_ms`` of CPU work holding the GIL, then a greeting."""
    work_s = work_ms / 1000

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        if work_s:
            end = time.perf_counter() + work_s
            while time.perf_counter() < end:
                pass
        return {"greeting": f"Hello, {inputs.get('name', 'world')}!"}

    return run


def plain_run(workflow: Callable[[dict], dict], hooks: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The workflow between its hooks, no telemetry."""
    before = [_hook for event in hook_events(hooks) if event == "workflow_started"]
    after = [_hook for event in hook_events(hooks) if event != "workflow_started"]

    def run(inputs: dict[str, Any]) -> dict[str, Any]:
        event = {"workflow_name": WORKFLOW, "inputs": inputs}
        for hook in before:
            hook(event)
        result = workflow(inputs)
        for hook in after:
            hook(event)
        return result

    return run


def _hook(event: dict[str, Any]) -> None:
    """A plugin's trivial hook (the benchmark app's do nothing too)."""


def traced_run(workflow: Callable[[dict], dict], hooks: int, tracer: Any) -> Callable[[dict[str, Any]], Any]:
    """The workflow between its hooks, with the spans nexus-otel makes, made by hand with the SDK.

    ``workflow bench`` (INTERNAL, current while the workflow and hooks run) with
    ``nexus.workflow.name``, ``nexus.workflow.id`` (a random 128-bit id a run),
    ``nexus.channel`` and ``nexus.workflow.inputs`` (the inputs as JSON; nexus-otel
    records them redacted); under it ``hook <event> bench-plugin`` per hook with
    ``nexus.plugin.name``, ``nexus.plugin.version`` and ``nexus.hook.event``. Returns
    ``(result, trace id)``.
    """
    from opentelemetry import context as context_api
    from opentelemetry import trace as trace_api

    ids = random.Random()
    events = hook_events(hooks)
    spans = [(f"hook {e} {PLUGIN}", {"nexus.plugin.name": PLUGIN, "nexus.plugin.version": PLUGIN_VERSION,
                                      "nexus.hook.event": e}) for e in events]
    before = [s for s, e in zip(spans, events) if e == "workflow_started"]
    after = [s for s, e in zip(spans, events) if e != "workflow_started"]

    def hook(name: str, attributes: dict[str, str], event: dict[str, Any]) -> None:
        span = tracer.start_span(name, attributes=attributes, record_exception=False,
                                 set_status_on_exception=False)
        token = context_api.attach(trace_api.set_span_in_context(span))
        try:
            _hook(event)
        finally:
            context_api.detach(token)
            span.end()

    def run(inputs: dict[str, Any]) -> tuple[dict[str, Any], str]:
        workflow_id = f"{ids.getrandbits(128):032x}"
        span = tracer.start_span(f"workflow {WORKFLOW}", kind=trace_api.SpanKind.INTERNAL, attributes={
            "nexus.workflow.name": WORKFLOW, "nexus.workflow.id": workflow_id, "nexus.channel": "api",
            "nexus.workflow.inputs": json.dumps(inputs, separators=(",", ":")),
        })
        token = context_api.attach(trace_api.set_span_in_context(span))
        event = {"workflow_name": WORKFLOW, "workflow_id": workflow_id, "inputs": inputs}
        try:
            for name, attributes in before:
                hook(name, attributes, event)
            result = workflow(inputs)
            for name, attributes in after:
                hook(name, attributes, event)
            return result, f"{span.get_span_context().trace_id:032x}"
        finally:
            context_api.detach(token)
            span.end()

    return run


def providers(service: str, sink: str) -> tuple[Any, Any]:
    """An SDK tracer provider and meter provider exporting over OTLP/HTTP (protobuf) to ``sink``."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sink + "/v1/traces")))
    meter_provider = MeterProvider(resource=resource, metric_readers=[
        PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=sink + "/v1/metrics"))])
    return tracer_provider, meter_provider


def shutting_down(owned: list[Any]) -> Callable[[Any], Any]:
    """A FastAPI lifespan that shuts ``owned`` providers down as the server stops (their last spans and
    metrics exported): FastAPI never shuts down providers it was given, so its users do this."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        for provider in owned:
            provider.shutdown()

    return lifespan


def build_peer(peer: str, sink: str, hooks: int, work_ms: float) -> Any:
    """The peer's ASGI app; its providers, if any, shut down with it."""
    try:
        from fastapi import Body, FastAPI, HTTPException
        from fastapi.telemetry import TelemetryConfig  # noqa: F401 (FastAPI with native telemetry)
    except ImportError as exc:
        raise SystemExit(f"{peer}: needs FastAPI with native telemetry (fastapi.telemetry; 0.165 was measured), "
                         f"which the kailash extra brings: pip install -e '.[dev,kailash]' ({exc})") from None

    workflow = bench(work_ms)
    bare = {"tracing": False, "metrics": False, "logs": False}
    if peer == "fastapi-bare":
        app = FastAPI(telemetry=bare)
        plain = plain_run(workflow, hooks)

        def execute(inputs: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
            return plain(inputs), None
    elif peer in ("fastapi-native", "fastapi-contrib"):
        tracer_provider, meter_provider = providers(peer, sink)
        lifespan = shutting_down([tracer_provider, meter_provider])
        if peer == "fastapi-native":
            app = FastAPI(lifespan=lifespan, telemetry={
                "operation_spans": False, "tracer_provider": tracer_provider, "meter_provider": meter_provider,
                "logs": False})
        else:
            from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

            app = FastAPI(lifespan=lifespan, telemetry=bare)
            FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
        execute = traced_run(workflow, hooks, tracer_provider.get_tracer("nexus_otel"))
    else:
        raise ValueError(f"unknown peer {peer!r}; expected one of {', '.join(PEERS)}")

    @app.post("/workflows/{name}")
    def run_workflow(name: str, inputs: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008 (FastAPI's way)
        if name != WORKFLOW:
            raise HTTPException(404, "unknown workflow")
        result, trace_id = execute(inputs)
        return {"result": result, "workflow": name, "trace_id": trace_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", required=True, choices=PEERS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sink", required=True, help="the OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318")
    parser.add_argument("--hooks", type=int, default=2)
    parser.add_argument("--work-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    import uvicorn

    announce_protocol()
    app = build_peer(args.peer, args.sink.rstrip("/"), args.hooks, args.work_ms)
    uvicorn.run(app, host=HOST, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
