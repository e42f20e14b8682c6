"""The spans of webhook attempts: one CLIENT span per request sent, linked to the execution it delivers.

A payload is delivered by the webhook worker long after its execution
returned, perhaps on the fourth attempt an hour later. Each attempt that is
really sent (its destination's gate let it go) is a CLIENT span named ``POST``
with OpenTelemetry's HTTP client attributes (``http.request.method``,
``url.full`` with credentials and secret query values ``REDACTED``,
``server.address``, ``server.port``, ``http.response.status_code``,
``error.type``) and ``nexus.webhook.id`` / ``nexus.webhook.attempt``. A
payload's attempts are a trace of their own, apart from the execution's:
retries an hour apart must not stretch the execution's trace (its duration,
its p95, the alerts on it). The first attempt is the root; the retries this
process makes are its children, so the delivery's whole story is one trace.
Each attempt has a span link to the execution's workflow span instead, as
OpenTelemetry's messaging conventions link a consumer to its producer. The request carries the attempt span's W3C
``traceparent`` (when ``OTEL_PROPAGATORS`` has ``tracecontext``), so an
instrumented receiver continues the attempt's trace.

The attempt after which a payload is given up (dead-lettered) has the event
``nexus.webhook.dead_letter``; the first attempt after a replay has
``nexus.webhook.replayed``. Both carry the error (``nexus.webhook.error``).

Everything here runs on the webhook worker's thread (the poster's loop runs
there): nothing on the workflow's. A request held back (a ``Retry-After``,
``max_rate``) or never started has no span. With delivery spans off the
exporter makes no :class:`Attempt` at all.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from ..outbox import Message, Outcome
from ..records import ExecutionRecord
from ..redaction import Redactor
from ..telemetry import contract as c
from ..urls import REDACTED, mask_url
from .http_poster import ConnectTimedOut, PostTimeout, Reply
from .span_links import SpanFailures, execution_link

log = logging.getLogger("nexus_otel.webhooks")
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""Headers an attempt's trace context owns while delivery spans are on: a configured one would contradict it."""
SCRUBBED = frozenset({c.URL_FULL, c.SERVER_ADDRESS, c.SERVER_PORT, c.WEBHOOK_ID, c.WEBHOOK_ATTEMPT,
                      c.HTTP_RESPONSE_STATUS_CODE})
"""Attributes of an attempt span made from scrubbed text (:func:`destination_attributes`) or from numbers and ids
nexus-otel makes: the span pipeline need not scan them again (:meth:`Telemetry.delivery_tracer`)."""
TIMEOUT = "timeout"
"""``error.type`` of an attempt whose connection or answer did not come in time (the conventions' value)."""
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MAX_DESTINATIONS = 1024
"""Destinations whose span attributes are kept worked out (a few URLs are configured; replays may bring old ones)."""
_ROOT = Context()
"""No current span: a payload's first attempt is a root, whatever context the worker's thread has."""
_TOKEN_SEGMENT = re.compile(r"[A-Za-z0-9_-]{16,}")
_MAX_RETRYING = 65536
"""Payloads whose first attempt's span is remembered while they are retried (the oldest are forgotten first)."""


def url_full(url: str, redactor: Redactor | None = None) -> str:
    """``url`` as ``url.full`` shows it: user and password both ``REDACTED`` (as the HTTP conventions ask),
    path segments that look like a token ``REDACTED`` (Slack's and Discord's webhook URLs carry their secret in
    the path: a segment of 16 or more letters, digits, ``-`` and ``_`` with both letters and digits), and secret
    query values ``REDACTED`` (:func:`~nexus_otel.urls.mask_url`)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL the poster could send to: shown with its query's secrets masked only
        return mask_url(url, redactor)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}:{REDACTED}@{netloc.rpartition('@')[2]}"
    path = "/".join(REDACTED if _looks_secret(segment) else segment for segment in parts.path.split("/"))
    return mask_url(urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment)), redactor)


def _looks_secret(segment: str) -> bool:
    """A path segment shaped like a token: 16 or more of ``[A-Za-z0-9_-]``, with letters and digits both."""
    return (_TOKEN_SEGMENT.fullmatch(segment) is not None and any(ch.isdigit() for ch in segment)
            and any(ch.isalpha() for ch in segment))


def destination_attributes(url: str, redactor: Redactor | None = None) -> dict[str, AttributeValue]:
    """The attributes every attempt to ``url`` has: method, ``url.full``, ``server.address``, ``server.port``;
    the text scrubbed by ``redactor`` (a secret pattern in a path, say), so its spans need no second scan."""
    redactor = redactor or Redactor()
    attributes: dict[str, AttributeValue] = {
        c.HTTP_REQUEST_METHOD: "POST", c.URL_FULL: redactor.scrub_text(c.URL_FULL, url_full(url, redactor))}
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # not a URL the poster could send to: its attempt fails, its span says how
        return attributes
    if parts.hostname:
        attributes[c.SERVER_ADDRESS] = redactor.scrub_text(c.SERVER_ADDRESS, parts.hostname)
    if port:
        attributes[c.SERVER_PORT] = port
    return attributes


def failure_type(reply: Reply | Exception) -> str | None:
    """The ``error.type`` of an attempt: the status code of a non-2xx answer (a 3xx too: redirects are not
    followed, the payload is not delivered), ``timeout``, or the qualified name of the exception at the root of
    the failure (``ConnectionRefusedError``, ``ssl.SSLCertVerificationError``); None if 2xx."""
    if isinstance(reply, Reply):
        return None if 200 <= reply.status < 300 else str(reply.status)
    if isinstance(reply, (ConnectTimedOut, PostTimeout)):
        return TIMEOUT
    for _ in range(8):  # what was underneath: a refused connection is ConnectionRefusedError, not our wrapper
        cause = reply.__cause__
        if not isinstance(cause, Exception):
            break
        reply = cause
    return c.error_type(reply)


def traceparent(span: Span) -> str:
    """The W3C ``traceparent`` naming ``span`` (formatted here: the propagator API costs more per request)."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


