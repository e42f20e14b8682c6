"""Webhook attempts as spans: one CLIENT span per request sent, in a trace of its own, linked to its execution.

Real parts: the OpenTelemetry SDK behind the app's redaction (nexus_otel.testing's in-memory exporter), real
HTTP receivers on 127.0.0.1, the webhook plugin's real outbox and worker.
"""

from __future__ import annotations

import time

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from nexus_otel import Nexus
from nexus_otel.errors import ConfigurationError, PluginSetupError
from nexus_otel.exporters.delivery_spans import url_full
from nexus_otel.exporters.webhook import WebhookExporter
from nexus_otel.outbox import Outbox
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.testing import CapturedTelemetry

from .faults import closed_port_url
from .webhook_receiver import WebhookReceiver

FAST = {"backoff_base": 0.05, "backoff_max": 0.2}


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


def _app(capture: CapturedTelemetry, tmp_path, url: str, environ: dict[str, str] | None = None,
         **plugin_options) -> tuple[Nexus, WebhookPlugin]:
    config = TelemetryConfig.from_env(environ or {})
    app = Nexus("shop", telemetry=capture.telemetry("shop", config=config))
    app.register("order", lambda inputs: {"ok": True})
    plugin = WebhookPlugin(url, outbox_path=tmp_path / "outbox.sqlite", **{**FAST, **plugin_options})
    app.add_plugin(plugin)
    return app, plugin


def _attempts(capture: CapturedTelemetry) -> list:
    """The attempt spans so far, in the order they started."""
    return sorted((s for s in capture.spans if s.instrumentation_scope.name == "nexus_otel.webhooks"),
                  key=lambda s: s.start_time)


def _wait_for_spans(capture: CapturedTelemetry, n: int, timeout: float = 10.0) -> list:
    deadline = time.monotonic() + timeout
    while len(_attempts(capture)) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return _attempts(capture)


def _traceparent(span) -> str:
    """The W3C traceparent naming ``span`` (its flags as the SDK set them: sampled, and random where it says so)."""
    assert span.context.trace_flags.sampled
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}"


def test_each_attempt_is_a_client_span_linked_to_the_workflow_span_in_one_trace(capture, tmp_path, receiver):
    """500, 500, 200: three POST spans with those statuses in one trace (the first the root, the retries its
    children), each linking the workflow span, none in its trace, and the receiver saw each one's traceparent."""
    receiver.set_status_sequence([500, 500])
    app, plugin = _app(capture, tmp_path, receiver.url)
    app.execute_workflow("order", {})
    workflow = capture.span("workflow order")
    received = receiver.wait_for_count(3)
    spans = _wait_for_spans(capture, 3)
    app.stop()

    assert [s.attributes["http.response.status_code"] for s in spans] == [500, 500, 200]
    assert [r.status for r in received] == [500, 500, 200]
    for attempt, (span, request) in enumerate(zip(spans, received), 1):
        assert span.name == "POST" and span.kind is SpanKind.CLIENT
        if attempt == 1:
            assert span.parent is None, "a root: never a child of whatever was current"
        else:
            assert span.parent.span_id == spans[0].context.span_id, "a retry is a child of the first attempt"
        assert span.context.trace_id != workflow.context.trace_id
        (link,) = span.links
        assert (link.context.trace_id, link.context.span_id) == (workflow.context.trace_id,
                                                                 workflow.context.span_id)
        attrs = span.attributes
        assert attrs["http.request.method"] == "POST"
        assert attrs["url.full"] == receiver.url
        assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == receiver.port
        assert attrs["nexus.webhook.id"] == request.headers["webhook-id"]
        assert attrs["nexus.webhook.attempt"] == attempt
        assert attrs["nexus.workflow.name"] == "order"
        assert attrs["nexus.webhook.id"] == f"msg_{workflow.attributes['nexus.workflow.id']}"
        assert request.headers["traceparent"] == _traceparent(span)
        assert "tracestate" not in request.headers
    assert [s.attributes.get("error.type") for s in spans] == ["500", "500", None]
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert len({s.context.trace_id for s in spans}) == 1, "a payload's attempts in one trace of their own"
    assert not any(e.name.startswith("nexus.webhook.") for s in spans for e in s.events)
    assert plugin.stats()["delivered"] == 1


