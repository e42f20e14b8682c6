"""An OTLP/HTTP sink in a process of its own, for the benchmarks (its CPU is not the servers').

    sink = Sink()                        # starts ``python otlp_sink.py``
    ... OTEL_EXPORTER_OTLP_ENDPOINT=sink.url (http/protobuf) ...
    sink.counts()                        # {"requests": {...}, "services": {"svc": {"spans", "traces", ...}}}
    sink.stop()

It answers each POST to ``/v1/traces``, ``/v1/metrics`` and ``/v1/logs`` with
200 and an empty protobuf body (a valid, empty Export*ServiceResponse), on
asyncio streams with keep-alive, as a Collector's OTLP receiver would. It
decodes every export (gzip-encoded bodies too) so a benchmark can check what
arrived: spans and distinct trace ids per ``service.name``, and exports per
signal and service. A body it cannot decode is answered 400 and counted.
``GET /count`` returns the tallies as JSON.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sys
from collections import defaultdict
from typing import Any

from loopback_process import LoopbackProcess, serve

SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
_BAD = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
_MISSING = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def _service(resource: Any) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return str(attribute.value.string_value)
    return "(no service.name)"


class Tallies:
    """What the sink received: exports per signal and service, spans and distinct traces per service."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        self._messages = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest,
                          "logs": ExportLogsServiceRequest}
        self.requests: dict[str, int] = defaultdict(int)
        self.exports: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.spans: dict[str, int] = defaultdict(int)
        self.traces: dict[str, set[bytes]] = defaultdict(set)
        self.undecoded = 0

    def add(self, signal: str, body: bytes, encoding: str) -> bool:
        """Count one export; False when its body is not a valid (optionally gzip-encoded) OTLP message."""
        self.requests[signal] += 1
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding not in ("", "identity"):
                raise ValueError(f"content-encoding {encoding}")
            message = self._messages[signal].FromString(body)
        except Exception:  # a corrupt body: the exporter's fault, reported in the counts
            self.undecoded += 1
            return False
        if signal == "traces":
            for resource_spans in message.resource_spans:
                service = _service(resource_spans.resource)
                self.exports["traces"][service] += 1
                for scope_spans in resource_spans.scope_spans:
                    self.spans[service] += len(scope_spans.spans)
                    self.traces[service].update(span.trace_id for span in scope_spans.spans)
        else:
            groups = message.resource_metrics if signal == "metrics" else message.resource_logs
            for group in groups:
                self.exports[signal][_service(group.resource)] += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        services = set(self.spans) | {s for by_service in self.exports.values() for s in by_service}
        return {
            "requests": dict(self.requests),
            "undecoded": self.undecoded,
            "services": {s: {"spans": self.spans.get(s, 0), "traces": len(self.traces.get(s, ())),
                             "exports": {signal: self.exports[signal].get(s, 0) for signal in SIGNALS.values()}}
                         for s in sorted(services)},
        }


async def _read_body(reader: asyncio.StreamReader, headers: dict[bytes, bytes]) -> bytes:
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if not size:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            chunks.append((await reader.readexactly(size + 2))[:-2])  # the chunk without its CRLF
    length = int(headers.get(b"content-length", b"0"))
    return await reader.readexactly(length) if length else b""


def sink_main() -> int:
    """Serve until terminated; prints ``PORT n`` once listening."""
    tallies = Tallies()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                method, _, rest = lines[0].partition(b" ")
                path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    headers[name.strip().lower()] = value.strip()
                body = await _read_body(reader, headers)
                if method == b"GET" and path == "/count":
                    payload = json.dumps(tallies.as_dict()).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(payload), payload))
                elif method == b"POST" and path in SIGNALS:
                    encoding = headers.get(b"content-encoding", b"").decode("latin-1").lower()
                    writer.write(_OK if tallies.add(SIGNALS[path], body, encoding) else _BAD)
                else:
                    writer.write(_MISSING)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    return serve(handle)


class Sink(LoopbackProcess):
    """The sink process: ``url`` is its OTLP/HTTP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``)."""

    def __init__(self) -> None:
        super().__init__(os.path.abspath(__file__), what="OTLP sink")
        self.url = self.base

    def counts(self) -> dict[str, Any]:
        counts: dict[str, Any] = self.get_json("/count")
        return counts


if __name__ == "__main__":
    sys.exit(sink_main())
