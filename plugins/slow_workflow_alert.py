"""Alerts on slow workflows: one warning log line with the trace id, so the trace is one search away."""

import logging

from nexus_otel.plugins import NexusPlugin

log = logging.getLogger("plugins.slow_workflow_alert")


class SlowWorkflowAlert(NexusPlugin):
    """Logs a warning when a workflow takes longer than ``threshold_seconds``."""

    @property
    def name(self):
        return "slow_workflow_alert"

    @property
    def version(self):
        return "1.0.0"

    def __init__(self, threshold_seconds=1.0):
        if isinstance(threshold_seconds, bool) or not isinstance(threshold_seconds, (int, float)) \
                or threshold_seconds <= 0:
            raise ValueError(f"threshold_seconds must be a positive number, got {threshold_seconds!r}")
        self.threshold_seconds = threshold_seconds
        self.alerts = 0

    def setup(self, nexus_app):
        @nexus_app.on_workflow_completed
        def check(event):
            if event.duration > self.threshold_seconds:
                self.alerts += 1
                log.warning("slow workflow %s took %.3fs (threshold %.3fs) trace_id=%s",
                            event.workflow_name, event.duration, self.threshold_seconds, event.trace_id)


# Loaded from a plugins folder: an instance with a threshold the demo's workflows stay under (100 ms).
plugin = SlowWorkflowAlert(threshold_seconds=0.100)
