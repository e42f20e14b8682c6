"""The earlier home of the durable outbox, now :mod:`nexus_otel.outbox`: importing from here still works, with a
:class:`DeprecationWarning`."""

import warnings

from ..outbox import (
    ALL,
    DEFAULT_LEASE,
    OUTBOX_FILE,
    WEBHOOK_SCOPE,
    Message,
    Outbox,
    OutboxView,
    Scope,
    default_outbox_path,
    destination_scope,
)

__all__ = ["ALL", "DEFAULT_LEASE", "OUTBOX_FILE", "WEBHOOK_SCOPE", "Message", "Outbox", "OutboxView", "Scope",
           "default_outbox_path", "destination_scope"]

warnings.warn("nexus_otel.exporters.outbox is now nexus_otel.outbox: import from there", DeprecationWarning,
              stacklevel=2)
