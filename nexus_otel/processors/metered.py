"""Telemetry about telemetry: how many spans and log records each sink exported, failed to export, or dropped.

``nexus.telemetry.spans{exporter, outcome}`` and ``nexus.telemetry.log_records{exporter, outcome}``
count by outcome: ``exported`` and ``failed`` (the exporter said so, or raised) and
``dropped`` (the batch queue was full, so the SDK discarded the item). A dashboard can
then show when the pipeline itself is in trouble, and an alert can fire.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import Meter
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

log = logging.getLogger("nexus_otel.telemetry")

SPANS_METRIC = "nexus.telemetry.spans"
LOG_RECORDS_METRIC = "nexus.telemetry.log_records"


def spans_counter(meter: Meter) -> Any:
    return meter.create_counter(SPANS_METRIC, unit="1",
                                description="Spans handled by each sink, by outcome: exported, failed, dropped.")


def log_records_counter(meter: Meter) -> Any:
    return meter.create_counter(
        LOG_RECORDS_METRIC, unit="1",
        description="Log records handled by each sink, by outcome: exported, failed, dropped.")


class _Outcomes:
    """One sink's series of a counter (``exporter=<name>``), each there from the start at 0."""

    def __init__(self, counter: Any, name: str, outcomes: tuple[str, ...]) -> None:
        self.counter = counter
        self.name = name
        self.attributes = {outcome: {"exporter": name, "outcome": outcome} for outcome in outcomes}
        for attributes in self.attributes.values():
            counter.add(0, attributes)

    def add(self, n: int, outcome: str) -> None:
        self.counter.add(n, self.attributes[outcome])


def _batch_queue(processor: Any, what: str) -> tuple[Any, int | None]:
    """The SDK batch processor's queue and its bound, looked up once (None if a future SDK moves them: drops then
    go uncounted, and this says so)."""
    batch = getattr(processor, "_batch_processor", None)
    queue, limit = getattr(batch, "_queue", None), getattr(batch, "_max_queue_size", None)
    if queue is None or limit is None:
        log.warning("cannot see the batch %s processor's queue: dropped %ss are not counted", what, what)
        return None, None
    return queue, limit


class MeteredSpanExporter(SpanExporter):
    """Wraps an exporter and counts what it exported and what it failed to."""

    def __init__(self, exporter: SpanExporter, name: str, counter: Any) -> None:
        self.exporter = exporter
        self._outcomes = _Outcomes(counter, name, ("exported", "failed"))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.exporter.export(spans)
        except Exception as exc:
            log.error("span exporter %s raised: %s", self._outcomes.name, exc)
            result = SpanExportResult.FAILURE
        self._outcomes.add(len(spans), "exported" if result is SpanExportResult.SUCCESS else "failed")
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class MeteredBatchSpanProcessor(BatchSpanProcessor):
    """A ``BatchSpanProcessor`` that counts the spans its full queue drops."""

    def __init__(self, exporter: SpanExporter, name: str, counter: Any, **kwargs: Any) -> None:
        super().__init__(MeteredSpanExporter(exporter, name, counter), **kwargs)
        self._outcomes = _Outcomes(counter, name, ("dropped",))
        self._queue, self._limit = _batch_queue(self, "span")

    def on_end(self, span: ReadableSpan) -> None:
        queue, limit = self._queue, self._limit
        if queue is not None and limit is not None and len(queue) >= limit and span.context.trace_flags.sampled:
            self._outcomes.add(1, "dropped")
        super().on_end(span)


class MeteredLogRecordExporter(LogRecordExporter):
    """Wraps a log exporter and counts what it exported and what it failed to (it said so, or raised)."""

    def __init__(self, exporter: LogRecordExporter, name: str, counter: Any) -> None:
        self.exporter = exporter
        self._outcomes = _Outcomes(counter, name, ("exported", "failed"))

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        try:
            result = self.exporter.export(batch)
        except Exception:
            self._outcomes.add(len(batch), "failed")
            raise  # the SDK's batch processor reports it (on its own logger, which capture never exports)
        self._outcomes.add(len(batch), "exported" if result is LogRecordExportResult.SUCCESS else "failed")
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)


class MeteredBatchLogRecordProcessor(BatchLogRecordProcessor):
    """A ``BatchLogRecordProcessor`` whose exports and failures are counted, and the records its full queue drops."""

    def __init__(self, exporter: LogRecordExporter, name: str, counter: Any, **kwargs: Any) -> None:
        super().__init__(MeteredLogRecordExporter(exporter, name, counter), **kwargs)
        self._outcomes = _Outcomes(counter, name, ("dropped",))
        self._queue, self._limit = _batch_queue(self, "log record")

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        queue, limit = self._queue, self._limit
        if queue is not None and limit is not None and len(queue) >= limit:
            self._outcomes.add(1, "dropped")
        super().on_emit(log_record)
