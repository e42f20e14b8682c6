"""Telemetry about telemetry: how many spans each sink exported, failed to export, or dropped.

``nexus.telemetry.spans{exporter, outcome}`` counts spans by outcome:
``exported`` and ``failed`` (the exporter said so, or raised) and ``dropped``
(the batch queue was full, so the SDK discarded the span). A dashboard can
then show when the pipeline itself is in trouble, and an alert can fire.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger("nexus_otel.telemetry")

SPANS_METRIC = "nexus.telemetry.spans"


def spans_counter(meter: Meter) -> Any:
    return meter.create_counter(SPANS_METRIC, unit="1",
                                description="Spans handled by each sink, by outcome: exported, failed, dropped.")


class MeteredSpanExporter(SpanExporter):
    """Wraps an exporter and counts what it exported and what it failed to."""

    def __init__(self, exporter: SpanExporter, name: str, counter: Any) -> None:
        self.exporter = exporter
        self._counter = counter
        self._exported = {"exporter": name, "outcome": "exported"}
        self._failed = {"exporter": name, "outcome": "failed"}
        for attributes in (self._exported, self._failed):  # series exist from the start, at 0
            counter.add(0, attributes)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception as exc:
            log.error("span exporter %s raised: %s", self._exported["exporter"], exc)
            result = SpanExportResult.FAILURE
        self._counter.add(len(spans), self._exported if result is SpanExportResult.SUCCESS else self._failed)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class MeteredBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans its full queue drops."""

    def __init__(self, exporter: SpanExporter, name: str, counter: Any, **kwargs: Any) -> None:
        super().__init__(MeteredSpanExporter(exporter, name, counter), **kwargs)
        self._counter = counter
        self._dropped = {"exporter": name, "outcome": "dropped"}
        counter.add(0, self._dropped)
        # The SDK's queue, looked up once (None if a future SDK moves it: drops then go uncounted).
        batch = getattr(self, "_batch_processor", None)
        self._queue = getattr(batch, "_queue", None)
        self._limit = getattr(batch, "_max_queue_size", None)
        if self._queue is None or self._limit is None:
            log.warning("cannot see the batch span processor's queue: dropped spans are not counted")

    def on_end(self, span: ReadableSpan) -> None:
        queue, limit = self._queue, self._limit
        if queue is not None and limit is not None and len(queue) >= limit and span.context.trace_flags.sampled:
            self._counter.add(1, self._dropped)
        super().on_end(span)
