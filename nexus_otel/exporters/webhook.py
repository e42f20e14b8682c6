"""Webhooks as a record processor: one signed JSON payload per finished workflow, delivered durably.

``on_end`` only queues: a local SQLite commit, done before the workflow's
caller gets its result, so a crash after that loses no payload. A worker
thread posts with httpx, signed per the Standard Webhooks
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
import time
from email.utils import parsedate_to_datetime
from typing import Any, Sequence

import httpx
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from standardwebhooks.webhooks import Webhook

from ..records import ExecutionRecord, RecordProcessor
from .delivery import NOT_ATTEMPTED, OK, OutboxWorker, Outcome, RetryPolicy
from .outbox import WEBHOOK_SCOPE, Message, Outbox, OutboxView
from .outcomes import OutcomeCounts

log = logging.getLogger("nexus_otel.webhooks")
RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


def payload_of(record: dict[str, Any]) -> dict[str, Any]:
    """The JSON body: Kailash Nexus's plugin API's fields (workflow, status, duration, timestamp) and more."""
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


def body_of(stored: Any) -> dict[str, Any]:
    """The JSON body for a stored payload: a record's fields (or a finished payload, as queued before 0.2)."""
    if isinstance(stored, list):
        return payload_of(ExecutionRecord.from_json(stored).as_dict())
    return stored


def message_id_of(workflow_id: str) -> str:
    """The ``webhook-id`` of an execution's payload: stable across retries and restarts."""
    return f"msg_{workflow_id}"


class WebhookExporter(RecordProcessor):
    """Queues a payload per finished workflow for each URL; a worker delivers them.

    ``start()`` starts the delivery worker (the plugin does this); until then
    payloads are only queued.
    """

    def __init__(self, urls: Sequence[str], outbox: Outbox | OutboxView, *, secret: str | None = None,
                 workflows: frozenset[str] | None = None, statuses: frozenset[str] = frozenset({"completed"}),
                 policy: RetryPolicy = RetryPolicy(), timeout: float = 5.0, meter: Meter | None = None) -> None:
        self.urls = tuple(urls)
        # The outbox file may be shared with other sinks: this exporter sees webhook messages only.
        self.outbox = outbox.view(WEBHOOK_SCOPE) if isinstance(outbox, Outbox) else outbox
        self.workflows = workflows
        self.statuses = statuses
        self.timeout = timeout
        self._signer = Webhook(secret) if secret else None
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
                                    follow_redirects=False)
        self._outcomes = OutcomeCounts(("queued", "delivered", "retried", "failed"))
        self.counts = self._outcomes.counts
        if meter is not None:
            self._outcomes.observe_as(meter, "nexus.webhook.deliveries",
                                      "Webhook deliveries by outcome: queued, delivered, retried, failed.")
        if meter is not None:
            meter.create_observable_gauge(
                "nexus.webhook.outbox", callbacks=[self._observe], unit="1",
                description="Webhook messages waiting (pending) or given up (dead).",
            )
        self.worker = OutboxWorker(self.outbox, self._deliver, policy=policy, name="webhooks",
                                   on_outcome=self._count)

    def start(self) -> "WebhookExporter":
        self.worker.start()
        return self

    # -- RecordProcessor -----------------------------------------------------------------
    def on_end(self, record: ExecutionRecord) -> None:
        if record.status not in self.statuses:
            return
        if self.workflows is not None and record.workflow not in self.workflows:
            return
        message_id = message_id_of(record.workflow_id)
        stored = record.to_json()  # the payload is made at delivery, off the workflow's thread
        items = [(message_id, url, stored) for url in self.urls]
        try:
            queued = self.outbox.put(items)
        except Exception as exc:  # the disk is full or gone: say so loudly, count what was lost
            log.error("cannot queue %d webhook payloads of %s: %s", len(items), record.workflow_id, exc)
            self._count("failed", len(items))
            return
        self._count("queued", queued)
        self.worker.notify()

    def shutdown(self, timeout: float = 10.0) -> None:
        if self.worker.stop(timeout):
            self._client.close()
            self.outbox.close()

    # -- delivery ----------------------------------------------------------------------
    def _deliver(self, batch: list[Message], deadline: float | None = None) -> list[Outcome]:
        outcomes = []
        for message in batch:
            timeout = self.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0.05:
                    outcomes.append(NOT_ATTEMPTED)
                    continue
            outcomes.append(self._post(message, timeout))
        return outcomes

    def _post(self, message: Message, timeout: float | None = None) -> Outcome:
        body = json.dumps(body_of(message.payload), separators=(",", ":"))
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
            kwargs: dict[str, Any] = {}
            if timeout is not None and timeout < self.timeout:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 2.0))
            response = self._client.post(message.destination, content=body.encode(), headers=headers, **kwargs)
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
        self._outcomes.add(outcome, n)

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