def test_the_workflow_trace_is_the_same_with_delivery_spans_on_or_off(tmp_path, receiver):
    """Delivery spans add traces of their own: the workflow's trace has the same spans either way."""
    shapes = []
    for label, environ in (("on", {}), ("off", {"NEXUS_OTEL_DELIVERY_SPANS": "false"})):
        capture = CapturedTelemetry()
        try:
            app, _ = _app(capture, tmp_path / label, receiver.url, environ)
            app.execute_workflow("order", {})
            workflow = capture.span("workflow order")
            receiver.wait_for_count(len(shapes) + 1)
            app.stop()
            trace = capture.traces()[workflow.context.trace_id]
            shapes.append(sorted((s.name, s.kind.name, s.parent is not None) for s in trace))
            attempts = _attempts(capture)
            assert len(attempts) == (1 if label == "on" else 0)
            assert all(s.context.trace_id != workflow.context.trace_id for s in attempts)
        finally:
            capture.shutdown()
    assert shapes[0] == shapes[1]
    on, off = receiver.requests()
    assert "traceparent" in on.headers and "traceparent" not in off.headers


def test_nexus_otel_delivery_spans_false_gives_no_span_and_no_traceparent(capture, tmp_path, receiver):
    """NEXUS_OTEL_DELIVERY_SPANS=false: deliveries go on as before, with no attempt span and no traceparent."""
    receiver.set_status_sequence([500])
    app, plugin = _app(capture, tmp_path, receiver.url, {"NEXUS_OTEL_DELIVERY_SPANS": "false"})
    app.execute_workflow("order", {})
    received = receiver.wait_for_count(2)
    app.stop()
    assert plugin.exporter is not None and plugin.exporter.spans is None
    assert _attempts(capture) == []
    assert not any("traceparent" in r.headers for r in received)


def test_otel_propagators_without_tracecontext_keeps_the_spans_but_sends_no_traceparent(capture, tmp_path, receiver):
    """OTEL_PROPAGATORS=baggage: the attempt still has its span; the request carries no traceparent."""
    app, _ = _app(capture, tmp_path, receiver.url, {"OTEL_PROPAGATORS": "baggage"})
    app.execute_workflow("order", {})
    (request,) = receiver.wait_for_count(1)
    (span,) = _wait_for_spans(capture, 1)
    app.stop()
    assert "traceparent" not in request.headers
    assert span.attributes["http.response.status_code"] == 200


def test_the_last_attempt_of_a_given_up_payload_has_the_dead_letter_event(capture, tmp_path, receiver):
    """A payload given up after max_attempts: only its last attempt's span has nexus.webhook.dead_letter, with
    the error; a replay's first attempt has nexus.webhook.replayed, with the error it was given up with."""
    receiver.set_status(503)
    app, plugin = _app(capture, tmp_path, receiver.url, max_attempts=2)
    app.execute_workflow("order", {})
    receiver.wait_for_count(2)
    spans = _wait_for_spans(capture, 2)
    deadline = time.monotonic() + 10
    while not plugin.dead_letters() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [s.attributes["nexus.webhook.attempt"] for s in spans] == [1, 2]
    assert [[e.name for e in s.events] for s in spans] == [[], ["nexus.webhook.dead_letter"]]
    (event,) = spans[1].events
    assert event.attributes["nexus.webhook.error"] == "HTTP 503"
    assert event.attributes["error.type"] == "503"
    assert spans[1].start_time <= event.timestamp <= spans[1].end_time

    receiver.set_status(200)
    assert plugin.replay() == 1
    receiver.wait_for_count(3)
    spans = _wait_for_spans(capture, 3)
    app.stop()
    replayed = spans[2]
    assert replayed.attributes["nexus.webhook.attempt"] == 1
    assert replayed.attributes["http.response.status_code"] == 200
    assert [(e.name, dict(e.attributes)) for e in replayed.events] == [
        ("nexus.webhook.replayed", {"nexus.webhook.error": "HTTP 503"})]
    assert replayed.attributes["nexus.webhook.id"] == spans[0].attributes["nexus.webhook.id"]


def test_a_request_held_by_retry_after_has_no_span(capture, tmp_path, receiver):
    """A 429 with Retry-After holds the destination: the requests of its batch waiting behind it are not sent and
    have no span; every span is a request the receiver saw."""
    app, plugin = _app(capture, tmp_path, receiver.url, max_in_flight=1)
    app.execute_workflow("order", {})
    receiver.wait_for_count(1)  # the destination is up: its next batch goes whole, one request at a time
    _wait_for_spans(capture, 1)
    receiver.set_status(429)
    receiver.set_retry_after(30)
    for _ in range(5):  # one batch: queued within the worker's linger after its wake-up
        app.execute_workflow("order", {})
    receiver.wait_for_count(2)
    deadline = time.monotonic() + 10
    while not plugin.exporter.worker.breaker.state(receiver.url, time.time()).held_until:
        assert time.monotonic() < deadline, "the destination was never held"
        time.sleep(0.02)
    app.stop(timeout=1)
    assert len(receiver.requests()) == 2, "one 429 answer; the four requests behind it held back"
    assert [s.attributes["http.response.status_code"] for s in _attempts(capture)] == [200, 429]
    assert plugin.outbox.counts()["pending"] == 5


