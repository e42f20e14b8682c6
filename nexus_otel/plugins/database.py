"""``DatabasePlugin``: the seed's audit table, written from spans instead of inside the workflow.

Thin wiring of :class:`~nexus_otel.exporters.audit.AuditExporter` behind a
batching span processor (behind redaction). The seed's
``DatabasePlugin("postgresql://localhost/nexus")`` works as written; with no
DSN the rows go to SQLite in the data directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..exporters.audit import AuditExporter, open_store
from ..exporters.outbox import Outbox
from ..plugin import NexusPlugin
from ..processors.workflow_filter import WorkflowSpansOnly


class DatabasePlugin(NexusPlugin):
    """Writes one ``workflow_executions`` row per execution to SQLite or PostgreSQL."""

    name = "database"
    version = "1.0.0"

    def __init__(self, connection_string: str | None = None, *, table: str = "workflow_executions",
                 spool_path: str | None = None) -> None:
        self.connection_string = connection_string
        self.table = table
        self.spool_path = spool_path
        self.exporter: AuditExporter | None = None
        self._processor: Any = None
        self._telemetry: Any = None

    def setup(self, nexus_app: Any) -> None:
        data_dir = Path(nexus_app.telemetry.config.data_dir)
        dsn = self.connection_string or f"sqlite:///{data_dir / 'audit.sqlite'}"
        store = open_store(dsn, self.table)
        self._telemetry = nexus_app.telemetry
        if not self._telemetry.enabled:
            store.close()
            return
        spool = Outbox(Path(self.spool_path) if self.spool_path else data_dir / "audit-spool.sqlite")
        self.exporter = AuditExporter(store, spool, meter=self._telemetry.meter)
        self._processor = WorkflowSpansOnly(
            self._telemetry.batch_processor(self.exporter, "audit", schedule_delay_millis=200))
        self._telemetry.add_span_processor(self._processor)

    def stats(self) -> dict[str, int]:
        if self.exporter is None:
            return {}
        return {**self.exporter.counts, "pending": self.exporter.spool.counts()["pending"]}

    def teardown(self) -> None:
        if self._processor is not None:
            self._telemetry.remove_span_processor(self._processor)
            self._processor = None
