"""Workflow counts and durations derived from finished workflow spans, overall and per workflow.

The figures are the seed's ``get_metrics()`` dictionary. They come from the
same spans every exporter receives, so they agree with what Jaeger shows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from ..telemetry import contract as c


@dataclass(slots=True)
class _Counts:
    total: int = 0
    success: int = 0
    failed: int = 0
    total_duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests_total": self.total,
            "requests_success": self.success,
            "requests_failed": self.failed,
            "total_duration": self.total_duration,
            "avg_duration": self.total_duration / self.success if self.success else 0,
            "success_rate": self.success / self.total if self.total else 0,
        }


class WorkflowStatsProcessor(SpanProcessor):
    """Counts every finished workflow span; ``snapshot()`` returns the figures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all = _Counts()
        self._by_workflow: dict[str, _Counts] = {}

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        workflow = attrs.get(c.WORKFLOW_NAME)
        if workflow is None:
            return
        failed = span.status.status_code is StatusCode.ERROR
        duration = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
        with self._lock:
            for counts in (self._all, self._by_workflow.setdefault(str(workflow), _Counts())):
                counts.total += 1
                if failed:
                    counts.failed += 1
                else:
                    counts.success += 1
                    counts.total_duration += duration

    def snapshot(self) -> dict[str, Any]:
        """The seed's dictionary overall, plus ``workflows``: the same per workflow."""
        with self._lock:
            out = self._all.as_dict()
            out["workflows"] = {name: counts.as_dict() for name, counts in sorted(self._by_workflow.items())}
        return out

    def reset(self) -> None:
        with self._lock:
            self._all = _Counts()
            self._by_workflow.clear()
