"""Webhooks as a record processor: one signed JSON payload per finished workflow, delivered durably.

``on_end`` only queues: one line appended to the local outbox's journal, done
before the workflow's caller gets its result, so a crash after that loses no payload. A worker
thread posts each due batch concurrently over pooled keep-alive connections
(:mod:`.http_poster`), as many at once to each destination as its adaptive
limit allows (:mod:`.adaptive_limit`: learnt from its answers, at most
``max_in_flight``). The rate to one receiver is about that limit divided by its
answer time (``benchmarks/throughput.py`` prints it by ``max_in_flight``). Payloads are signed per the Standard Webhooks
specification (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``:
HMAC-SHA256, via the ``standardwebhooks`` package), so any Standard Webhooks
library verifies it. Timeouts, connection errors, 429 and 5xx are retried
with backoff and jitter (a ``Retry-After`` holds its destination); other 4xx answers, 3xx
answers (redirects are not followed: a receiver that moved must be given its
new URL) and exhausted retries go to the dead letters. A retry keeps its ``webhook-id``, so
receivers can drop duplicates; its timestamp and signature are fresh. Payloads
of one batch are in flight together, so they may arrive in any order (Standard
Webhooks promises none); each is delivered once its receiver answers 2xx.

With a ``tracer`` each attempt sent is a span of its own, linked to the execution's
workflow span, and the request carries its ``traceparent`` (:mod:`.delivery_spans`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import ssl
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer
from standardwebhooks.webhooks import Webhook

from .. import fastjson
from ..baggage import header_value
from ..outbox import DEFAULT_LEASE, NOT_ATTEMPTED, OK, WEBHOOK_SCOPE, Message, Outbox, OutboxView, Outcome, RetryPolicy
from ..outbox.postgres import PostgresOutbox
from ..records import ExecutionRecord
from ..redaction import Redactor
from .delivery_spans import TRACE_HEADERS, Attempt, DeliverySpans
from .destination_metrics import observe_destinations
from .destination_snapshots_shared import snapshots_for
from .destinations import DestinationState
from .gate import OVERLOAD_STATUSES, Held
from .http1 import Pool
from .http_poster import MIN_ATTEMPT, ConcurrentPoster, ConnectTimedOut, NotStarted, Post, PostTimeout, Reply
from .outbox_exporter import OutboxExporter
from .outcomes import OutcomeCounts
from .proxies import ProxyRoutes
from .request_head import check_headers
from .retry_after import retry_after_seconds
from .tls import client_context

log = logging.getLogger("nexus_otel.webhooks")
RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))
SIGNATURE_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})
"""Headers the Standard Webhooks signature owns: a configured one would make receivers' verification fail."""
_ID_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
"""What a ``webhook-id`` keeps as it is: visible ASCII but ``%``, which starts an escape."""
ATTEMPT_RESULTS = ("delivered", "rejected", "overloaded", "server_error", "connect_timeout", "answer_timeout",
                   "connection_error")


def payload_of(record: ExecutionRecord) -> dict[str, Any]:
    """The JSON body: Kailash Nexus's plugin API's fields (workflow, status, duration, timestamp) and more.

    ``baggage`` (the listed keys of the baggage the execution came with) is there when it had any.
    """
    payload: dict[str, Any] = {
        "type": f"workflow.{record.status}",
        "workflow": record.workflow,
        "status": record.status,
        "duration": record.duration,
        "timestamp": record.started_at,
        "completed_at": record.completed_at,
        "workflow_id": record.workflow_id,
        "trace_id": record.trace_id,
        "error_type": record.error_type,
        "session_id": record.session_id,
        "channel": record.channel,
    }
    if record.baggage:
        payload["baggage"] = record.baggage
    return payload


def body_of(stored: Any) -> dict[str, Any]:
    """The JSON body for a stored payload: a record's fields (or a finished payload, as queued before 0.2)."""
    record = ExecutionRecord.stored(stored)
    return payload_of(record) if record is not None else stored


