"""The telemetry contract: every span name, attribute key and metric nexus-otel emits.

Dashboards, alerts and users' queries depend on these names, so they live in
one place and change only on purpose. Prometheus names (in brackets) follow
from the OpenTelemetry names by the Prometheus exporter's rules.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTRUMENTATION_NAME = "nexus_otel"

# Span names.
WORKFLOW_SPAN = "workflow {workflow}"
HOOK_SPAN = "hook {event} {plugin}"
PLUGIN_SETUP_SPAN = "plugin setup {plugin}"
PLUGIN_TEARDOWN_SPAN = "plugin teardown {plugin}"
APP_START_SPAN = "nexus start"
APP_STOP_SPAN = "nexus stop"
NODE_SPAN = "node {node}"
"""A Kailash node's execution inside a workflow span (``nexus_otel.kailash``)."""
GEN_AI_WORKFLOW_SPAN = "invoke_workflow {workflow}"
"""The workflow span's name under ``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental`` (the GenAI
conventions' "invoke workflow" span)."""

# Span attributes.
WORKFLOW_NAME = "nexus.workflow.name"
WORKFLOW_ID = "nexus.workflow.id"
WORKFLOW_INPUTS = "nexus.workflow.inputs"
SESSION_ID = "session.id"
CHANNEL = "nexus.channel"
PLUGIN_NAME = "nexus.plugin.name"
PLUGIN_VERSION = "nexus.plugin.version"
HOOK_EVENT = "nexus.hook.event"
ERROR_TYPE = "error.type"
SERVICE_NAME = "service.name"
SERVICE_INSTANCE_ID = "service.instance.id"
NODE_ID = "nexus.node.id"
NODE_TYPE = "nexus.node.type"
NODE_STATUS = "nexus.node.status"
"""``completed`` or ``failed``."""
KAILASH_RUN_ID = "kailash.run_id"
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_INVOKE_WORKFLOW = "invoke_workflow"
GEN_AI_WORKFLOW_NAME = "gen_ai.workflow.name"
"""On the workflow span with the GenAI opt-in (``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``)."""

# Audit batch spans (``nexus_otel.exporters.audit_spans``): OpenTelemetry's database client conventions.
AUDIT_TRACER = "nexus_otel.audit"
"""The instrumentation scope of audit batch spans."""
DB_SYSTEM_NAME = "db.system.name"
DB_COLLECTION_NAME = "db.collection.name"
DB_NAMESPACE = "db.namespace"
DB_OPERATION_NAME = "db.operation.name"
DB_OPERATION_BATCH_SIZE = "db.operation.batch.size"
DB_RESPONSE_STATUS_CODE = "db.response.status_code"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
AUDIT_EXECUTIONS = "nexus.audit.executions"
"""How many executions an audit batch span's write held (its links stop at the span link limit)."""

# Log records (the request log as OpenTelemetry log records: ``docs/logs.md``).
REQUEST_LOG_SCOPE = "nexus_otel.requests"
"""The instrumentation scope (OTel logger name) of the request log's records."""
LOG_WORKFLOW_STARTED = "nexus.workflow.started"
LOG_WORKFLOW_COMPLETED = "nexus.workflow.completed"
LOG_WORKFLOW_FAILED = "nexus.workflow.failed"
LOG_WORKFLOW_REJECTED = "nexus.workflow.rejected"
LOG_EVENTS = (LOG_WORKFLOW_STARTED, LOG_WORKFLOW_COMPLETED, LOG_WORKFLOW_FAILED, LOG_WORKFLOW_REJECTED)
"""The ``event_name`` of each request log record."""

# Log record attributes (besides the span attributes above: workflow name and id, channel, session, inputs).
WORKFLOW_STATUS = "nexus.workflow.status"
"""``completed``, ``failed`` or ``rejected``: on the end record."""
WORKFLOW_DURATION_ATTR = "nexus.workflow.duration"
"""Seconds (a float) the workflow took: on the end record (the metric of the same name holds all of them)."""
CACHE_HIT = "nexus.cache.hit"
"""True when the result came from ``CachingPlugin``'s cache, false when it missed; absent when no cache looked."""
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"

