"""Workflow counts and durations from every execution's record, overall and per workflow.

The figures are Kailash Nexus's plugin API's ``get_metrics()`` dictionary.
They come from records, not spans, so they count every execution whatever
the trace sampler kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..records import ExecutionRecord, RecordProcessor


@dataclass(slots=True)
class _Counts:
    total: int = 0
    success: int = 0
    failed: int = 0
    rejected: int = 0
    total_duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_total": self.total,
            "requests_success": self.success,
            "requests_failed": self.failed,
            "requests_rejected": self.rejected,
            "total_duration": self.total_duration,
            "avg_duration": self.total_duration / self.success if self.success else 0,
            "success_rate": self.success / self.total if self.total else 0,
        }


class WorkflowStatsProcessor(RecordProcessor):
    """Counts every finished execution; ``snapshot()`` returns the figures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all = _Counts()
        self._by_workflow: dict[str, _Counts] = {}

    def on_end(self, record: ExecutionRecord) -> None:
        failed = record.failed
        rejected = record.status == "rejected"
        duration = record.duration or 0.0
        with self._lock:
            for counts in (self._all, self._by_workflow.setdefault(record.workflow, _Counts())):
                counts.total += 1
                if failed:
                    counts.failed += 1
                    if rejected:
                        counts.rejected += 1
                else:
                    counts.success += 1
                    counts.total_duration += duration

    def snapshot(self) -> dict[str, Any]:
        """Kailash Nexus's ``get_metrics()`` dictionary overall, plus ``workflows``: the same per workflow.

        ``requests_failed`` includes ``requests_rejected`` (calls turned away by auth or rate
        limiting), as the ``on_workflow_failed`` hooks see them.
        """
        with self._lock:
            out = self._all.as_dict()
            out["workflows"] = {name: counts.as_dict() for name, counts in sorted(self._by_workflow.items())}
        return out

    def reset(self) -> None:
        with self._lock:
            self._all = _Counts()
            self._by_workflow.clear()
