"""Delivery spans and carried baggage against receivers as users run them, and hostile baggage.

The other delivery-span tests use the project's own receiver; here the receiver is Python's stock
``http.server`` (an accept queue of 5, a connection per request) and a small pool that answers 503
beyond its capacity (:mod:`tests.plain_receivers`). The app builds its own tracer provider, so the
spans are the lean tracer's, as users get them.
"""

from __future__ import annotations

import time

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nexus_otel import Nexus
from nexus_otel.baggage import MAX_BYTES, MAX_MEMBERS
from nexus_otel.plugins import WebhookPlugin

from .plain_receivers import PoolReceiver, StockReceiver
from .webhook_receiver import WebhookReceiver

FAST = {"backoff_base": 0.05, "backoff_max": 0.2}


def _app(tmp_path, url: str, **environ: str) -> tuple[Nexus, WebhookPlugin, InMemorySpanExporter]:
    exported = InMemorySpanExporter()
    app = Nexus("shop", environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                 "OTEL_LOGS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"),
                                 **environ})
    app.telemetry.add_span_processor(SimpleSpanProcessor(exported))
    app.register("order", lambda inputs: {"ok": True})
    plugin = WebhookPlugin(url, outbox_path=tmp_path / "outbox.sqlite", **FAST)
    app.add_plugin(plugin)
    return app, plugin, exported


def _posts(exported: InMemorySpanExporter) -> list:
    return [s for s in exported.get_finished_spans() if s.name == "POST"]


def _settle(exported: InMemorySpanExporter, n: int, timeout: float = 10.0) -> list:
    """The attempt spans once ``n`` have ended (a request's span ends after its batch settles)."""
    end = time.monotonic() + timeout
    while len(_posts(exported)) < n and time.monotonic() < end:
        time.sleep(0.02)
    return _posts(exported)


def test_a_burst_to_a_stock_server_gives_one_span_per_request_it_got(tmp_path):
    """200 payloads to Python's stock http.server: each delivered once, and one span per request it received."""
    with StockReceiver() as receiver:
        app, plugin, exported = _app(tmp_path, receiver.url)
        for _ in range(200):
            app.execute_workflow("order", {})
        assert receiver.wait_for(200, 15)
        spans = _settle(exported, len(receiver.attempts))
        app.stop()
    assert len(set(receiver.delivered())) == 200
    assert len(spans) == len(receiver.attempts)
    assert sorted(s.attributes["nexus.webhook.id"] for s in spans if "error.type" not in s.attributes) == sorted(
        receiver.delivered())


def test_a_pool_that_answers_503_gives_an_error_span_per_refusal_and_retries_under_their_first_attempt(tmp_path):
    """A receiver serving 4 at a time, 503 beyond: every 503 an ERROR span (error.type "503"), every retry a
    child of its payload's first attempt, in that attempt's trace; one span per request the pool got."""
    with PoolReceiver(capacity=4, work=0.02) as receiver:
        app, plugin, exported = _app(tmp_path, receiver.url)
        for _ in range(150):
            app.execute_workflow("order", {})
        assert receiver.wait_for(150, 20)
        spans = _settle(exported, len(receiver.attempts))
        app.stop()
    assert len(spans) == len(receiver.attempts)
    refused = [s for s in spans if s.attributes.get("http.response.status_code") == 503]
    assert refused and len(refused) == sum(1 for a in receiver.attempts if a.status == 503)
    assert all(s.attributes["error.type"] == "503" and not s.status.is_ok for s in refused)
    firsts = {s.attributes["nexus.webhook.id"]: s for s in spans if s.attributes["nexus.webhook.attempt"] == 1}
    for span in spans:
        first = firsts[span.attributes["nexus.webhook.id"]]
        if span is not first:
            assert span.parent.span_id == first.context.span_id
            assert span.context.trace_id == first.context.trace_id


def test_hostile_baggage_is_bounded_and_never_breaks_the_request_head(tmp_path):
    """200 listed members with line breaks, quotes, commas, non-ASCII and a 20,000-character value: the webhook's
    baggage header is one line, at most 64 members and 8,192 bytes, and the payload is delivered."""
    keys = [f"k{i}" for i in range(200)]
    with WebhookReceiver() as receiver:
        app, plugin, _ = _app(tmp_path, receiver.url, NEXUS_OTEL_BAGGAGE_KEYS=",".join(keys))
        ctx = context_api.get_current()
        for i, key in enumerate(keys):
            value = "x" * 20_000 if i == 3 else f'a\r\nInjected: 1,"q";é{i}'
            ctx = baggage_api.set_baggage(key, value, ctx)
        token = context_api.attach(ctx)
        try:
            app.execute_workflow("order", {})
        finally:
            context_api.detach(token)
        (request,) = receiver.wait_for_count(1)
        app.stop()
    header = request.headers["baggage"]
    assert "\r" not in header and "\n" not in header and "injected" not in {k.lower() for k in request.headers}
    assert len(header.encode()) <= MAX_BYTES and 1 <= len(header.split(",")) <= MAX_MEMBERS

