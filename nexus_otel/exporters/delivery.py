"""The earlier home of the outbox's delivery worker, now :mod:`nexus_otel.outbox`: importing from here still works,
with a :class:`DeprecationWarning`."""

import warnings

from ..outbox import NOT_ATTEMPTED, OK, BreakerState, CircuitBreaker, Deliver, OutboxWorker, Outcome, RetryPolicy

__all__ = ["NOT_ATTEMPTED", "OK", "BreakerState", "CircuitBreaker", "Deliver", "Outcome", "OutboxWorker",
           "RetryPolicy"]

warnings.warn("nexus_otel.exporters.delivery is now nexus_otel.outbox: import from there", DeprecationWarning,
              stacklevel=2)