def test_url_full_hides_credentials_and_secret_query_values(capture, tmp_path, receiver):
    """url.full has user and password REDACTED and secret query values REDACTED; the request went to the real URL."""
    url = f"http://alice:s3cret@127.0.0.1:{receiver.port}/hook?sig=abc&page=2"
    assert url_full(url) == f"http://REDACTED:REDACTED@127.0.0.1:{receiver.port}/hook?sig=REDACTED&page=2"
    app, _ = _app(capture, tmp_path, url)
    app.execute_workflow("order", {})
    (request,) = receiver.wait_for_count(1)
    (span,) = _wait_for_spans(capture, 1)
    app.stop()
    assert request.path == "/hook?sig=abc&page=2"
    assert span.attributes["url.full"] == url_full(url)
    assert "s3cret" not in str(span.to_json()) and "sig=abc" not in str(span.to_json())


def test_a_refused_connection_is_a_failed_span_named_by_its_exception(capture, tmp_path):
    """No receiver at the port: the attempt's span is ERROR with the exception's qualified name as error.type."""
    url = closed_port_url()
    app, plugin = _app(capture, tmp_path, url, max_attempts=1)
    app.execute_workflow("order", {})
    (span,) = _wait_for_spans(capture, 1)
    app.stop()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ConnectionRefusedError"
    assert "http.response.status_code" not in span.attributes
    assert [e.name for e in span.events] == ["nexus.webhook.dead_letter"]


