"""The event every workflow hook receives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class WorkflowEvent:
    """One workflow execution as hooks and middleware see it.

    The same object travels through ``on_workflow_started``, the middleware
    chain and ``on_workflow_completed`` / ``on_workflow_failed``, so a hook
    may read what an earlier stage filled in. ``inputs`` are the caller's
    inputs as given: only telemetry redacts them.
    """

    workflow_name: str
    workflow_id: str
    session_id: str | None
    channel: str
    inputs: Mapping[str, Any]
    timestamp: float
    """Start time, seconds since the epoch (JSON-friendly, as webhooks need)."""
    result: Any = None
    error: BaseException | None = None
    duration: float | None = None
    """Seconds the workflow took (middleware included, hooks excluded); set at the end."""
    trace_id: str | None = None
    """Hex id of the trace this execution belongs to, for finding it in Jaeger."""
    span_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    """Free-form values middleware and hooks pass to each other."""
    principal: Any = None
    """The authenticated :class:`~nexus_otel.caller.Principal`, when an auth middleware ran."""

    @property
    def status(self) -> str:
        """``running``, ``completed`` or ``failed``."""
        if self.error is not None:
            return "failed"
        return "running" if self.duration is None else "completed"
