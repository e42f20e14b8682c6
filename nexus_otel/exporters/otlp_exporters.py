"""The SDK's OTLP span exporters with their request bytes written by :class:`~.otlp_encoding.SpanEncoder`.

:class:`OTLPHttpSpanExporter` and :class:`OTLPGrpcSpanExporter` are the SDK's
exporters with only the body bytes taken from a :class:`SpanEncoder`: endpoint,
headers, TLS, compression, timeout, retries with backoff, the exporter's own
metrics and shutdown stay the SDK's. Neither SDK exporter has a public hook for
the serialized bytes, so each relies on internals of
``opentelemetry-exporter-otlp-proto-{http,grpc}`` (checked at construction; if a
future SDK moves them, construction raises :class:`UnsupportedExporterVersion` and the
app falls back to the SDK's exporter with a warning; ``NEXUS_OTEL_OTLP_ENCODER=stock``
selects the SDK's exporters unchanged):

- http/protobuf: ``export`` is overridden. It repeats the SDK's ten lines around
  the encoding (shutdown check, the exporter-metrics operation, the request-size
  limit) and hands the bytes to the SDK's own HTTP client (``_client.export``),
  which compresses, sends and retries.
- gRPC: the exporter mixin's ``_translate_data`` hook returns our bytes, and the
  channel's stub is replaced (also on the mixin's reconnects) by one whose
  ``Export`` method sends bytes as they are (an identity request serializer on
  ``/opentelemetry.proto.collector.trace.v1.TraceService/Export``); the mixin's
  retry loop, deadline, metadata and channel compression are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as _SdkGrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as _SdkHttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from ..errors import ConfigurationError
from .otlp_encoding import SpanEncoder

__all__ = ["OTLPGrpcSpanExporter", "OTLPHttpSpanExporter", "UnsupportedExporterVersion"]

_logger = logging.getLogger(__name__)


class UnsupportedExporterVersion(ConfigurationError):
    """The installed SDK exporter lacks an internal the fast exporters rely on."""


def _require(kind: str, missing: list[str]) -> None:
    """Fail at construction when the SDK exporter lacks an internal this module relies on."""
    if missing:
        raise UnsupportedExporterVersion(
            "NEXUS_OTEL_OTLP_ENCODER", "fast",
            f"stock: this opentelemetry-exporter-otlp-proto-{kind} has no {', '.join(missing)}")


class OTLPHttpSpanExporter(_SdkHttpSpanExporter):
    """The SDK's OTLP http/protobuf span exporter, its request bodies written by a :class:`SpanEncoder`.

    Takes the SDK exporter's arguments, plus ``encoder`` (default: a new one).
    """

    def __init__(self, *args: Any, encoder: SpanEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter, then check the internals :meth:`export` uses."""
        super().__init__(*args, **kwargs)
        _require("http", [name for name in ("_shutdown", "_metrics", "_max_request_size", "_client")
                          if not hasattr(self, name)])
        self._encoder = encoder if encoder is not None else SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """The SDK's ``export`` with our bytes; its HTTP client compresses, sends and retries."""
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                body = self._encoder.encode(spans)
            except Exception as error:
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < self._max_request_size < len(body):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(body), self._max_request_size)
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes.")
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None)
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _as_is(body: bytes) -> bytes:
    """The request serializer for bytes already serialized."""
    return body


class _EncodedTraceServiceStub:
    """A TraceService stub whose ``Export`` takes the request's serialized bytes."""

    def __init__(self, channel: Any) -> None:
        """Bind ``Export`` on ``channel``."""
        self.Export = channel.unary_unary(
            _EXPORT_METHOD, request_serializer=_as_is,
            response_deserializer=ExportTraceServiceResponse.FromString, _registered_method=True)


class OTLPGrpcSpanExporter(_SdkGrpcSpanExporter):
    """The SDK's OTLP gRPC span exporter, its requests written by a :class:`SpanEncoder`.

    Takes the SDK exporter's arguments, plus ``encoder`` (default: a new one).
    """

    def __init__(self, *args: Any, encoder: SpanEncoder | None = None, **kwargs: Any) -> None:
        """Build the SDK exporter (whose channel set-up calls :meth:`_initialize_channel_and_stub`)."""
        self._encoder = encoder if encoder is not None else SpanEncoder()
        super().__init__(*args, **kwargs)
        # The mixin must have built its channel through the hook below (so our stub is in place).
        _require("grpc", [] if isinstance(getattr(self, "_client", None), _EncodedTraceServiceStub)
                 else ["_initialize_channel_and_stub hook"])

    def _initialize_channel_and_stub(self) -> None:
        """The SDK's channel (at start and on its reconnects), with the stub that sends bytes as they are."""
        super()._initialize_channel_and_stub()
        self._client = _EncodedTraceServiceStub(self._channel)  # type: ignore[assignment]  # the SDK types it None

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        """The request bytes, in place of the SDK's message object."""
        return self._encoder.encode(data)
