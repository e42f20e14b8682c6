"""The scaled-out Collector tiers on the real binary: a gateway routing by trace id to two tail samplers.

The gateway runs ``deploy/otel-collector-gateway.yaml`` and the samplers
``deploy/otel-collector-sampler.yaml``. The one change is the gateway's
resolver: the shipped file finds the samplers through a Kubernetes headless
Service (DNS), and two samplers on one machine cannot share a name and port, so
the test lists them with the load_balancing exporter's ``static`` resolver. The
rest of the file (pipelines, processors, routing key) runs as shipped. Each
sampler sends what it keeps to its own OTLP/gRPC receiver standing in the
place of Jaeger, so the test sees which sampler each span went through. All
three run with ``short_waits`` (tests/deploy_servers.py): the samplers decide a
trace 2 to 3 s after its first span, not 10 s, still well after its last span
arrived (the test sends every span within a second), and the batches wait 200 ms.
"""

from __future__ import annotations

import secrets

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .deploy_servers import Collector, gateway_config_with_static_samplers, require_binary
from .otlp_receivers import GRPCReceiver
from .prometheus_server import wait_until

ERROR_TRACES, OK_TRACES = 20, 20
SPANS_PER_TRACE = 3  # server -> workflow -> hook, each sent in a request of its own


def _span_request(trace_id: bytes, index: int, error: bool) -> bytes:
    span_ids = [bytes([i + 1]) * 8 for i in range(SPANS_PER_TRACE)]
    span = Span(trace_id=trace_id, span_id=span_ids[index], name=f"span {index}", kind=Span.SPAN_KIND_INTERNAL,
                start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_001_000_000,
                parent_span_id=span_ids[index - 1] if index else b"",
                status=Status(code=Status.STATUS_CODE_ERROR if error and index == 1 else Status.STATUS_CODE_OK))
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="lb-e2e")))
    resource_spans.scope_spans.add().spans.append(span)
    return request.SerializeToString()


def test_gateway_sends_each_trace_to_one_sampler_which_decides_on_whole_traces(tmp_path):
    require_binary("otelcol")
    with GRPCReceiver() as sink_a, GRPCReceiver() as sink_b:
        samplers = [
            Collector(tmp_path, "otel-collector-sampler.yaml", name=f"sampler-{n}",
                      jaeger_endpoint=sink.endpoint.removeprefix("http://"), short_waits=True)
            for n, sink in (("a", sink_a), ("b", sink_b))
        ]
        config = gateway_config_with_static_samplers(tmp_path / "gateway.yaml",
                                                     [s.otlp_grpc_endpoint for s in samplers])
        with samplers[0], samplers[1], \
                Collector(tmp_path, str(config), name="gateway", short_waits=True) as gateway:
            traces = {secrets.token_bytes(16): i < ERROR_TRACES for i in range(ERROR_TRACES + OK_TRACES)}
            with httpx.Client(timeout=10) as client:
                for index in range(SPANS_PER_TRACE):  # every trace's spans arrive in separate requests
                    for trace_id, error in traces.items():
                        response = client.post(f"{gateway.otlp_http_url}/v1/traces",
                                               content=_span_request(trace_id, index, error),
                                               headers={"content-type": "application/x-protobuf"})
                        assert response.status_code == 200, response.text

            def by_sampler() -> dict[str, dict[str, set[str]]]:
                out: dict[str, dict[str, set[str]]] = {}
                for name, sink in (("a", sink_a), ("b", sink_b)):
                    for span in sink.spans():
                        out.setdefault(span.trace_id, {}).setdefault(name, set()).add(span.span_id)
                return out

            error_ids = {t.hex() for t, error in traces.items() if error}
            wait_until(lambda: error_ids <= {t for t, s in by_sampler().items()
                                           if sum(map(len, s.values())) == SPANS_PER_TRACE},
                     60, what="every error trace, whole, out of a sampler")
            landed = by_sampler()

    for trace_id, where in landed.items():
        assert len(where) == 1, f"trace {trace_id} was split across samplers: {where}"
        (spans,) = where.values()
        assert len(spans) == SPANS_PER_TRACE, f"trace {trace_id} arrived in part: {spans}"
    assert error_ids <= set(landed)  # keep-errors: every one
    assert {s for where in landed.values() for s in where} == {"a", "b"}, "both samplers got traces"
    ok_kept = set(landed) - error_ids
    assert len(ok_kept) < OK_TRACES, "the OK traces are thinned (10 %), not all kept"