# Webhook delivery spans (``nexus_otel.exporters.delivery_spans``): OpenTelemetry's HTTP client conventions.
DELIVERY_TRACER = "nexus_otel.webhooks"
"""The instrumentation scope of webhook attempt spans."""
WEBHOOK_SPAN = "POST"
"""Each webhook attempt sent: a CLIENT span named by its method, as the HTTP client conventions say."""
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
URL_FULL = "url.full"
"""The receiver's URL with its credentials and secret query values replaced by ``REDACTED``."""
WEBHOOK_ID = "nexus.webhook.id"
"""The payload's ``webhook-id`` (the same on every attempt, so a receiver can drop duplicates)."""
WEBHOOK_ATTEMPT = "nexus.webhook.attempt"
"""1 for a payload's first attempt (and the first after a replay), 2 for the next, ..."""
WEBHOOK_ERROR = "nexus.webhook.error"
"""On the events below: the delivery's error as the outbox keeps it (``HTTP 500``, ``answer timeout: ...``)."""
WEBHOOK_DEAD_LETTER_EVENT = "nexus.webhook.dead_letter"
"""Event on the span of the attempt after which the payload was given up (moved to the dead letters)."""
WEBHOOK_REPLAYED_EVENT = "nexus.webhook.replayed"
"""Event on the span of the first attempt after ``nexus-otel webhooks replay`` (or ``WebhookPlugin.replay()``)."""

# Stuck executions (``nexus_otel.running``): an execution running past its workflow's ``stuck_after``.
WORKFLOW_STUCK_EVENT = "nexus.workflow.stuck"
"""Event on the workflow span (when it is recording) of an execution found running past its ``stuck_after``."""
STUCK_ELAPSED = "nexus.workflow.elapsed"
"""On the stuck event: seconds (a float) the execution had been running."""
STUCK_AFTER = "nexus.workflow.stuck_after"
"""On the stuck event: the workflow's ``stuck_after`` seconds."""
STUCK_PLACE = "nexus.workflow.place"
"""On the stuck event: what it was in (``hook <event> <plugin>``, ``node <node id>``), if not its own code."""

# Hook events (the value of ``nexus.hook.event`` and of the metrics' ``event``).
WORKFLOW_STARTED = "workflow_started"
WORKFLOW_COMPLETED = "workflow_completed"
WORKFLOW_FAILED = "workflow_failed"
STARTUP = "startup"
SHUTDOWN = "shutdown"
SETUP = "setup"
TEARDOWN = "teardown"
WORKFLOW_EVENTS = (WORKFLOW_STARTED, WORKFLOW_COMPLETED, WORKFLOW_FAILED)
LIFECYCLE_EVENTS = (STARTUP, SHUTDOWN)

# Metric attribute keys (short on purpose: they become Prometheus labels).
M_WORKFLOW = "workflow"
M_CHANNEL = "channel"
M_STATUS = "status"
M_PLUGIN = "plugin"
M_EVENT = "event"
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_REJECTED = "rejected"
"""Turned away by auth or rate limiting before the workflow ran: the caller's doing, not a failure."""

# Name used for hooks registered outside any plugin's setup.
APP_PLUGIN_NAME = "app"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One instrument of the contract."""

    name: str
    unit: str
    description: str
    prometheus_name: str
    buckets: tuple[float, ...] | None = None


# Seconds. Workflows run from milliseconds to minutes; hooks should be fast.
WORKFLOW_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)
HOOK_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
)

WORKFLOW_DURATION = MetricSpec(
    "nexus.workflow.duration", "s", "Duration of workflow executions.",
    "nexus_workflow_duration_seconds", WORKFLOW_BUCKETS,
)
WORKFLOW_EXECUTIONS = MetricSpec(
    "nexus.workflow.executions", "1", "Finished workflow executions.",
    "nexus_workflow_executions_total",
)
WORKFLOW_ACTIVE = MetricSpec(
    "nexus.workflow.active", "1", "Workflow executions in progress.",
    "nexus_workflow_active",
)
HOOK_DURATION = MetricSpec(
    "nexus.plugin.hook.duration", "s", "Duration of plugin hook runs.",
    "nexus_plugin_hook_duration_seconds", HOOK_BUCKETS,
)
PLUGIN_ERRORS = MetricSpec(
    "nexus.plugin.errors", "1", "Plugin hooks, setups and teardowns that raised.",
    "nexus_plugin_errors_total",
)
METRICS = (WORKFLOW_DURATION, WORKFLOW_EXECUTIONS, WORKFLOW_ACTIVE, HOOK_DURATION, PLUGIN_ERRORS)
WORKFLOW_OLDEST_ACTIVE = MetricSpec(
    "nexus.workflow.oldest_active", "s",
    "Seconds the oldest in-flight execution of each workflow has been running (no series while none runs).",
    "nexus_workflow_oldest_active_seconds",
)
"""An observable gauge read from the app's running executions (``nexus_otel.running``), with a ``workflow``
attribute; ``serve --workers`` merges it by maximum, so the stuck alert sees the oldest of all workers'."""


def error_type(exc: BaseException) -> str:
    """The ``error.type`` of an exception: its qualified class name."""
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