def message_id_of(workflow_id: str) -> str:
    """The ``webhook-id`` of an execution's payload: stable across retries and restarts.

    nexus-otel's workflow ids are hex, and a header value as they are. An id that is not (a space,
    a control character, a non-ASCII letter), or that holds a ``%``, is percent-encoded (UTF-8), so
    no id can bring a line break into a request head and two ids never share a ``webhook-id``.
    """
    if not (workflow_id.isascii() and workflow_id.isprintable()) or " " in workflow_id or "%" in workflow_id:
        workflow_id = quote(workflow_id, safe=_ID_SAFE, errors="surrogatepass")
    return f"msg_{workflow_id}"


def _fixed_headers(extra: Mapping[str, str]) -> dict[str, str]:
    """Every request's fixed headers: ``content-type: application/json`` (unless ``extra`` names another), ``extra``."""
    if any(name.lower() == "content-type" for name in extra):
        return dict(extra)
    return {"content-type": "application/json", **extra}


class WebhookExporter(OutboxExporter):
    """Queues a payload per finished workflow for each URL; a worker delivers them.

    ``start()`` starts the delivery worker (the app's record pipeline calls it as the app starts, or
    as the exporter is added to a started app); until then payloads are only queued.
    ``on_unavailable`` (``"fail"`` or ``"drop"``): what happens to an execution whose payload cannot be
    written to the outbox (see :class:`~nexus_otel.exporters.outbox_exporter.OutboxExporter`).

    ``tracer`` (None: no spans): each attempt sent is a CLIENT span of its own made with it, linked to the
    execution's workflow span (:mod:`.delivery_spans`); ``propagate`` sends that span's ``traceparent``
    with the request, so ``traceparent`` and ``tracestate`` are then not among the ``headers`` one may
    set. ``redactor`` (the app's) masks ``url.full``'s secret query values with its extra keys too.
    """

    log = log

    def __init__(self, urls: Sequence[str], outbox: Outbox | PostgresOutbox | OutboxView, *, secret: str | None = None,
                 workflows: frozenset[str] | None = None, statuses: frozenset[str] = frozenset({"completed"}),
                 policy: RetryPolicy = RetryPolicy(), timeout: float = 5.0, meter: Meter | None = None,
                 max_in_flight: int = 128, on_unavailable: str = "fail", connect_timeout: float = 5.0,
                 max_rate: float | None = None, proxy: str | bool | ProxyRoutes | None = None,
                 ca_file: str | None = None, client_cert: str | None = None, client_key: str | None = None,
                 tls: ssl.SSLContext | None = None, headers: Mapping[str, str] | None = None,
                 tracer: Tracer | None = None, propagate: bool = True, redactor: Redactor | None = None,
                 lease: float = DEFAULT_LEASE) -> None:
        self.urls = tuple(urls)
        # Checked as h11 and RFC 9110 say (a bad one is a ConfigurationError now, not a failed delivery later).
        self._headers = _fixed_headers(check_headers("WebhookExporter.headers", headers,
                                                     reserved=reserved_headers(tracer is not None)))
        self.workflows = workflows
        self.statuses = statuses
        self.timeout = timeout
        self._signer = Webhook(secret) if secret else None
        # Proxies (the environment's, unless ``proxy`` says otherwise) and TLS settings: docs/records.md.
        # A caller that checked them already (WebhookPlugin, naming its own settings) passes them built.
        routes = proxy if isinstance(proxy, ProxyRoutes) else ProxyRoutes(proxy, setting="WebhookExporter.proxy")
        if tls is None:
            tls = client_context(ca_file=ca_file, client_cert=client_cert, client_key=client_key,
                                 owner="WebhookExporter")
        pool = Pool("nexus-otel-webhooks", proxy=routes, tls=tls)
        self._poster = ConcurrentPoster(per_destination=max_in_flight, user_agent="nexus-otel-webhooks",
                                        connect_timeout=connect_timeout, max_rate=max_rate,
                                        hold_cap=policy.cap, pool=pool)
        self.attempts = OutcomeCounts(ATTEMPT_RESULTS)
        """Attempts by how they ended: a connection not accepted in time apart from an answer that did not come."""
        super().__init__(
            # The outbox file may be shared with other sinks: this exporter sees webhook messages only.
            outbox.view(WEBHOOK_SCOPE) if isinstance(outbox, (Outbox, PostgresOutbox)) else outbox, self._deliver,
            name="webhooks",
            outcomes=("queued", "delivered", "retried", "failed"), meter=meter,
            outcomes_metric=("nexus.webhook.deliveries",
                             "Webhook deliveries by outcome: queued, delivered, retried, failed."),
            queue_metric=("nexus.webhook.outbox", "Webhook messages waiting (pending) or given up (dead)."),
            queue_states=("pending", "dead"), policy=policy, on_unavailable=on_unavailable,
            # A batch holds a few rounds of max_in_flight per destination, so the pipe stays full between batches.
            batch_size=max(50, 4 * max_in_flight),
            # The worker's thread runs the poster's loop, so it closes the poster as it ends, also after
            # a stop() that could not wait for it.
            on_exit=self._poster.close,
            # After each settled batch and once a second when idle: each destination's state for `webhooks status`.
            on_tick=self.publish_destinations,
            # Requests start in the lease's first half and last at most `timeout`.
            lease=max(lease, 4 * timeout))
        self.spans = None if tracer is None else DeliverySpans(tracer, max_attempts=policy.max_attempts,
                                                               propagate=propagate, redactor=redactor)
        """The attempts' spans (None: off)."""
        self.snapshots = snapshots_for(self.outbox)
        """This process's destinations, published for ``nexus-otel webhooks status`` (:meth:`publish_destinations`)."""
        if meter is not None:
            observe_destinations(meter, self.destinations)
            self.attempts.observe_as(meter, "nexus.webhook.attempts",
                                     "Webhook delivery attempts by result: delivered, rejected (a final 3xx/4xx), "
                                     "overloaded (429, 502-504), server_error, connect_timeout, answer_timeout, "
                                     "connection_error.")

    def records(self, workflow: str) -> bool:
        return self.workflows is None or workflow in self.workflows

    # -- RecordProcessor -----------------------------------------------------------------
    def on_end(self, record: ExecutionRecord) -> None:
        if record.status not in self.statuses:
            return
        if self.workflows is not None and record.workflow not in self.workflows:
            return
        message_id = message_id_of(record.workflow_id)
        stored = record.to_json()  # the payload is made at delivery, off the workflow's thread
        self.queue([(message_id, url, stored) for url in self.urls],
                   f"{len(self.urls)} webhook payloads of {record.workflow_id}")

    def close(self) -> None:
        self._poster.close()  # a no-op when the worker closed it, or never posted
        self.snapshots.close()  # a clean stop: this process's destinations are no one's now

    def destinations(self) -> list[DestinationState]:
        """What the sender knows of each destination now: its limit, in flight, hold and breaker."""
        now, wall = time.monotonic(), time.time()
        states = []
        for url, gate in self._poster.gates().items():
            held = gate.held_until > now
            breaker = self.worker.breaker.state(url, wall)
            held_until = wall + (gate.held_until - now) if held else breaker.held_until
            states.append(DestinationState(
                url, gate.limit.allowed, gate.limit.ceiling, gate.in_flight,
                held_until=held_until, hold_reason=gate.hold_reason if held else breaker.hold_reason,
                breaker="open" if breaker.open_until else "closed", breaker_until=breaker.open_until,
                failures=breaker.failures, max_rate=gate.max_rate))
        return states

    def publish_destinations(self) -> None:
        """Publish :meth:`destinations` for ``nexus-otel webhooks status``: call it from the delivery worker after
        each batch and wake-up; it writes only what changed, at most once a second."""
        if self.snapshots.due():  # called after every batch: the states are made once a second at most
            self.snapshots.publish(self.destinations())

    # -- delivery ----------------------------------------------------------------------
    def _deliver(self, batch: list[Message], deadline: float | None = None) -> list[Outcome]:
        """Post the batch concurrently; a message whose deadline leaves no time is not attempted."""
        if deadline is not None and deadline - time.monotonic() < MIN_ATTEMPT:
            return [NOT_ATTEMPTED] * len(batch)
        spans = self.spans
        if spans is None:
            return self._settle(self._poster.post_all([self._request(m, deadline) for m in batch]))
        attempts: list[Attempt] = []  # each span starts as its request is sent
        outcomes = self._settle(self._poster.post_all([self._request(m, deadline, attempts) for m in batch]))
        for attempt, outcome in zip(attempts, outcomes):
            attempt.end(outcome)
        return outcomes

    def _settle(self, replies: list[Reply | Exception]) -> list[Outcome]:
        """Count the attempts by result; each reply's outcome."""
        for result, n in Counter(map(attempt_result, replies)).items():
            if result is not None:
                self.attempts.add(result, n)
        return [_outcome(reply) for reply in replies]

    def _request(self, message: Message, deadline: float | None, attempts: list[Attempt] | None = None) -> Post:
        """The signed request for one message: a fresh timestamp and signature, the stable ``webhook-id``.

        With ``attempts`` (delivery spans on) its :class:`~.delivery_spans.Attempt` is appended to it.
        """
        stored = message.payload
        record = ExecutionRecord.stored(stored)
        payload = payload_of(record) if record is not None else stored  # as body_of, the record kept
        body = fastjson.dumpb(payload)
        now = _dt.datetime.now(_dt.timezone.utc)
        headers = {
            **self._headers,
            "webhook-id": message.message_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        baggage = payload.get("baggage")
        if baggage:  # the listed keys only (NEXUS_OTEL_BAGGAGE_KEYS), as the record holds them
            value = header_value(baggage)
            if value:
                headers["baggage"] = value
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(message.message_id, now, body.decode("utf-8"))
        observer = None
        if attempts is not None and self.spans is not None:
            observer = self.spans.attempt(message, record if record is not None else payload)
            attempts.append(observer)
        return Post(message.destination, body, headers, self.timeout, not_after=deadline, observer=observer)


def reserved_headers(spans: bool) -> frozenset[str]:
    """The header names nexus-otel writes itself, so not configurable: the signature's, and with delivery spans
    on the trace context's (``traceparent``, ``tracestate``)."""
    return SIGNATURE_HEADERS | TRACE_HEADERS if spans else SIGNATURE_HEADERS


def _outcome(reply: Reply | Exception) -> Outcome:
    """A receiver's answer (or the failure to get one) as a delivery outcome."""
    if isinstance(reply, Held):  # not sent, no attempt spent; a Retry-After holds the whole destination
        if not reply.paused:  # max_rate, or its deadline: it waits for the next batch
            return NOT_ATTEMPTED
        return Outcome(False, f"held: {reply.reason}", attempted=False, held_until=reply.until,
                       hold_reason=reply.reason)
    if isinstance(reply, NotStarted):
        return NOT_ATTEMPTED
    if isinstance(reply, ConnectTimedOut):
        return Outcome(False, f"connect timeout: {reply}")
    if isinstance(reply, PostTimeout):
        return Outcome(False, f"answer timeout: {reply}")
    if isinstance(reply, Exception):
        return Outcome(False, f"connection error: {reply}")
    if 200 <= reply.status < 300:
        return OK
    error = f"HTTP {reply.status}"
    if reply.status in RETRY_STATUSES:
        wait = retry_after_seconds(reply.retry_after)
        if wait and reply.status in OVERLOAD_STATUSES:  # the receiver asked for a pause: the whole destination
            return Outcome(False, error, retry=True, retry_after=wait, held_until=time.time() + wait,
                           hold_reason=f"Retry-After {wait:g} s (HTTP {reply.status})")
        return Outcome(False, error, retry=True, retry_after=wait)
    return Outcome(False, error, retry=False)


def attempt_result(reply: Reply | Exception) -> str | None:
    """How an attempt ended, for ``nexus.webhook.attempts``: None if nothing was sent."""
    if isinstance(reply, (Held, NotStarted)):
        return None
    if isinstance(reply, ConnectTimedOut):
        return "connect_timeout"
    if isinstance(reply, PostTimeout):
        return "answer_timeout"
    if isinstance(reply, Exception):
        return "connection_error"
    if 200 <= reply.status < 300:
        return "delivered"
    if reply.status in OVERLOAD_STATUSES:
        return "overloaded"
    return "server_error" if reply.status in RETRY_STATUSES else "rejected"
