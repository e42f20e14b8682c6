"""``MetricsPlugin``: Kailash Nexus's ``get_metrics()`` figures, from every execution's record.

The contract's RED metrics (``nexus_workflow_executions_total``,
``nexus_workflow_duration_seconds`` with trace-id exemplars, ...) are recorded
by the host for every app. This plugin adds the in-process view Kailash
Nexus's plugin API promised, overall and per workflow, counted from every
execution (never sampled) through
:class:`~nexus_otel.processors.workflow_stats.WorkflowStatsProcessor`.
"""

from __future__ import annotations

from typing import Any

from ..plugin_base import NexusPlugin
from ..processors.workflow_stats import WorkflowStatsProcessor


class MetricsPlugin(NexusPlugin):
    """Workflow counts, success rate and durations; ``get_metrics()`` returns them."""

    name = "metrics"
    version = "1.0.0"

    def __init__(self) -> None:
        self.processor = WorkflowStatsProcessor()
        self._app: Any = None

    def setup(self, nexus_app: Any) -> None:
        self._app = nexus_app
        nexus_app.records.add(self.processor)

    def get_metrics(self) -> dict[str, Any]:
        """``requests_total``, ``requests_success``, ``requests_failed``, ``total_duration``,
        ``avg_duration``, ``success_rate``; and ``workflows``: the same per workflow."""
        return self.processor.snapshot()

    def teardown(self) -> None:
        if self._app is not None:
            self._app.records.remove(self.processor)
            self._app = None
