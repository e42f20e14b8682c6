"""The :class:`RecordProcessor` interface: what a sink of execution records implements."""

from __future__ import annotations

from typing import TypeVar

from .record import ExecutionRecord

R = TypeVar("R", bound="RecordProcessor")


class RecordProcessor:
    """Receives every execution's records, on the workflow's thread; shaped like OpenTelemetry's ``SpanProcessor``.

    ``on_end`` runs before ``execute_workflow`` returns (and before an HTTP
    response is sent): a durable sink puts the record in its local store there,
    so a crash after the return loses nothing. Anything slow (network, a
    remote database) belongs on a worker thread fed from that store. An
    exception here is logged and counted, never raised to the workflow,
    except :class:`~nexus_otel.errors.RecordsUnavailableError` (a durable
    store that cannot be written): the execution fails with it, closed.
    Override what you need; the defaults do nothing.

    Background work (a worker thread) starts in :meth:`start`, which the app's
    :class:`~nexus_otel.records.pipeline.RecordPipeline` calls when the app
    starts (or runs its first execution), or when the processor is added to an
    app already started; :meth:`shutdown` stops it.
    """

    def start(self: R) -> R:
        """Start background work, if any (again: nothing more)."""
        return self

    def on_start(self, record: ExecutionRecord) -> None:
        """An execution started (``record.status == "running"``)."""

    def on_end(self, record: ExecutionRecord) -> None:
        """An execution ended (``completed`` or ``failed``)."""

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Finish what is queued in memory within ``timeout`` seconds; true if done."""
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop within ``timeout`` seconds; what is not delivered stays in the durable store."""
