"""Minimal real OTLP receivers (http/protobuf and gRPC) on 127.0.0.1, decoding what the exporters send."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

LOOPBACK = "127.0.0.1"
TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
LOGS_PATH = "/v1/logs"


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span, flattened with its resource and scope."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str


@dataclass(frozen=True)
class ReceivedLog:
    """One decoded log record, flattened with its resource and scope (ids in hex, empty when unset)."""

    body: Any
    severity_number: int
    severity_text: str
    trace_id: str
    span_id: str
    event_name: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int = 0
    flags: int = 0


@dataclass(frozen=True)
class ReceivedPoint:
    """One decoded metric data point (number or histogram)."""

    attributes: dict[str, Any]
    time_unix_nano: int
    value: float | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: tuple[int, ...] = ()
    explicit_bounds: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReceivedMetric:
    """One decoded metric from one export request, flattened with its resource and scope."""

    name: str
    unit: str
    kind: str
    is_monotonic: bool | None
    resource: dict[str, Any]
    scope: str
    points: tuple[ReceivedPoint, ...] = field(default_factory=tuple)
    temporality: int = 0  # OTLP AggregationTemporality: 1 delta, 2 cumulative (0: not a sum or histogram)


def any_value(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` into the matching Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, which)


def attributes_of(pairs: Any) -> dict[str, Any]:
    """Convert repeated OTLP ``KeyValue`` into a plain dict."""
    return {kv.key: any_value(kv.value) for kv in pairs}


def flatten_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    """Every span of an export request, with hex ids and its resource attributes."""
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = attributes_of(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                out.append(ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes=attributes_of(span.attributes),
                    resource=resource,
                    scope=ss.scope.name,
                ))
    return out


def flatten_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[ReceivedLog]:
    """Every log record of an export request, with hex ids and its resource attributes."""
    out: list[ReceivedLog] = []
    for rl in request.resource_logs:
        resource = attributes_of(rl.resource.attributes)
        for sl in rl.scope_logs:
            for record in sl.log_records:
                out.append(ReceivedLog(
                    body=any_value(record.body),
                    severity_number=record.severity_number,
                    severity_text=record.severity_text,
                    trace_id=record.trace_id.hex(),
                    span_id=record.span_id.hex(),
                    event_name=record.event_name,
                    attributes=attributes_of(record.attributes),
                    resource=resource,
                    scope=sl.scope.name,
                    time_unix_nano=record.time_unix_nano,
                    flags=record.flags,
                ))
    return out


def _number(point: Any) -> float | None:
    """The value of an OTLP ``NumberDataPoint`` (int or double)."""
    which = point.WhichOneof("value")
    return None if which is None else getattr(point, which)


def flatten_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[ReceivedMetric]:
    """Every metric of an export request, with its points and resource attributes."""
    out: list[ReceivedMetric] = []
    for rm in request.resource_metrics:
        resource = attributes_of(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data") or ""
                data = getattr(metric, kind) if kind else None
                points: list[ReceivedPoint] = []
                for p in getattr(data, "data_points", ()):
                    common = {"attributes": attributes_of(p.attributes), "time_unix_nano": p.time_unix_nano}
                    if kind in ("sum", "gauge"):
                        points.append(ReceivedPoint(value=_number(p), **common))
                    elif kind == "histogram":
                        points.append(ReceivedPoint(
                            count=p.count, sum=p.sum, bucket_counts=tuple(p.bucket_counts),
                            explicit_bounds=tuple(p.explicit_bounds), **common,
                        ))
                    else:
                        points.append(ReceivedPoint(**common))
                out.append(ReceivedMetric(
                    name=metric.name, unit=metric.unit, kind=kind,
                    is_monotonic=data.is_monotonic if kind == "sum" else None,
                    resource=resource, scope=sm.scope.name, points=tuple(points),
                    temporality=getattr(data, "aggregation_temporality", 0) if kind in ("sum", "histogram") else 0,
                ))
    return out


class _Store:
    """Thread-safe storage of decoded export requests, shared by both receivers."""

    endpoint: str

    def __init__(self) -> None:
        """Start with nothing received."""
        self._lock = threading.Lock()
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.content_encodings: list[str] = []
        self.request_headers: list[dict[str, str]] = []
        self.errors: list[str] = []

    def _add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Keep one decoded trace export request."""
        with self._lock:
            self.trace_requests.append(request)

    def _add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        """Keep one decoded metrics export request."""
        with self._lock:
            self.metric_requests.append(request)

    def _add_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        """Keep one decoded logs export request."""
        with self._lock:
            self.log_requests.append(request)

    def logs(self) -> list[ReceivedLog]:
        """All log records received so far, flattened, in arrival order."""
        with self._lock:
            requests = list(self.log_requests)
        return [r for request in requests for r in flatten_logs(request)]

    def spans(self) -> list[ReceivedSpan]:
        """All spans received so far, flattened, in arrival order."""
        with self._lock:
            requests = list(self.trace_requests)
        return [s for r in requests for s in flatten_spans(r)]

    def metrics(self) -> list[ReceivedMetric]:
        """All metrics received so far (one entry per metric per request), in arrival order."""
        with self._lock:
            requests = list(self.metric_requests)
        return [m for r in requests for m in flatten_metrics(r)]

    def metric_names(self) -> set[str]:
        """Names of every metric received so far."""
        return {m.name for m in self.metrics()}

    def latest_points(self, name: str) -> dict[frozenset, tuple[ReceivedMetric, ReceivedPoint]]:
        """For metric ``name``, the newest point per attribute set (exports repeat cumulative points)."""
        latest: dict[frozenset, tuple[ReceivedMetric, ReceivedPoint]] = {}
        for metric in self.metrics():
            if metric.name != name:
                continue
            for point in metric.points:
                key = frozenset(point.attributes.items())
                if key not in latest or point.time_unix_nano >= latest[key][1].time_unix_nano:
                    latest[key] = (metric, point)
        return latest

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> bool:
        """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; return whether it held."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


def _decode_body(body: bytes, encoding: str) -> bytes:
    """Undo an HTTP ``Content-Encoding`` (gzip, deflate or none)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class _OTLPHandler(http.server.BaseHTTPRequestHandler):
    """Handles ``POST /v1/traces``, ``POST /v1/metrics`` and ``POST /v1/logs`` with protobuf bodies."""

    server: _OTLPHTTPServer

    def do_POST(self) -> None:
        """Decode one OTLP export request and answer with an empty protobuf response."""
        kinds = {
            TRACES_PATH: (trace_service_pb2.ExportTraceServiceRequest,
                          trace_service_pb2.ExportTraceServiceResponse, self.server.store._add_traces),
            METRICS_PATH: (metrics_service_pb2.ExportMetricsServiceRequest,
                           metrics_service_pb2.ExportMetricsServiceResponse, self.server.store._add_metrics),
            LOGS_PATH: (logs_service_pb2.ExportLogsServiceRequest,
                        logs_service_pb2.ExportLogsServiceResponse, self.server.store._add_logs),
        }
        path = self.path.split("?", 1)[0]
        if path not in kinds:
            self._reply(404, b"", "text/plain")
            return
        request_type, response_type, add = kinds[path]
        try:
            encoding = self.headers.get("Content-Encoding", "")
            body = _decode_body(self._read_body(), encoding)
            request = request_type.FromString(body)
        except Exception as exc:  # a malformed request must fail the test, not hang it
            self.server.store.errors.append(f"{path}: {type(exc).__name__}: {exc}")
            self._reply(400, str(exc).encode(), "text/plain")
            return
        with self.server.store._lock:
            self.server.store.content_encodings.append(encoding.strip().lower())
            self.server.store.request_headers.append({k.lower(): v for k, v in self.headers.items()})
        add(request)
        self._reply(200, response_type().SerializeToString(), "application/x-protobuf")

    def _read_body(self) -> bytes:
        """Read the request body, by Content-Length or chunked transfer encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        """Send a complete response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the test asserts on decoded data, not access logs."""


class _OTLPHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows where to store what it decodes."""

    daemon_threads = True

    def __init__(self, store: HTTPReceiver) -> None:
        """Bind 127.0.0.1 on a free port."""
        super().__init__((LOOPBACK, 0), _OTLPHandler)
        self.store = store


