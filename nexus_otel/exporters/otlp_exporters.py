"""The SDK's OTLP span and log record exporters with their request bytes written by nexus-otel's encoders.

:class:`OTLPHttpSpanExporter` and :class:`OTLPGrpcSpanExporter` (bytes from a
:class:`~.otlp_encoding.SpanEncoder`), :class:`OTLPHttpLogExporter` and
:class:`OTLPGrpcLogExporter` (bytes from a :class:`~.otlp_encoding.LogEncoder`)
are the SDK's exporters with only the body bytes replaced: endpoint, headers,
TLS, compression, timeout, retries with backoff, the exporter's own metrics and
shutdown stay the SDK's. No SDK exporter has a public hook for the serialized
bytes, so each relies on internals of ``opentelemetry-exporter-otlp-proto-{http,grpc}``
(checked at construction; if a future SDK moves them, construction raises
:class:`UnsupportedExporterVersion` and the app falls back to the SDK's exporter
with a warning; ``NEXUS_OTEL_OTLP_ENCODER=stock`` selects the SDK's exporters
unchanged):

- http/protobuf: ``export`` is overridden. It repeats the SDK's ten lines around
  the encoding (shutdown check, the exporter-metrics operation, the request-size
  limit) and hands the bytes to the SDK's own HTTP client (``_client.export``),
  which compresses, sends and retries.
- gRPC: the exporter mixin's ``_translate_data`` hook returns our bytes, and the
  channel's stub is replaced (also on the mixin's reconnects) by one whose
  ``Export`` method sends bytes as they are (an identity request serializer on
  ``/opentelemetry.proto.collector.{trace,logs}.v1.{Trace,Logs}Service/Export``);
  the mixin's retry loop, deadline, metadata and channel compression are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as _SdkGrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _SdkGrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as _SdkHttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _SdkHttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from ..errors import ConfigurationError
from .otlp_encoding import LogEncoder, SpanEncoder

__all__ = [
    "OTLPGrpcLogExporter", "OTLPGrpcSpanExporter", "OTLPHttpLogExporter", "OTLPHttpSpanExporter",
    "UnsupportedExporterVersion",
]

_logger = logging.getLogger(__name__)


class UnsupportedExporterVersion(ConfigurationError):
    """The installed SDK exporter lacks an internal the fast exporters rely on."""


def _require(kind: str, missing: list[str]) -> None:
    """Fail at construction when the SDK exporter lacks an internal this module relies on."""
    if missing:
        raise UnsupportedExporterVersion(
            "NEXUS_OTEL_OTLP_ENCODER", "fast",
            f"stock: this opentelemetry-exporter-otlp-proto-{kind} has no {', '.join(missing)}")


_HTTP_INTERNALS = ("_shutdown", "_metrics", "_max_request_size", "_client")
"""What :class:`_EncodedHttpExport` uses of the SDK's http/protobuf exporters."""


class _EncodedHttpExport:
    """What the SDK's http/protobuf span and log exporters do in ``export``, with our bytes: mixed in before the
    SDK class, whose internals (:data:`_HTTP_INTERNALS`) it uses as its own."""

    _shutdown: bool
    _metrics: Any
    _max_request_size: int
    _client: Any

    def _export_encoded(self, encode: Callable[[Any], bytes], batch: Sequence[Any], what: str) -> bool:
        """The SDK's ``export`` with ``encode``'s bytes (``what`` names the batch in its log lines, as the SDK's
        do); its HTTP client compresses, sends and retries. True when the receiver took the batch."""
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return False
        with self._metrics.export_operation(len(batch)) as result:
            try:
                body = encode(batch)
            except Exception as error:
                _logger.error("Failed to encode %s batch: %s", what, error)
                result.error = error
                return False
            limit = self._max_request_size
            if 0 < limit < len(body):
                _logger.warning(
                    "Dropping %s batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    what, len(body), limit)
                result.error = RequestPayloadTooLargeError(
                    f"Serialized {what} request size {len(body)} bytes exceeds max_request_size {limit} bytes.")
                return False
            sent = self._client.export(body)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None)
                return False
        return True


