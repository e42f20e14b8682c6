"""Exporters: where spans and records leave the process, one job each.

Spans: the OTLP exporters and their encoder (``otlp_exporters``, ``otlp_encoding``),
the local store (``local``, ``spanfile``). Records: the sinks that put their
messages in the durable outbox (:mod:`nexus_otel.outbox`) and deliver from it,
over the skeleton they share (``outbox_exporter``): ``webhook`` (over
``http_poster`` and ``http1``) and ``audit`` (SQLite, PostgreSQL). ``outbox``
and ``delivery`` here are the outbox's earlier import paths (deprecated).
"""

from .audit import AuditExporter
from .local import LocalSpanExporter
from .outbox_exporter import OutboxExporter
from .webhook import WebhookExporter

__all__ = ["AuditExporter", "LocalSpanExporter", "OutboxExporter", "WebhookExporter"]
