"""The span of one audit batch write, per OpenTelemetry's database client conventions.

A batch of audit rows is written by the audit worker long after the executions
returned, so its span is a CLIENT span in a trace of its own (a root: a slow or
retried write must not stretch any execution's trace), linked to the workflow
span of each execution in the batch, as OpenTelemetry's messaging conventions
link a consumer to its producers. Its name and attributes are the database
conventions': ``{db.operation.name} {db.collection.name}``, ``db.system.name``,
``db.operation.batch.size`` (only for two rows or more: one row is a single
operation), ``server.address``/``server.port`` where there is a server, and
``error.type`` with status ERROR when the write fails.

Links are bounded by the SDK's span link limit (``OTEL_SPAN_LINK_COUNT_LIMIT``,
128 by default): a batch of more executions links the first ones up to the
limit, and ``nexus.audit.executions`` always says how many executions the batch
held, so the links left out are visible (batches hold 200 rows at most by
default). An execution recorded while telemetry was off has no workflow span
and so no link.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from ..telemetry import contract as c
from ..telemetry.lean_tracer import LeanTracer
from .span_links import SpanFailures

log = logging.getLogger("nexus_otel.audit")

OPERATION = "INSERT"
"""What the audit store runs for each row (an upsert: ``INSERT ... ON CONFLICT DO UPDATE``)."""


def link_limit(tracer: Tracer | None = None) -> int:
    """The span link limit ``tracer``'s spans have: a lean tracer's own (the app's configuration), else the SDK's
    as ``OTEL_SPAN_LINK_COUNT_LIMIT`` sets it in the process (128 by default)."""
    limit = tracer.limits.max_links if isinstance(tracer, LeanTracer) else SpanLimits().max_links
    return 128 if limit is None else limit


class AuditBatchSpans:
    """Makes the span of each batch written to one store (``db_attributes``: its database and table)."""

    def __init__(self, tracer: Tracer, db_attributes: Mapping[str, Any], *, max_links: int | None = None) -> None:
        self._tracer = tracer
        self._attributes = dict(db_attributes)
        self._collection = str(self._attributes.get(c.DB_COLLECTION_NAME, ""))
        self.failures = SpanFailures(log, "audit batch spans")
        """What the span code raised (a failing processor, say), kept away from the writes."""
        self.max_links = link_limit(tracer) if max_links is None else max_links
        """Executions linked per batch at most: the SDK would drop any beyond its limit."""

    @contextmanager
    def batch(self, links: Sequence[Link | None]) -> Iterator[None]:
        """A span around writing one batch whose executions' links are ``links`` (None: no workflow span).

        An exception from the write marks the span failed (``error.type``, status ERROR) and goes on.
        """
        size = len(links)
        operation = OPERATION if size == 1 else f"BATCH {OPERATION}"
        attributes = {**self._attributes, c.DB_OPERATION_NAME: operation, c.AUDIT_EXECUTIONS: size}
        if size != 1:
            attributes[c.DB_OPERATION_BATCH_SIZE] = size
        kept = [link for link in links if link is not None][:self.max_links]
        name = f"{operation} {self._collection}" if self._collection else operation
        span: Span | None = None
        try:  # Context(): a root, whatever context the calling thread has
            span = self._tracer.start_span(name, context=Context(), kind=SpanKind.CLIENT, attributes=attributes,
                                           links=kept, record_exception=False, set_status_on_exception=False)
        except Exception as exc:  # the write goes on without its span
            self.failures.failed(exc)
        try:
            yield
        except Exception as exc:
            if span is not None:
                try:
                    _mark_failed(span, exc)
                except Exception as failure:
                    self.failures.failed(failure)
            raise
        finally:
            if span is not None:
                try:
                    span.end()
                except Exception as exc:
                    self.failures.failed(exc)


def _mark_failed(span: Span, exc: BaseException) -> None:
    """``error.type``, status ERROR with the error's first line, and the database's own code, if any."""
    error_type = c.error_type(exc)
    lines = str(exc).splitlines()
    span.set_status(Status(StatusCode.ERROR, f"{error_type}: {lines[0]}" if lines else error_type))
    span.set_attribute(c.ERROR_TYPE, error_type)
    code = _response_code(exc)
    if code is not None:
        span.set_attribute(c.DB_RESPONSE_STATUS_CODE, code)


def _response_code(exc: BaseException) -> str | None:
    """The database's own code for ``exc``: PostgreSQL's SQLSTATE, SQLite's numeric result code."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return str(sqlstate)
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else str(code)