class OTLPHttpSpanExporter(_EncodedHttpExport, _SdkHttpSpanExporter):
    """The SDK's OTLP http/protobuf span exporter, its request bodies written by a :class:`SpanEncoder`.

    Takes the SDK exporter's arguments, plus ``encoder`` (default: a new one).
    """

    def __init__(self, *args: Any, encoder: SpanEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter, then check the internals :meth:`export` uses."""
        super().__init__(*args, **kwargs)
        _require("http", [name for name in _HTTP_INTERNALS if not hasattr(self, name)])
        self._encoder = encoder if encoder is not None else SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The SDK's ``export`` with our bytes; its HTTP client compresses, sends and retries."""
        if self._export_encoded(self._encoder.encode, spans, "span"):
            return SpanExportResult.SUCCESS
        return SpanExportResult.FAILURE


class OTLPHttpLogExporter(_EncodedHttpExport, _SdkHttpLogExporter):
    """The SDK's OTLP http/protobuf log record exporter, its request bodies written by a :class:`LogEncoder`.

    Takes the SDK exporter's arguments, plus ``encoder`` (default: a new one).
    """

    def __init__(self, *args: Any, encoder: LogEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter, then check the internals :meth:`export` uses."""
        super().__init__(*args, **kwargs)
        _require("http", [name for name in _HTTP_INTERNALS if not hasattr(self, name)])
        self._encoder = encoder if encoder is not None else LogEncoder()

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        """The SDK's ``export`` with our bytes; its HTTP client compresses, sends and retries."""
        if self._export_encoded(self._encoder.encode, batch, "logs"):
            return LogRecordExportResult.SUCCESS
        return LogRecordExportResult.FAILURE


_TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def _as_is(body: bytes) -> bytes:
    """The request serializer for bytes already serialized."""
    return body


class _EncodedServiceStub:
    """An OTLP service stub whose ``Export`` takes the request's serialized bytes."""

    def __init__(self, channel: Any, method: str, response: Any) -> None:
        """Bind ``Export`` (the full ``method`` name, answered by a ``response`` message) on ``channel``."""
        self.Export = channel.unary_unary(
            method, request_serializer=_as_is, response_deserializer=response.FromString, _registered_method=True)


def _require_byte_stub(exporter: Any) -> None:
    """The gRPC mixin must have built its channel through our hook (so the byte stub is in place)."""
    _require("grpc", [] if isinstance(getattr(exporter, "_client", None), _EncodedServiceStub)
             else ["_initialize_channel_and_stub hook"])


class OTLPGrpcSpanExporter(_SdkGrpcSpanExporter):
    """The SDK's OTLP gRPC span exporter, its requests written by a :class:`SpanEncoder`.

    Takes the SDK exporter's arguments, plus ``encoder`` (default: a new one).
    """

    def __init__(self, *args: Any, encoder: SpanEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter (whose channel set-up calls :meth:`_initialize_channel_and_stub`)."""
        self._encoder = encoder if encoder is not None else SpanEncoder()
        super().__init__(*args, **kwargs)
        _require_byte_stub(self)

    def _initialize_channel_and_stub(self) -> None:
        """The SDK's channel (at start and on its reconnects), with the stub that sends bytes as they are."""
        super()._initialize_channel_and_stub()
        self._client = _EncodedServiceStub(  # type: ignore[assignment]  # the SDK types it None
            self._channel, _TRACE_EXPORT, ExportTraceServiceResponse)

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        """The request bytes, in place of the SDK's message object."""
        return self._encoder.encode(data)


class OTLPGrpcLogExporter(_SdkGrpcLogExporter):
    """The SDK's OTLP gRPC log record exporter, its requests written by a :class:`LogEncoder`.

    Takes the SDK exporter's arguments, plus ``encoder`` (default: a new one).
    """

    def __init__(self, *args: Any, encoder: LogEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter (whose channel set-up calls :meth:`_initialize_channel_and_stub`)."""
        self._encoder = encoder if encoder is not None else LogEncoder()
        super().__init__(*args, **kwargs)
        _require_byte_stub(self)

    def _initialize_channel_and_stub(self) -> None:
        """The SDK's channel (at start and on its reconnects), with the stub that sends bytes as they are."""
        super()._initialize_channel_and_stub()
        self._client = _EncodedServiceStub(  # type: ignore[assignment]  # the SDK types it None
            self._channel, _LOGS_EXPORT, ExportLogsServiceResponse)

    def _translate_data(self, data: Sequence[ReadableLogRecord]) -> bytes:  # type: ignore[override]
        """The request bytes, in place of the SDK's message object."""
        return self._encoder.encode(data)
