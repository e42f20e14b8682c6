"""Pass only workflow spans on to a processor: sinks that describe executions skip hook and HTTP spans cheaply."""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ..telemetry import contract as c


class WorkflowSpansOnly(SpanProcessor):
    """Forwards ``on_end`` of workflow spans (those with ``nexus.workflow.name``) to ``processor``."""

    def __init__(self, processor: SpanProcessor) -> None:
        self.processor = processor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes
        if attrs and c.WORKFLOW_NAME in attrs:
            self.processor.on_end(span)

    def shutdown(self) -> None:
        self.processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.processor.force_flush(timeout_millis)
