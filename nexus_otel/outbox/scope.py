"""Which messages of a shared outbox one sink sees: an SQL condition on ``destination`` and the same test in Python.

The built-in durable sinks share one outbox file (one write per execution):
the webhook exporter's messages go to URLs, the audit exporter's to a plain
name. A :class:`Scope` states a sink's part twice, once as SQL for the table
and once as a Python test for the messages still held in memory; the two
must agree (each scope here is built so that they do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Scope(NamedTuple):
    """An SQL condition on ``destination``, its parameters, and the same test in Python
    (for messages not yet in the table); a plain ``(sql, params)`` pair works too."""

    sql: str
    params: tuple[Any, ...]
    matches: Callable[[str], bool] | None = None


def _any(destination: str) -> bool:
    return True


def _is_url(destination: str) -> bool:
    return destination.startswith(("http://", "https://"))


ALL = Scope("1 = 1", (), _any)
WEBHOOK_SCOPE = Scope("(destination LIKE 'http://%' OR destination LIKE 'https://%')", (), _is_url)
"""Webhook destinations are URLs; other sinks sharing an outbox use plain names."""


def destination_scope(name: str) -> Scope:
    """The messages to one destination."""
    return Scope("destination = ?", (name,), name.__eq__)


def matcher(scope: tuple[Any, ...]) -> Callable[[str], bool] | None:
    """The scope's Python test, None for a plain ``(sql, params)`` pair (whose messages must be in the table)."""
    return scope[2] if len(scope) > 2 else None
