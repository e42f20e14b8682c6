"""The skeleton of a durable record sink: queue in the outbox on the workflow's thread, deliver from a worker.

:class:`OutboxExporter` is what the webhook and audit exporters share: the
records' messages are put in an :class:`~nexus_otel.outbox.queue.Outbox`
(written before the workflow's caller gets its result), a
:class:`~nexus_otel.outbox.worker.OutboxWorker` thread delivers them with
retries, what happened is counted by outcome, and the queue's size is
observed. A subclass says what to queue for a record (``on_end`` calls
:meth:`OutboxExporter.queue`) and how to deliver a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from .. import settings
from ..errors import RecordsUnavailableError
from ..outbox import Deliver, OutboxView, OutboxWorker
from ..records import RecordProcessor
from .outcomes import OutcomeCounts

E = TypeVar("E", bound="OutboxExporter")
ON_UNAVAILABLE = ("fail", "drop")
"""What a sink does when its records cannot be written (the disk is full): fail the execution
(:class:`~nexus_otel.errors.RecordsUnavailableError`, the default), or drop them (counted, logged)."""


class OutboxExporter(RecordProcessor):
    """Queues messages in ``outbox`` and delivers them with ``deliver`` on a worker thread (after ``start()``).

    ``outcomes`` are the counted outcomes (``queued``, what a delivery is called, ``retried``,
    ``failed``); with a ``meter`` they are the counter ``outcomes_metric`` (name, description)
    and the queue is the gauge ``queue_metric`` (name, description), one series per state in
    ``queue_states``, or one without attributes for the pending messages if that is None.
    Other keyword arguments go to the :class:`~nexus_otel.outbox.worker.OutboxWorker`.

    ``on_unavailable``: when a record cannot be written to the outbox (its disk is full, read-only),
    ``"fail"`` (the default) fails the execution with
    :class:`~nexus_otel.errors.RecordsUnavailableError`, and while the outbox stays unwritable the
    app refuses executions this sink would record before they run; ``"drop"`` lets executions go on
    and loses this sink's records meanwhile (counted as ``failed``).
    """

    log = logging.getLogger("nexus_otel.outbox")
    """Where a subclass's failures to queue are logged (each sets its own)."""

    def __init__(self, outbox: OutboxView, deliver: Deliver, *, name: str, outcomes: tuple[str, str, str, str],
                 meter: Meter | None, outcomes_metric: tuple[str, str], queue_metric: tuple[str, str],
                 queue_states: tuple[str, ...] | None = None, on_unavailable: str = "fail",
                 **worker_options: Any) -> None:
        self.on_unavailable = settings.choice(f"{type(self).__name__}.on_unavailable", on_unavailable,
                                              ON_UNAVAILABLE)
        self.outbox = outbox
        self._queue_states = queue_states
        self._delivered_as = outcomes[1]
        self._outcomes = OutcomeCounts(outcomes)
        self.counts = self._outcomes.counts
        if meter is not None:
            self._outcomes.observe_as(meter, *outcomes_metric)
            meter.create_observable_gauge(queue_metric[0], callbacks=[self._observe], unit="1",
                                          description=queue_metric[1])
        self.worker = OutboxWorker(outbox, deliver, name=name, on_outcome=self._count, **worker_options)

    def start(self: E) -> E:
        """Start delivering (until then messages are only queued)."""
        self.worker.start()
        return self

    @property
    def fails_closed(self) -> bool:
        """True if an execution fails when this sink's records cannot be written (``on_unavailable="fail"``)."""
        return self.on_unavailable == "fail"

    def records(self, workflow: str) -> bool:
        """Whether executions of ``workflow`` may give this sink a record (a subclass that filters says so)."""
        return True

    def queue(self, items: Sequence[tuple[str, str, Any]], what: str) -> None:
        """Put ``(message_id, destination, payload)`` items and wake the worker.

        A put that cannot be written raises :class:`~nexus_otel.errors.RecordsUnavailableError`
        (the outbox logs it, once a second at most), unless this sink drops its records then.
        """
        try:
            queued = self.outbox.enqueue(items, required=self.fails_closed)
        except RecordsUnavailableError:
            self._count("failed", len(items))
            raise
        except Exception as exc:  # not the disk: a payload that cannot be encoded, say
            self.log.error("cannot queue %s: %s", what, exc)
            self._count("failed", len(items))
            return
        if queued:
            self._count("queued", queued)
            self.worker.notify()
        else:
            self._count("failed", len(items))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Deliver what is due for up to ``timeout`` seconds, then close (what is left stays queued on disk)."""
        if self.worker.stop(timeout):
            self.close()
        # What waits, and what a worker that could not finish still has in flight, goes into the table for
        # every reader (the connection opens again if that worker still needs it).
        self.outbox.close()

    def close(self) -> None:
        """Release what delivery used, once the worker has ended (a subclass's clients, stores)."""

    def _count(self, outcome: str, n: int) -> None:
        self._outcomes.add(self._delivered_as if outcome == "delivered" else outcome, n)

    def _observe(self, options: CallbackOptions) -> list[Observation]:
        try:
            counts = self.outbox.counts()
        except Exception:
            return []
        if self._queue_states is None:
            return [Observation(counts.get("pending", 0))]
        return [Observation(counts.get(state, 0), {"state": state}) for state in self._queue_states]