class DeliverySpans:
    """Makes the span of each webhook attempt with ``tracer`` (the app's provider: its sampling, redaction and
    exporters apply).

    ``propagate``: send each attempt's ``traceparent`` (and ``tracestate``, if any) to the receiver.
    ``max_attempts``: the delivery's retry limit, to tell the attempt after which a payload is given up.
    ``redactor``: the app's, so its extra sensitive keys count in ``url.full``'s query too.
    """

    def __init__(self, tracer: Tracer, *, max_attempts: int, propagate: bool = True,
                 redactor: Redactor | None = None) -> None:
        self.tracer = tracer
        self.max_attempts = max_attempts
        self.propagate = propagate
        self.redactor = redactor
        self._destinations: dict[str, dict[str, AttributeValue]] = {}
        self.failures = SpanFailures(log, "webhook attempt spans")
        """What the span code raised (a failing processor or redaction callback), kept away from deliveries."""
        self._first: OrderedDict[tuple[str, str], SpanContext] = OrderedDict()
        """The first attempt's span of each payload being retried, by (id, destination)."""

    def parent_of(self, message: Message) -> Context:
        """Where ``message``'s attempt goes: under its first attempt's span if this process made that one and the
        payload is being retried, else a new trace (a first attempt, the first after a replay, a retry of another
        process's or an earlier run's attempt)."""
        if message.attempts == 0:
            return _ROOT
        first = self._first.get((message.message_id, message.destination))
        if first is None:
            return _ROOT
        # As a remote parent: each retry is decided on its own by the tail samplers (in-process and the
        # Collector's), minutes after its first attempt's trace was decided, yet shown as its child.
        remote = SpanContext(first.trace_id, first.span_id, is_remote=True, trace_flags=first.trace_flags,
                             trace_state=first.trace_state)
        return trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote), _ROOT)

    def first_attempt(self, message: Message, span: Span) -> None:
        """``span`` is ``message``'s first attempt in this trace: its retries become its children."""
        first = self._first
        first[(message.message_id, message.destination)] = span.get_span_context()
        if len(first) > _MAX_RETRYING:
            first.popitem(last=False)

    def settled(self, message: Message) -> None:
        """``message`` is delivered or given up: its attempts' trace is complete."""
        self._first.pop((message.message_id, message.destination), None)

    def attempt(self, message: Message, execution: ExecutionRecord | Mapping[str, Any] | None = None) -> Attempt:
        """The observer of ``message``'s request (:class:`~.http_poster.SendObserver`): nothing starts until it
        is sent. ``execution``: the record its payload was made from (or the payload, as queued before 0.2);
        None reads it from the message."""
        return Attempt(self, message, execution)

    def destination(self, url: str) -> dict[str, AttributeValue]:
        """:func:`destination_attributes` of ``url``, worked out once."""
        attributes = self._destinations.get(url)
        if attributes is None:
            if len(self._destinations) >= _MAX_DESTINATIONS:
                self._destinations.clear()
            attributes = self._destinations[url] = destination_attributes(url, self.redactor)
        return attributes


