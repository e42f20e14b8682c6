"""Which outbox a name opens: a ``postgresql://`` URL is the shared outbox, anything else a local file."""

from __future__ import annotations

import os

from .postgres import PostgresOutbox, is_url
from .queue import Outbox


def open_outbox(target: str | os.PathLike[str]) -> Outbox | PostgresOutbox:
    """The shared outbox for a ``postgresql://`` URL (:class:`~.postgres.PostgresOutbox`), else the local one
    at the path (:class:`~.queue.Outbox`)."""
    if is_url(target):
        return PostgresOutbox(str(target))
    return Outbox(target)
