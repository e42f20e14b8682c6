"""``DatabasePlugin``: Kailash Nexus's audit table, written off the workflow's thread from every execution.

Thin wiring of :class:`~nexus_otel.exporters.audit.AuditExporter` as one of
the app's record processors: each execution's row is written to a local
spool before the caller gets the result, whatever the trace sampling, and a
worker writes it to the database. Kailash Nexus's
``DatabasePlugin("postgresql://localhost/nexus")`` works as written; with no
DSN the rows go to SQLite in the data directory.

With telemetry on and delivery spans on (``NEXUS_OTEL_DELIVERY_SPANS``, the
default), each batch written is a CLIENT span of its own (scope
``nexus_otel.audit``) linked to the workflow spans of its executions: it goes
through the app's sampling, redaction and exporters, and is made on the
writer's thread, never a workflow's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import settings
from ..exporters.audit import AuditExporter, open_store
from ..exporters.outbox_exporter import ON_UNAVAILABLE
from ..outbox import default_outbox_path
from ..plugin_base import NexusPlugin
from ..telemetry import contract as c

LEGACY_SPOOL = "audit-spool.sqlite"
"""The data directory's audit spool before the built-in sinks shared ``outbox.sqlite``."""


class DatabasePlugin(NexusPlugin):
    """Writes one ``workflow_executions`` row per execution to SQLite or PostgreSQL."""

    name = "database"
    version = "1.0.0"

    def __init__(self, connection_string: str | None = None, *, table: str = "workflow_executions",
                 spool_path: str | None = None, on_unavailable: str = "fail") -> None:
        self.connection_string = connection_string
        self.on_unavailable = on_unavailable
        """``"fail"`` (default): an execution whose row cannot be spooled (a full disk) fails with
        RecordsUnavailableError; ``"drop"``: it goes on, its row lost (docs/records.md)."""
        self.table = table
        self.spool_path = spool_path
        self.exporter: AuditExporter | None = None
        self._app: Any = None

    def setup(self, nexus_app: Any) -> None:
        on_unavailable = settings.choice("DatabasePlugin.on_unavailable", self.on_unavailable, ON_UNAVAILABLE)
        data_dir = Path(nexus_app.telemetry.config.data_dir)
        dsn = self.connection_string or f"sqlite:///{data_dir / 'audit.sqlite'}"
        store = open_store(dsn, self.table)
        spool = nexus_app.records.outbox(
            Path(self.spool_path) if self.spool_path else default_outbox_path(data_dir, LEGACY_SPOOL))
        telemetry = nexus_app.telemetry
        tracer = telemetry.delivery_tracer(c.AUDIT_TRACER)  # None when delivery spans are off
        self.exporter = AuditExporter(store, spool, meter=telemetry.meter if telemetry.enabled else None,
                                      on_unavailable=on_unavailable, tracer=tracer,
                                      lease=telemetry.config.outbox_lease)
        self._app = nexus_app
        nexus_app.records.add(self.exporter)

    def stats(self) -> dict[str, int]:
        if self.exporter is None:
            return {}
        return {**self.exporter.counts, "pending": self.exporter.spool.counts()["pending"]}

    def teardown(self) -> None:
        if self._app is not None and self.exporter is not None:
            self._app.records.remove(self.exporter)
            self._app = None