class Attempt:
    """One message's request: its span starts as the request is sent and ends with its answer's time, once
    the delivery knows the outcome (:meth:`end`, which adds the dead letter event)."""

    __slots__ = ("_spans", "message", "_execution", "span", "_reply", "_ended_at")

    def __init__(self, spans: DeliverySpans, message: Message,
                 execution: ExecutionRecord | Mapping[str, Any] | None = None) -> None:
        self._spans = spans
        self.message = message
        self._execution = execution if execution is not None else message.payload
        self.span: Span | None = None
        self._reply: Reply | Exception | None = None
        self._ended_at: int | None = None

    # -- SendObserver (on the poster's loop) ------------------------------------------------------
    def sending(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """Start the attempt's span; the headers to send (with its ``traceparent``). Whatever the span code
        raises (a processor, a redaction callback) is logged and counted, and the request goes as it was."""
        try:
            return self._start(headers)
        except Exception as exc:
            self.span = None
            self._spans.failures.failed(exc)
            return headers

    def _start(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        spans, message = self._spans, self.message
        attributes = {**spans.destination(message.destination), c.WEBHOOK_ID: message.message_id,
                      c.WEBHOOK_ATTEMPT: message.attempts + 1}
        links = []
        execution = _execution(self._execution)
        if execution is not None:
            workflow, link = execution
            # The workflow's own sampling rules apply to its deliveries. (Its id is in nexus.webhook.id already,
            # "msg_<id>": Jaeger finds an execution's attempts by that tag, as links are not searchable.)
            attributes[c.WORKFLOW_NAME] = workflow
            if link is not None:
                links.append(link)
        parent = spans.parent_of(message)
        span = self.span = spans.tracer.start_span(
            c.WEBHOOK_SPAN, context=parent, kind=SpanKind.CLIENT, attributes=attributes, links=links,
            record_exception=False, set_status_on_exception=False)
        if parent is _ROOT:
            spans.first_attempt(message, span)
        if message.attempts == 0 and message.last_error is not None and span.is_recording():
            # Only a replay sets a message's attempts back to 0; it keeps the error it was given up with.
            span.add_event(c.WEBHOOK_REPLAYED_EVENT, {c.WEBHOOK_ERROR: message.last_error})
        if not spans.propagate:
            return headers
        extra = {**headers, "traceparent": traceparent(span)}
        state = span.get_span_context().trace_state
        if state:
            extra["tracestate"] = state.to_header()
        return extra

    def answered(self, reply: Reply | Exception) -> None:
        self._ended_at = time.time_ns()
        self._reply = reply

    # -- after the batch ----------------------------------------------------------------------------
    def end(self, outcome: Outcome) -> None:
        """End the span (if the request was sent) with the answer's status, and the dead letter event if
        ``outcome`` gives the payload up. Never raises: the outcome stands whatever the span code does."""
        try:
            self._end(outcome)
        except Exception as exc:
            self._spans.failures.failed(exc)

    def _end(self, outcome: Outcome) -> None:
        span = self.span
        if span is None:
            return
        ended_at = self._ended_at if self._ended_at is not None else time.time_ns()
        reply = self._reply
        given_up = gives_up(self.message, outcome, self._spans.max_attempts)
        if outcome.ok or given_up:
            self._spans.settled(self.message)
        if span.is_recording():
            error_type: str | None
            if reply is None:  # the request never finished (its loop was cut short)
                error_type = "_OTHER"
            else:
                error_type = failure_type(reply)
                if isinstance(reply, Reply):
                    span.set_attribute(c.HTTP_RESPONSE_STATUS_CODE, reply.status)
            if error_type is not None:
                span.set_attribute(c.ERROR_TYPE, error_type)
                # A status code says why by itself (the conventions leave the description empty then).
                span.set_status(Status(StatusCode.ERROR, None if isinstance(reply, Reply) else outcome.error))
            if given_up:
                attributes: dict[str, Any] = {c.WEBHOOK_ERROR: outcome.error}
                if error_type is not None:
                    attributes[c.ERROR_TYPE] = error_type
                span.add_event(c.WEBHOOK_DEAD_LETTER_EVENT, attributes, timestamp=ended_at)
        span.end(ended_at)


def gives_up(message: Message, outcome: Outcome, max_attempts: int) -> bool:
    """Whether the delivery worker dead-letters ``message`` after ``outcome``: a final failure (a 3xx or 4xx),
    or a retryable one on its last attempt (the rule of :class:`~.delivery.OutboxWorker`)."""
    if outcome.ok or not outcome.attempted:
        return False
    return not outcome.retry or message.attempts + 1 >= max_attempts


def _execution(payload: Any) -> tuple[str, Link | None] | None:
    """``(workflow, link to its workflow span or None)`` of an execution record, of a stored payload (a record's
    fields: :meth:`ExecutionRecord.to_json` decoded), or of a finished payload as queued before 0.2 (no span id:
    no link)."""
    record = payload if isinstance(payload, ExecutionRecord) else ExecutionRecord.stored(payload)
    if isinstance(record, ExecutionRecord):
        return record.workflow, execution_link(record.trace_id, record.span_id, record.trace_sampled)
    if isinstance(payload, dict) and isinstance(payload.get("workflow"), str):
        return payload["workflow"], None
    return None
