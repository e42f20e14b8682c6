"""Span exporters: sinks behind a span processor, one job each."""

from .local import LocalSpanExporter

__all__ = ["LocalSpanExporter"]
