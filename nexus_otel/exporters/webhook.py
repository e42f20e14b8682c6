"""Webhooks as a span exporter: one signed JSON payload per finished workflow, delivered durably.

``export`` only queues (a local SQLite insert on the batch processor's
thread); a worker thread posts with httpx, signed per the Standard Webhooks
specification (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``:
HMAC-SHA256, via the ``standardwebhooks`` package), so any Standard Webhooks
library verifies it. Timeouts, connection errors, 429 and 5xx are retried
with backoff and jitter (``Retry-After`` is honoured); other 4xx answers and
exhausted retries go to the dead letters. A retry keeps its ``webhook-id``, so
receivers can drop duplicates; its timestamp and signature are fresh.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import uuid
from email.utils import parsedate_to_datetime
from typing import Any, Sequence

import httpx
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from standardwebhooks.webhooks import Webhook

from .outbox import OK, Message, Outbox, OutboxWorker, Outcome, RetryPolicy
from .workflow_records import workflow_record

log = logging.getLogger("nexus_otel.webhooks")
RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


def payload_of(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON body: the seed's fields (workflow, status, duration, timestamp) and more."""
    return {
        "type": f"workflow.{record['status']}",
        "workflow": record["workflow"],
        "status": record["status"],
        "duration": record["duration"],
        "timestamp": record["timestamp"],
        "completed_at": record["completed_at"],
        "workflow_id": record["workflow_id"],
        "trace_id": record["trace_id"],
        "error_type": record["error_type"],
        "session_id": record["session_id"],
        "channel": record["channel"],
    }


class WebhookExporter(SpanExporter):
    """Queues a payload per finished workflow span for each URL; a worker delivers them."""

    def __init__(self, urls: Sequence[str], outbox: Outbox, *, secret: str | None = None,
                 workflows: frozenset[str] | None = None, statuses: frozenset[str] = frozenset({"completed"}),
                 policy: RetryPolicy = RetryPolicy(), timeout: float = 5.0, meter: Meter | None = None) -> None:
        self.urls = tuple(urls)
        self.outbox = outbox
        self.workflows = workflows
        self.statuses = statuses
        self.timeout = timeout
        self._signer = Webhook(secret) if secret else None
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
                                    follow_redirects=False)
        self._deliveries = meter.create_counter(
            "nexus.webhook.deliveries", unit="1",
            description="Webhook deliveries by outcome: queued, delivered, retried, failed.",
        ) if meter else None
        if meter is not None:
            meter.create_observable_gauge(
                "nexus.webhook.outbox", callbacks=[self._observe], unit="1",
                description="Webhook messages waiting (pending) or given up (dead).",
            )
        self.counts = {"queued": 0, "delivered": 0, "retried": 0, "failed": 0}
        self.worker = OutboxWorker(outbox, self._deliver, policy=policy, name="webhooks",
                                   on_outcome=self._count)

    # -- SpanExporter ------------------------------------------------------------------
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        items: list[tuple[str, str, dict[str, Any]]] = []
        for span in spans:
            record = workflow_record(span)
            if record is None or record["status"] not in self.statuses:
                continue
            if self.workflows is not None and record["workflow"] not in self.workflows:
                continue
            message_id = f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, record['workflow_id']).hex}"
            payload = payload_of(record)
            items.extend((message_id, url, payload) for url in self.urls)
        if not items:
            return SpanExportResult.SUCCESS
        try:
            queued = self.outbox.put(items)
        except Exception as exc:  # the disk is full or gone: say so loudly, count what was lost
            log.error("cannot queue %d webhook payloads: %s", len(items), exc)
            self._count("failed", len(items))
            return SpanExportResult.FAILURE
        self._count("queued", queued)
        self.worker.notify()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.worker.stop()
        self._client.close()
        self.outbox.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    # -- delivery ----------------------------------------------------------------------
    def _deliver(self, batch: list[Message]) -> list[Outcome]:
        return [self._post(message) for message in batch]

    def _post(self, message: Message) -> Outcome:
        body = json.dumps(message.payload, separators=(",", ":"))
        now = _dt.datetime.now(_dt.timezone.utc)
        headers = {
            "content-type": "application/json",
            "user-agent": "nexus-otel-webhooks",
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(message.message_id, now, body)
        try:
            response = self._client.post(message.destination, content=body.encode(), headers=headers)
        except httpx.TimeoutException as exc:
            return Outcome(False, f"timeout: {type(exc).__name__}")
        except httpx.TransportError as exc:
            return Outcome(False, f"connection error: {type(exc).__name__}: {exc}")
        if 200 <= response.status_code < 300:
            return OK
        error = f"HTTP {response.status_code}"
        if response.status_code in RETRY_STATUSES:
            return Outcome(False, error, retry=True, retry_after=_retry_after(response.headers.get("retry-after")))
        return Outcome(False, error, retry=False)

    def _count(self, outcome: str, n: int) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        if self._deliveries is not None and n:
            self._deliveries.add(n, {"outcome": outcome})

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        try:
            counts = self.outbox.counts()
        except Exception:
            return []
        return [Observation(counts.get("pending", 0), {"state": "pending"}),
                Observation(counts.get("dead", 0), {"state": "dead"})]


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - _dt.datetime.now(_dt.timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None
