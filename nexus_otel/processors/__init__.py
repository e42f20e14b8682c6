"""Span processors: the building blocks the built-in plugins wire into an app."""

from .redaction import RedactingSpanProcessor

__all__ = ["RedactingSpanProcessor"]
