"""Adds deployment attributes to every workflow span, with a standard OpenTelemetry span processor.

The plugin is thin wiring: the work is done by a ``SpanProcessor`` that any
OpenTelemetry app could reuse. Attributes set in ``on_start`` are on the span
before anything else sees it, so every exporter and dashboard gets them.
"""

import os

from opentelemetry.sdk.trace import SpanProcessor

from nexus_otel.plugins import NexusPlugin


class WorkflowAttributesProcessor(SpanProcessor):
    """Sets fixed attributes on spans whose name starts with ``workflow ``."""

    def __init__(self, attributes):
        self.attributes = dict(attributes)

    def on_start(self, span, parent_context=None):
        if span.name.startswith("workflow "):
            span.set_attributes(self.attributes)


class SpanAttributesPlugin(NexusPlugin):
    """Tags every workflow span with the deployment environment and host."""

    @property
    def name(self):
        return "span_attributes"

    @property
    def version(self):
        return "1.0.0"

    def __init__(self, environment=None):
        self.environment = environment or os.environ.get("DEPLOYMENT_ENVIRONMENT", "development")

    def setup(self, nexus_app):
        nexus_app.telemetry.add_span_processor(WorkflowAttributesProcessor({
            "deployment.environment.name": self.environment,
            "host.name": os.uname().nodename,
        }))
