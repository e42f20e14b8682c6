"""Exporters: where spans and records leave the process, one job each.

Spans: the OTLP exporters and their encoder (``otlp_exporters``, ``otlp_encoding``),
the local store (``local``, ``spanfile``). Records: the durable ``outbox``, the
``delivery`` worker that drains it, and what it delivers to: ``webhook`` (over
``http_poster`` and ``http1``) and ``audit`` (SQLite, PostgreSQL).
"""

from .local import LocalSpanExporter

__all__ = ["LocalSpanExporter"]
