"""The SDK floor for ``logs_cost.py``: the raw OpenTelemetry SDK making the request log's log records, nothing else.

A record processor that queues each execution record (as the request log does) and,
on a thread of its own that takes them in batches every 50 ms (as the request log's
worker does), builds the same log record (``execution_log_record``) and emits it to a
plain SDK ``LoggerProvider``: ``BatchLogRecordProcessor`` -> the SDK's own OTLP/HTTP
log exporter, unchanged. No redaction, no counting, no ``logging`` line, no capture.
What it costs over an app without logs is a ceiling for what nexus-otel's logs can cost
less than, while they go through the SDK's pipeline.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from nexus_otel import RecordProcessor
from nexus_otel.logs.execution_logs import execution_log_record

LINGER = 0.05


class SdkLogFloor(RecordProcessor):
    """Two log records an execution, by the raw SDK, to ``endpoint`` (an OTLP/HTTP logs URL)."""

    def __init__(self, endpoint: str) -> None:
        self.provider = LoggerProvider(resource=Resource.create({"service.name": "bench-http"}))
        self.provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint)))
        self.logger = self.provider.get_logger("nexus_otel.requests")
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="sdk-log-floor", daemon=True).start()

    def on_start(self, record: Any) -> None:
        self._queue.put(record)

    def on_end(self, record: Any) -> None:
        self._queue.put(record)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            time.sleep(LINGER)
            try:
                while True:
                    batch.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            for record in batch:
                level = logging.WARNING if record.failed else logging.INFO
                self.logger.emit(execution_log_record(record, level))
