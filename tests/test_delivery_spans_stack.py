"""Delivery spans on the deploy kit's real stack: the app -> our Collector (deploy/otel-collector.yaml) -> Jaeger v2.

A workflow fails (so the Collector's tail sampler keeps its trace: keep-errors); its webhook receiver answers
500, 500, then 200 after a little over a second (errors and a slow span: the Collector keeps the delivery's
trace). Jaeger's query API must then show three attempt spans in one trace of their own (the first the root,
the retries its children), each with a reference to the workflow span, statuses 500, 500, 200; the receiver saw
each one's traceparent;
and the workflow's own trace holds no attempt span and ends long before the retries did. The Collector runs with
``short_waits`` (tests/deploy_servers.py): it decides a trace 2 to 3 s after its first span, not the shipped 10 s,
and the retries' spans arriving after their trace's decision follow it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from nexus_otel import Nexus
from nexus_otel.plugins import WebhookPlugin

from .deploy_servers import Collector, Jaeger, parent_of, require_binary, tags_of
from .prometheus_server import wait_until

SERVICE = "delivery-e2e"
SLOW_OK = 1.05  # s: more than the Collector's keep-slow threshold (1000 ms)


class FailsTwiceReceiver:
    """Answers 500, 500, then 200 after ``SLOW_OK`` seconds; records each request's headers and status."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], int]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    status = 500 if len(receiver.requests) < 2 else 200
                    receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, status))
                if status == 200:
                    threading.Event().wait(SLOW_OK)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stack(tmp_path) -> Iterator[tuple[Jaeger, Collector]]:
    require_binary("otelcol")
    require_binary("jaeger")
    jaeger = Jaeger(tmp_path)
    collector = Collector(tmp_path, "otel-collector.yaml", jaeger_endpoint=jaeger.otlp_grpc_endpoint,
                          short_waits=True)
    errors: list[BaseException] = []

    def start(server: Any) -> None:
        try:
            server.start()
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)

    # Both at once: the Collector's exporter connects to Jaeger lazily, so neither waits for the other.
    threads = [threading.Thread(target=start, args=(s,)) for s in (jaeger, collector)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        if errors:
            raise errors[0]
        yield jaeger, collector
    finally:
        collector.stop()
        jaeger.stop()


def test_three_attempts_in_one_jaeger_trace_each_referencing_the_workflow_span(stack, tmp_path, monkeypatch):
    """500, 500, 200: three POST spans in one Jaeger trace, each with a reference naming the workflow span; the
    receiver saw each one's traceparent; the workflow's trace has no attempt span and is shorter than the retries
    took."""
    jaeger, collector = stack
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    receiver = FailsTwiceReceiver()
    app = Nexus(SERVICE, environ={
        "OTEL_SERVICE_NAME": SERVICE, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.otlp_http_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path / "data")})

    @app.workflow("checkout")
    def checkout(inputs: dict) -> dict:
        raise RuntimeError("out of stock")

    plugin = WebhookPlugin(receiver.url, statuses=["failed"], outbox_path=tmp_path / "outbox.sqlite",
                           backoff_base=0.05, backoff_max=0.2)
    app.add_plugin(plugin)
    try:
        with pytest.raises(RuntimeError):
            app.execute_workflow("checkout", {})
        wait_until(lambda: plugin.stats().get("delivered") == 1, 15, what="the payload delivered", interval=0.05)
    finally:
        app.stop()  # flushes the spans to the Collector
        receiver.close()
    assert [status for _, status in receiver.requests] == [500, 500, 200]

    def attempts_in_jaeger() -> list[tuple[dict, dict]]:
        found = [(span, trace) for trace in jaeger.traces(SERVICE) for span in trace["spans"]
                 if span["operationName"] == "POST"]
        return found if len(found) == 3 and any(s["operationName"].startswith("workflow ")
                                                for t in jaeger.traces(SERVICE) for s in t["spans"]) else []

    attempts = sorted(wait_until(attempts_in_jaeger, 40, what="three attempt spans and the workflow span in Jaeger"),
                      key=lambda pair: pair[0]["startTime"])
    (workflow_trace,) = [t for t in jaeger.traces(SERVICE)
                         if any(s["operationName"] == "workflow checkout" for s in t["spans"])]
    workflow = next(s for s in workflow_trace["spans"] if s["operationName"] == "workflow checkout")

    assert [tags_of(span)["http.response.status_code"] for span, _ in attempts] == [500, 500, 200]
    first = attempts[0][0]
    assert len({span["traceID"] for span, _ in attempts}) == 1, "a payload's attempts in one trace"
    assert len(attempts[0][1]["spans"]) == 3, "nothing else in the delivery's trace"
    for i, ((span, _trace), (headers, _)) in enumerate(zip(attempts, receiver.requests)):
        assert parent_of(span) == (None if i == 0 else first["spanID"]), "the first attempt, then its retries"
        assert span["traceID"] != workflow["traceID"]
        links = [(r["traceID"], r["spanID"]) for r in span["references"] if r["refType"] == "FOLLOWS_FROM"]
        assert links == [(workflow["traceID"], workflow["spanID"])]
        assert tags_of(span)["span.kind"] == "client"
        assert headers["traceparent"].split("-")[1:3] == [span["traceID"], span["spanID"]]

    assert all(s["operationName"] != "POST" for s in workflow_trace["spans"])
    workflow_duration = (max(s["startTime"] + s["duration"] for s in workflow_trace["spans"])
                         - min(s["startTime"] for s in workflow_trace["spans"]))
    last = attempts[-1][0]
    retries_took = last["startTime"] + last["duration"] - first["startTime"]
    assert workflow_duration < retries_took, (workflow_duration, retries_took)
