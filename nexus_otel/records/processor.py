"""The :class:`RecordProcessor` interface: what a sink of execution records implements."""

from __future__ import annotations

from .record import ExecutionRecord


class RecordProcessor:
    """Receives every execution's records, on the workflow's thread; shaped like OpenTelemetry's ``SpanProcessor``.

    ``on_end`` runs before ``execute_workflow`` returns (and before an HTTP
    response is sent): a durable sink puts the record in its local store there,
    so a crash after the return loses nothing. Anything slow (network, a
    remote database) belongs on a worker thread fed from that store. An
    exception here is logged and counted, never raised to the workflow.
    Override what you need; the defaults do nothing.
    """

    def on_start(self, record: ExecutionRecord) -> None:
        """An execution started (``record.status == "running"``)."""

    def on_end(self, record: ExecutionRecord) -> None:
        """An execution ended (``completed`` or ``failed``)."""

    def force_flush(self, timeout: float = 30.0) -> bool:
        """Finish what is queued in memory within ``timeout`` seconds; true if done."""
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop within ``timeout`` seconds; what is not delivered stays in the durable store."""
