"""The :class:`ExecutionRecord`: what downstream systems learn of one workflow execution."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, fields
from typing import Any

from .. import fastjson

RUNNING = "running"


def _iso(seconds: float) -> str:
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat(timespec="microseconds")


@dataclass
class ExecutionRecord:
    """One workflow execution, as sinks see it: names, ids, timing, outcome; secrets already masked.

    Read-only by convention (every sink gets the same object); not frozen, because a
    frozen dataclass costs several microseconds more to build, on every execution.

    A record is made when an execution starts (``status="running"``) and again
    when it ends (``completed`` or ``failed``), whatever the trace sampler
    decided. ``trace_id`` names the execution's trace even when that trace was
    not kept; ``trace_sampled`` says whether it was sampled at its start.
    """

    workflow: str
    workflow_id: str
    status: str
    """``running``, ``completed``, ``failed``, or ``rejected`` (turned away by auth or rate limiting)."""
    channel: str
    session_id: str | None
    started_at: float
    """Seconds since the epoch."""
    ended_at: float | None = None
    duration: float | None = None
    """Seconds the workflow took (middleware included, hooks excluded), as ``WorkflowEvent.duration``."""
    trace_id: str | None = None
    span_id: str | None = None
    trace_sampled: bool = False
    error_type: str | None = None
    error: str | None = None
    """``"<type>: <message>"`` of a failure, redacted and cut to the redactor's limit."""
    inputs: str | None = None
    """The inputs as redacted JSON, when the app records inputs."""
    cache_hit: bool | None = None
    baggage: dict[str, str] | None = None
    """The listed keys of the W3C baggage the execution came with (``NEXUS_OTEL_BAGGAGE_KEYS``), redacted."""

    @property
    def failed(self) -> bool:
        """True for ``failed`` and ``rejected``: the workflow did not complete."""
        return self.status in ("failed", "rejected")

    def to_json(self) -> str:
        """The fields as a compact JSON array (for a durable store; :meth:`from_json` reads it back). Made once.

        Written by :mod:`~nexus_otel.fastjson` (orjson: this runs on the workflow's thread).
        """
        try:
            return self._json
        except AttributeError:
            self._json: str = fastjson.dumps([getattr(self, name) for name in _FIELDS])
            return self._json

    @classmethod
    def from_json(cls, text: str | list[Any]) -> ExecutionRecord:
        """The record :meth:`to_json` wrote (its text, or that text decoded to a list)."""
        values = fastjson.loads(text) if isinstance(text, str) else text
        return cls(*values[:len(_FIELDS)])  # a newer version's extra fields are not this one's

    @classmethod
    def stored(cls, payload: Any) -> ExecutionRecord | None:
        """The record a durable sink stored (:meth:`to_json` decoded: a list), or None for a payload stored
        already finished (a dict, as sinks queued before 0.2)."""
        return cls.from_json(payload) if isinstance(payload, list) else None

    @property
    def started_at_iso(self) -> str:
        """``started_at`` in ISO 8601 (UTC, microseconds)."""
        return _iso(self.started_at)

    @property
    def completed_at(self) -> str | None:
        """``ended_at`` in ISO 8601 (UTC, microseconds), or None while running."""
        return _iso(self.ended_at) if self.ended_at is not None else None

    def as_dict(self) -> dict[str, Any]:
        """A flat JSON-friendly dict: the fields above with ISO 8601 start and end times."""
        out: dict[str, Any] = {
            "workflow": self.workflow,
            "workflow_id": self.workflow_id,
            "status": self.status,
            "duration": self.duration,
            "timestamp": self.started_at,
            "started_at": self.started_at_iso,
            "completed_at": self.completed_at,
            "session_id": self.session_id,
            "channel": self.channel,
            "trace_id": self.trace_id,
            "error_type": self.error_type,
            "error": self.error,
        }
        if self.cache_hit is not None:
            out["cache_hit"] = self.cache_hit
        if self.baggage:
            out["baggage"] = self.baggage
        return out


_FIELDS = tuple(f.name for f in fields(ExecutionRecord))