def test_traceparent_is_reserved_while_delivery_spans_are_on(capture, tmp_path, receiver):
    """headers={"traceparent": ...} fails at setup naming the header while spans are on, and is sent when off."""
    app = Nexus("shop", telemetry=capture.telemetry("shop"))
    with pytest.raises(PluginSetupError, match="traceparent"):
        app.add_plugin(WebhookPlugin(receiver.url, outbox_path=tmp_path / "o.sqlite",
                                     headers={"Traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}))
    with pytest.raises(ConfigurationError, match="tracestate"):
        WebhookExporter([receiver.url], Outbox(tmp_path / "e.sqlite"), headers={"tracestate": "a=b"},
                        tracer=capture.tracer_provider.get_tracer("t"))
    off = Nexus("shop", telemetry=capture.telemetry(
        "shop", config=TelemetryConfig.from_env({"NEXUS_OTEL_DELIVERY_SPANS": "false"})))
    off.register("order", lambda inputs: {"ok": True})
    off.add_plugin(WebhookPlugin(receiver.url, outbox_path=tmp_path / "off.sqlite",
                                 headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}))
    off.execute_workflow("order", {})
    (request,) = receiver.wait_for_count(1)
    off.stop()
    assert request.headers["traceparent"] == "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


def test_the_tail_sampler_keeps_a_failed_delivery_whole_and_applies_the_workflows_own_ratio(tmp_path, receiver):
    """Tail sampling at ratio 0: a delivery whose first attempt failed is kept whole (its root for the error, the
    retries with it); one delivered at once is dropped, unless the workflow's own per_workflow ratio keeps it (the
    attempt carries nexus.workflow.name)."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from nexus_otel.processors.tail_sampling import TailSampling

    kept = {}
    cases = (("failing", TailSampling(ratio=0.0), [500, 500]), ("ok", TailSampling(ratio=0.0), []),
             ("order", TailSampling(ratio=0.0, per_workflow={"order": TailSampling(ratio=1.0)}), []))
    for label, policy, statuses in cases:
        capture = CapturedTelemetry()
        exported = kept[label] = InMemorySpanExporter()
        try:
            telemetry = capture.telemetry("shop", tail_sampling=policy)
            telemetry.add_span_processor(SimpleSpanProcessor(exported))  # behind the tail sampler
            app = Nexus("shop", telemetry=telemetry)
            app.register("order", lambda inputs: {"ok": True})
            app.add_plugin(WebhookPlugin(receiver.url, outbox_path=tmp_path / f"{label}.sqlite", **FAST))
            receiver.clear()
            receiver.set_status_sequence(statuses)
            app.execute_workflow("order", {})
            receiver.wait_for_count(len(statuses) + 1)
            _wait_for_spans(capture, len(statuses) + 1)
            app.stop()
        finally:
            capture.shutdown()

    def posts(label: str) -> list[tuple[int, str | None]]:
        return [(s.attributes["http.response.status_code"], s.attributes.get("nexus.sampling.reason"))
                for s in kept[label].get_finished_spans() if s.name == "POST"]

    assert sorted(status for status, _ in posts("failing")) == [200, 500, 500]  # kept whole
    assert posts("failing")[0] == (500, "error")
    assert not [s for s in kept["failing"].get_finished_spans() if s.name == "workflow order"]
    assert posts("ok") == []
    assert posts("order") == [(200, "ratio")]


class _Raising:
    """A span processor that raises on every span it is handed (a user's broken processor)."""

    def on_start(self, span, parent_context=None):
        raise RuntimeError("processor broken at start")

    def on_end(self, span):
        raise RuntimeError("processor broken at end")

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30_000):
        return True


def _own_app(tmp_path, url: str, *processors, redactor=None) -> tuple[Nexus, WebhookPlugin]:
    """An app whose tracer provider it built itself (so delivery spans come from its lean tracer)."""
    app = Nexus("shop", redactor=redactor, environ={
        "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
        "NEXUS_OTEL_DATA_DIR": str(tmp_path / "data")})
    for processor in processors:
        app.telemetry.add_span_processor(processor)
    app.register("order", lambda inputs: {"ok": True})
    plugin = WebhookPlugin(url, outbox_path=tmp_path / "outbox.sqlite", **FAST)
    app.add_plugin(plugin)
    return app, plugin


def test_the_lean_tracer_makes_the_same_delivery_trace(tmp_path, receiver):
    """On a provider the app built (the lean tracer): 500, 500, 200 in one trace, the retries children of the
    first attempt, each linked to the workflow span, each request carrying its span's traceparent."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    receiver.set_status_sequence([500, 500])
    app, plugin = _own_app(tmp_path, receiver.url, SimpleSpanProcessor(exported))
    app.execute_workflow("order", {})
    received = receiver.wait_for_count(3)
    deadline = time.monotonic() + 10
    while len([s for s in exported.get_finished_spans() if s.name == "POST"]) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    app.stop()
    spans = exported.get_finished_spans()
    workflow = next(s for s in spans if s.name == "workflow order")
    posts = sorted((s for s in spans if s.name == "POST"), key=lambda s: s.start_time)
    assert [s.attributes["http.response.status_code"] for s in posts] == [500, 500, 200]
    assert posts[0].parent is None and all(s.parent.span_id == posts[0].context.span_id for s in posts[1:])
    assert len({s.context.trace_id for s in posts}) == 1 != workflow.context.trace_id
    for span, request in zip(posts, received):
        assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
            (workflow.context.trace_id, workflow.context.span_id)]
        assert request.headers["traceparent"] == _traceparent(span)
    assert plugin.stats()["delivered"] == 1


def test_a_failing_span_processor_or_redaction_callback_changes_no_delivery(tmp_path, receiver, caplog):
    """Span code that raises (a processor at start and end, a redaction callback on url.full) is logged once; the
    payload is still sent once, delivered, with no retry, and the request goes without a traceparent if the span
    could not start."""
    from nexus_otel.redaction import Redactor

    def callback(key: str, value: str) -> str:
        if key == "url.full":
            raise RuntimeError("callback broken")
        return value

    for label, processors, redactor in (("processor", (_Raising(),), None),
                                        ("callback", (), Redactor(callback=callback))):
        receiver.clear()
        app, plugin = _own_app(tmp_path / label, receiver.url, *processors, redactor=redactor)
        app.execute_workflow("order", {})
        (request,) = receiver.wait_for_count(1)
        deadline = time.monotonic() + 5
        while plugin.stats().get("delivered") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = plugin.stats()
        app.stop()
        assert stats["delivered"] == 1 and stats.get("retried", 0) == 0, (label, stats)
        assert len(receiver.requests()) == 1, label
        if label == "callback":
            assert "traceparent" not in request.headers
    assert any("webhook attempt spans failed" in r.getMessage() for r in caplog.records)


def test_url_full_masks_token_shaped_path_segments_and_reads_the_host_right():
    """Slack's and Discord's secrets in the path are REDACTED; a '@' in the query is not taken for credentials."""
    assert url_full("https://hooks.slack.com/services/T0123ABCD/B0456EFGH/abcDEF123ghiJKL456mnoPQR") == (
        "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/REDACTED")
    assert url_full("https://discord.com/api/webhooks/123456789012345678/abcdefGHIJKLmnop1234567890") == (
        "https://discord.com/api/webhooks/123456789012345678/REDACTED")
    assert url_full("http://h?x=a@b") == "http://h?x=a@b"
    assert url_full("http://127.0.0.1:8080/orders/webhook-receiver") == "http://127.0.0.1:8080/orders/webhook-receiver"
