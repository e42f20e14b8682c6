"""The durable outbox: records' messages kept on disk until delivered, whatever happens to the process.

A record sink (the webhook and audit exporters, or one of your own: see
:class:`~nexus_otel.exporters.outbox_exporter.OutboxExporter`, the skeleton they share) enqueues
its messages on the workflow's thread before the execution returns, and a
worker thread delivers them: lease, deliver, then ack, retry, dead-letter or
release. The parts, one idea each:

- :mod:`.view`: :class:`Queue` (the operations: enqueue, lease, ack, retry,
  dead_letter, release, hold, replay, counts, close) and :class:`OutboxView`
  (one sink's part of an outbox several sinks share);
- :mod:`.queue`: :class:`Outbox`, the local outbox (a journal per process and
  a SQLite table under the data directory: the default);
- :mod:`.postgres`: :class:`PostgresOutbox`, the shared outbox every replica
  reads (``NEXUS_OTEL_OUTBOX_URL``), with :mod:`.group_commit`;
  :func:`open_outbox` opens either from a path or a URL;
- :mod:`.message`: :class:`Message` and its typed :data:`Handle`
  (:class:`RowHandle` for the table's messages, :class:`LocalHandle` for those
  this process holds in memory);
- :mod:`.scope`: which messages of a shared file a sink sees;
- :mod:`.journal` and :mod:`.local`: the per-process journal an enqueue is
  appended to, and the messages this process delivers from memory;
- :mod:`.table`: the SQLite table everything else goes into, and recovery;
- :mod:`.owners`: which process holds a lease or writes a journal, and
  whether it has ended;
- :mod:`.worker` and :mod:`.breaker`: delivery with retries, backoff, dead
  letters and a circuit breaker per destination;
- :mod:`.writable`: whether the outbox takes writes now (a full disk).

Every state of a message and every transition between them, with what survives
a crash at each point, is in ``docs/records.md`` ("The outbox's states").
"""

from .breaker import BreakerState, CircuitBreaker
from .factory import open_outbox
from .message import Handle, LocalHandle, Message, RowHandle
from .postgres import PostgresOutbox
from .queue import OUTBOX_FILE, Outbox, default_outbox_path
from .scope import ALL, WEBHOOK_SCOPE, Scope, destination_scope
from .view import DEFAULT_LEASE, OutboxView, Queue
from .worker import NOT_ATTEMPTED, OK, Deliver, OutboxWorker, Outcome, RetryPolicy

__all__ = [
    "ALL",
    "DEFAULT_LEASE",
    "NOT_ATTEMPTED",
    "OK",
    "OUTBOX_FILE",
    "WEBHOOK_SCOPE",
    "BreakerState",
    "CircuitBreaker",
    "Deliver",
    "Handle",
    "LocalHandle",
    "Message",
    "Outbox",
    "OutboxView",
    "OutboxWorker",
    "Outcome",
    "PostgresOutbox",
    "Queue",
    "RetryPolicy",
    "RowHandle",
    "Scope",
    "default_outbox_path",
    "destination_scope",
    "open_outbox",
]