class HTTPReceiver(_Store):
    """An OTLP/HTTP (protobuf) receiver on 127.0.0.1 and a free port; use as a context manager."""

    def __init__(self) -> None:
        """Create the receiver; it binds on ``__enter__``."""
        super().__init__()
        self._server: _OTLPHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    def __enter__(self) -> HTTPReceiver:
        """Bind, start serving in a thread, and set ``endpoint``."""
        self._server = _OTLPHTTPServer(self)
        host, port = self._server.server_address[:2]
        assert host == LOOPBACK
        self.endpoint = f"http://{LOOPBACK}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="otlp-http-receiver", daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """gRPC TraceService that stores each request."""

    def __init__(self, store: _Store) -> None:
        """Store requests in ``store``."""
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        """Keep the request; answer with an empty response."""
        self._store._add_traces(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _MetricsService(metrics_service_pb2_grpc.MetricsServiceServicer):
    """gRPC MetricsService that stores each request."""

    def __init__(self, store: _Store) -> None:
        """Store requests in ``store``."""
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        """Keep the request; answer with an empty response."""
        self._store._add_metrics(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    """gRPC LogsService that stores each request."""

    def __init__(self, store: _Store) -> None:
        """Store requests in ``store``."""
        self._store = store

    def Export(self, request: Any, context: Any) -> Any:
        """Keep the request; answer with an empty response."""
        self._store._add_logs(request)
        return logs_service_pb2.ExportLogsServiceResponse()


class GRPCReceiver(_Store):
    """An OTLP/gRPC receiver on 127.0.0.1 and a free port (insecure); use as a context manager."""

    def __init__(self) -> None:
        """Create the receiver; it binds on ``__enter__``."""
        super().__init__()
        self._server: grpc.Server | None = None
        self.endpoint = ""

    def __enter__(self) -> GRPCReceiver:
        """Bind, start the server, and set ``endpoint``."""
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsService(self), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsService(self), self._server)
        port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        assert port > 0, "could not bind a gRPC port on 127.0.0.1"
        self._server.start()
        self.endpoint = f"http://{LOOPBACK}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the server and wait (bounded) for it to finish."""
        if self._server is not None:
            self._server.stop(grace=None).wait(timeout=5)


def receiver_for(protocol: str) -> HTTPReceiver | GRPCReceiver:
    """A new (unstarted) receiver for an ``OTEL_EXPORTER_OTLP_PROTOCOL`` value."""
    if protocol == "grpc":
        return GRPCReceiver()
    if protocol == "http/protobuf":
        return HTTPReceiver()
    raise ValueError(f"no receiver for protocol {protocol!r}")
