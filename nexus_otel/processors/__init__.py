"""Processors: the building blocks the built-in plugins wire into an app.

Span processors see every span as it ends (``span_redaction``, ``tail_sampling``,
``children``, ``metered``); record processors see every execution's record
(``request_log``, ``workflow_stats``).
"""

from .span_redaction import RedactingSpanProcessor

__all__ = ["RedactingSpanProcessor"]
