#!/usr/bin/env python3
"""Generate the Grafana dashboards for nexus-otel's metrics into grafana/dashboards/.

    python grafana/generate.py            # (re)write workflows.json, plugins.json, pipeline.json
    python grafana/generate.py --check    # exit 1 if the committed JSON differs from what this generates

The dashboards are built with grafana-foundation-sdk's builders (types for Grafana 11.4; the
Grafana deploy/compose.yaml runs, GRAFANA_VERSION in deploy/versions.env, reads them) and written
reproducibly: sorted keys, 2-space indent, a trailing newline, fixed uids and panel ids. Every
metrics query reads the Prometheus datasource by uid ``prometheus``
(grafana/provisioning/datasources/datasources.yaml) and filters on the template variable
``$service``, and on ``$workflow`` / ``$channel`` (or ``$plugin`` / ``$event``) wherever the metric
carries that label. Latency panels ask for exemplars: a point links to its trace in Jaeger through
the datasource's ``exemplarTraceIdDestinations``.

The Workflows dashboard also reads the request log's log records from VictoriaLogs (datasource uid
``victorialogs``, LogsQL), filtered by the same variables; a record's ``trace_id`` links to its
trace in Jaeger (the datasource's derived field), and a trace in Jaeger to its records.

Metric names and labels are the telemetry contract's (nexus_otel/telemetry/contract.py, README);
log record fields are the request log's (docs/logs.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import logs as logs_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.builders import stat as stat_builder
from grafana_foundation_sdk.builders import timeseries as timeseries_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import common as common_model
from grafana_foundation_sdk.models import dashboard as dashboard_model

HERE = Path(__file__).resolve().parent
DASHBOARDS_DIR = HERE / "dashboards"

PROMETHEUS_UID = "prometheus"
JAEGER_UID = "jaeger"
VICTORIALOGS_UID = "victorialogs"
VICTORIALOGS_TYPE = "victoriametrics-logs-datasource"
REQUEST_LOG_SCOPE = "nexus_otel.requests"  # the request log's instrumentation scope (docs/logs.md)
TAG = "nexus-otel"
ALL_REGEX = ".*"

DATASOURCE = dashboard_model.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
LOGS_DATASOURCE = dashboard_model.DataSourceRef(type_val=VICTORIALOGS_TYPE, uid=VICTORIALOGS_UID)

# Thresholds: (value, color) steps above a green base.
ERROR_RATIO_STEPS = ((0.01, "orange"), (0.05, "red"))          # 1 % / 5 % of executions failing
LATENCY_STEPS = ((0.5, "orange"), (1.0, "red"))                # workflows: 500 ms / 1 s
HOOK_LATENCY_STEPS = ((0.01, "orange"), (0.1, "red"))          # hooks should be fast: 10 ms / 100 ms
SPAN_LOSS_STEPS = ((0.001, "orange"), (0.01, "red"))           # spans failed, dropped or overflowed
LOG_LOSS_STEPS = ((0.001, "orange"), (0.01, "red"))            # log records failed or dropped
OUTBOX_STEPS = ((100.0, "orange"), (1000.0, "red"))             # payloads waiting
STUCK_AFTER = 300.0  # seconds in flight: the WorkflowExecutionStuck alert's threshold (deploy/alerts.yml)
STUCK_STEPS = ((STUCK_AFTER, "red"),)
BACKLOG_OLD_AFTER = 900.0  # seconds pending: the RecordsOutboxBacklogOld alert's threshold (deploy/alerts.yml)
SHARED_OUTBOX = "postgres(ql)?://.*"  # the shared outbox's `outbox` label: its URL (docs/records.md)


# --- PromQL ---------------------------------------------------------------------------------------

def selector(metric: str, *labels: str, extra: Sequence[str] = (), **fixed: str) -> str:
    """``metric{service_name=~"$service", <label>=~"$<label>"..., <k>="<v>"..., <extra>...}``."""
    matchers = ['service_name=~"$service"']
    matchers += [f'{label}=~"${label}"' for label in labels]
    matchers += [f'{key}="{value}"' for key, value in fixed.items()]
    matchers += list(extra)
    return f"{metric}{{{', '.join(matchers)}}}"


def rate(series: str, window: str = "$__rate_interval") -> str:
    return f"rate({series}[{window}])"


def increase(series: str, window: str = "$__range") -> str:
    return f"increase({series}[{window}])"


def sum_by(labels: Sequence[str], expr: str) -> str:
    return f"sum by ({', '.join(labels)}) ({expr})" if labels else f"sum({expr})"


def quantile(q: float, bucket_series: str, labels: Sequence[str], window: str = "$__rate_interval") -> str:
    return f"histogram_quantile({q:g}, {sum_by(['le', *labels], rate(bucket_series, window))})"


def ratio(part: str, whole: str) -> str:
    """``part / whole``, with a 0 (not a gap) where ``whole`` has series and ``part`` has none.

    ``part`` and ``whole`` must be aggregated by the same labels.
    """
    return f"({part} or 0 * {whole}) / {whole}"


# --- LogsQL ---------------------------------------------------------------------------------------

def logs_filter(**fields: str) -> str:
    """The request log's records of ``$service``, each ``field=variable`` a regexp on the variable's values.

    A multi-value variable becomes ``(a|b)`` inside ``:~"..."`` (the VictoriaLogs datasource's
    interpolation), and "All" is ``.*``; the anchors make a value match whole.
    """
    filters = [f'scope.name:="{REQUEST_LOG_SCOPE}"', 'service.name:~"^$service$"']
    filters += [f'{field}:~"^${variable}$"' for field, variable in fields.items()]
    return " AND ".join(filters)


class LogsQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A VictoriaLogs datasource target (LogsQL). grafana-foundation-sdk has no type for this plugin's
    queries, so the target is the plain object the plugin stores: ``expr``, ``queryType`` (``instant``:
    log lines from /select/logsql/query; ``statsRange``: series from /select/logsql/stats_query_range)."""

    def __init__(self, ref_id: str, expr: str, query_type: str, legend: str = "") -> None:
        self.target: dict[str, Any] = {"refId": ref_id, "datasource": {"type": VICTORIALOGS_TYPE,
                                                                        "uid": VICTORIALOGS_UID},
                                       "editorMode": "code", "expr": expr, "queryType": query_type}
        if legend:
            self.target["legendFormat"] = legend

    def build(self) -> cogvariants.Dataquery:
        return UnknownDataquery(dict(self.target))


# --- Panels ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    exemplar: bool = False


def thresholds(steps: Sequence[tuple[float, str]]) -> dashboard_builder.ThresholdsConfig:
    return dashboard_builder.ThresholdsConfig().mode(dashboard_model.ThresholdsMode.ABSOLUTE).steps(
        [dashboard_model.Threshold(value=None, color="green")]
        + [dashboard_model.Threshold(value=value, color=color) for value, color in steps])


def targets(queries: Sequence[Query], *, instant: bool = False) -> list[prometheus_builder.Dataquery]:
    out = []
    for index, q in enumerate(queries):
        target = (prometheus_builder.Dataquery().ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
                  .expr(q.expr).legend_format(q.legend).exemplar(q.exemplar))
        out.append(target.instant() if instant else target.range())
    return out


def color_override(panel: Any, regexp: str, color: str) -> Any:
    return panel.override_by_regexp(regexp, [dashboard_model.DynamicConfigValue(
        id_val="color", value={"mode": "fixed", "fixedColor": color})])


def right_axis(panel: Any, ref_id: str, unit: str, label: str, steps: Sequence[tuple[float, str]]) -> Any:
    """Draw query ``ref_id``'s series on an axis of their own, on the right, in ``unit``, with ``steps`` dashed."""
    return panel.override_by_query(ref_id, [
        dashboard_model.DynamicConfigValue(id_val="unit", value=unit),
        dashboard_model.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
        dashboard_model.DynamicConfigValue(id_val="custom.axisLabel", value=label),
        dashboard_model.DynamicConfigValue(id_val="thresholds", value={
            "mode": "absolute", "steps": [{"value": None, "color": "green"}]
            + [{"value": value, "color": color} for value, color in steps]}),
        dashboard_model.DynamicConfigValue(id_val="custom.thresholdsStyle", value={"mode": "dashed"})])


def timeseries(title: str, description: str, unit: str, queries: Sequence[Query], *,
               steps: Sequence[tuple[float, str]] | None = None, width: int = 12, height: int = 8,
               stacked: bool = False, min_val: float | None = 0, max_val: float | None = None
               ) -> timeseries_builder.Panel:
    panel = (timeseries_builder.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(height).targets(targets(queries)).fill_opacity(10)
             .line_width(1).show_points(common_model.VisibilityMode.NEVER)
             .legend(common_builder.VizLegendOptions().show_legend(True)
                     .display_mode(common_model.LegendDisplayMode.TABLE)
                     .placement(common_model.LegendPlacement.BOTTOM).calcs(["mean", "max", "lastNotNull"]))
             .tooltip(common_builder.VizTooltipOptions().mode(common_model.TooltipDisplayMode.MULTI)
                      .sort(common_model.SortOrder.DESCENDING)))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if steps:
        panel = (panel.thresholds(thresholds(steps))
                 .thresholds_style(common_builder.GraphThresholdsStyleConfig()
                                   .mode(common_model.GraphThresholdsStyleMode.DASHED)))
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common_model.StackingMode.NORMAL))
    return panel


def stat(title: str, description: str, unit: str, queries: Sequence[Query], *,
         steps: Sequence[tuple[float, str]] | None = None, width: int = 6, height: int = 4
         ) -> stat_builder.Panel:
    panel = (stat_builder.Panel().title(title).description(description).datasource(DATASOURCE)
             .unit(unit).span(width).height(height).targets(targets(queries, instant=True))
             .graph_mode(common_model.BigValueGraphMode.NONE)
             .color_mode(common_model.BigValueColorMode.VALUE)
             .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))
    return panel.thresholds(thresholds(steps or ()))


def logs_panel(title: str, description: str, expr: str, *, width: int = 24, height: int = 12) -> logs_builder.Panel:
    """Log lines, newest first, each expandable to its fields (its trace_id links to Jaeger)."""
    return (logs_builder.Panel().title(title).description(description).datasource(LOGS_DATASOURCE)
            .span(width).height(height).targets([LogsQuery("A", expr, "instant")])
            .show_time(True).wrap_log_message(True).enable_log_details(True).show_common_labels(False)
            .show_labels(False).prettify_log_message(False)
            .sort_order(common_model.LogsSortOrder.DESCENDING)
            .dedup_strategy(common_model.LogsDedupStrategy.NONE))


def logs_timeseries(title: str, description: str, expr: str, legend: str, *, width: int = 24,
                    height: int = 8) -> timeseries_builder.Panel:
    """Counts from log records per interval (a LogsQL ``stats`` query), as bars stacked by series."""
    return (timeseries_builder.Panel().title(title).description(description).datasource(LOGS_DATASOURCE)
            .unit("short").span(width).height(height).min(0)
            .targets([LogsQuery("A", expr, "statsRange", legend)])
            .draw_style(common_model.GraphDrawStyle.BARS).fill_opacity(80).line_width(1)
            .stacking(common_builder.StackingConfig().mode(common_model.StackingMode.NORMAL))
            .legend(common_builder.VizLegendOptions().show_legend(True)
                    .display_mode(common_model.LegendDisplayMode.TABLE)
                    .placement(common_model.LegendPlacement.BOTTOM).calcs(["sum"]))
            .tooltip(common_builder.VizTooltipOptions().mode(common_model.TooltipDisplayMode.MULTI)
                     .sort(common_model.SortOrder.DESCENDING)))


# --- Dashboards -----------------------------------------------------------------------------------

def variable(name: str, label: str, query: str) -> dashboard_builder.QueryVariable:
    """A multi-value Prometheus query variable whose "All" is the regex ``.*``."""
    return (dashboard_builder.QueryVariable(name).label(label).datasource(DATASOURCE).query(query)
            .multi(True).include_all(True).all_value(ALL_REGEX)
            .current(dashboard_model.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .refresh(dashboard_model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dashboard_model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC))


SERVICE_VAR = variable("service", "Service", "label_values(nexus_workflow_executions_total, service_name)")
WORKFLOW_VAR = variable("workflow", "Workflow", 'label_values(nexus_workflow_executions_total{'
                        'service_name=~"$service"}, workflow)')
CHANNEL_VAR = variable("channel", "Channel", 'label_values(nexus_workflow_executions_total{'
                       'service_name=~"$service", workflow=~"$workflow"}, channel)')
PLUGIN_VAR = variable("plugin", "Plugin", 'label_values(nexus_plugin_hook_duration_seconds_count{'
                      'service_name=~"$service"}, plugin)')
EVENT_VAR = variable("event", "Event", 'label_values(nexus_plugin_hook_duration_seconds_count{'
                     'service_name=~"$service", plugin=~"$plugin"}, event)')


def dashboard(uid: str, title: str, description: str, variables: Sequence[Any],
              panels: Sequence[Any]) -> dashboard_model.Dashboard:
    builder = (dashboard_builder.Dashboard(title).uid(uid).description(description).tags([TAG])
               .time("now-1h", "now").refresh("30s").timezone("browser").editable()
               .tooltip(dashboard_model.DashboardCursorSync.CROSSHAIR)
               .link(dashboard_builder.DashboardLink("nexus-otel").type(dashboard_model.DashboardLinkType.DASHBOARDS)
                     .tags([TAG]).as_dropdown(True).include_vars(True).keep_time(True)))
    for var in variables:
        builder = builder.with_variable(var)
    for panel_id, panel in enumerate(panels, start=1):
        builder = builder.with_panel(panel.id(panel_id))
    return builder.build()


def workflows() -> dashboard_model.Dashboard:
    executions = selector("nexus_workflow_executions_total", "workflow", "channel")
    failed = selector("nexus_workflow_executions_total", "workflow", "channel", status="failed")
    duration = selector("nexus_workflow_duration_seconds_bucket", "workflow", "channel")
    active = selector("nexus_workflow_active", "workflow")
    oldest = selector("nexus_workflow_oldest_active_seconds", "workflow")
    http_count = selector("http_server_request_duration_seconds_count")
    http_bucket = selector("http_server_request_duration_seconds_bucket")
    by_wc = ["workflow", "channel"]
    wc_legend = "{{workflow}} ({{channel}})"
    request_log = logs_filter(**{"nexus.workflow.name": "workflow", "nexus.channel": "channel"})

    panels = [
        stat("Executions", "Finished workflow executions in the time range, by status.", "short",
             [Query(sum_by(["status"], increase(executions)), "{{status}}")]),
        stat("Error ratio", "Share of executions in the time range that failed.", "percentunit",
             [Query(ratio(sum_by([], increase(failed)), sum_by([], increase(executions))), "error ratio")],
             steps=ERROR_RATIO_STEPS),
        stat("Request rate", "Workflow executions per second, all workflows and channels.", "reqps",
             [Query(sum_by([], rate(executions)), "requests")]),
        stat("Active executions", "Workflow executions in progress now.", "short",
             [Query(sum_by([], active), "active")]),
        timeseries("Request rate by workflow and channel", "Finished executions per second.", "reqps",
                   [Query(sum_by(by_wc, rate(executions)), wc_legend)]),
        timeseries("Error ratio by workflow and channel", "Failed executions / all executions.", "percentunit",
                   [Query(ratio(sum_by(by_wc, rate(failed)), sum_by(by_wc, rate(executions))), wc_legend)],
                   steps=ERROR_RATIO_STEPS, max_val=1),
        timeseries("Latency p50 / p95 / p99 by workflow and channel",
                   "Workflow duration percentiles from nexus_workflow_duration_seconds. Exemplar points "
                   "(diamonds) link to the execution's trace in Jaeger.", "s",
                   [Query(quantile(q, duration, by_wc), f"p{round(q * 100)} {wc_legend}", exemplar=True)
                    for q in (0.5, 0.95, 0.99)],
                   steps=LATENCY_STEPS, width=24, height=10),
        timeseries("Executions by status", "Finished executions per interval, by workflow and status.", "short",
                   [Query(sum_by(["workflow", "status"], increase(executions, "$__rate_interval")),
                          "{{workflow}} {{status}}")], stacked=True),
        timeseries("Active executions", "Workflow executions in progress, by workflow.", "short",
                   [Query(sum_by(["workflow"], active), "{{workflow}}")]),
        timeseries("Oldest execution in flight",
                   "How long each workflow's oldest execution still in flight has been running, the longest "
                   "over the app's instances; 0 with nothing in flight. The dashed line is the "
                   f"WorkflowExecutionStuck alert's threshold ({STUCK_AFTER:g} s; it fires after 5 more "
                   "minutes above it). `nexus-otel top URL` or GET /executions on the instance lists the "
                   "executions with their trace ids and where they wait.", "s",
                   [Query(f"max by (workflow) ({oldest}) or 0 * {sum_by(['workflow'], active)}", "{{workflow}}")],
                   steps=STUCK_STEPS, width=24),
        timeseries("HTTP requests by route and status", "Requests to the HTTP channel per second.", "reqps",
                   [Query(sum_by(["http_route", "http_response_status_code"], rate(http_count)),
                          "{{http_route}} {{http_response_status_code}}")]),
        timeseries("HTTP latency p95 by route", "95th percentile of HTTP request duration. Exemplar points "
                   "link to the request's trace in Jaeger.", "s",
                   [Query(quantile(0.95, http_bucket, ["http_route"]), "p95 {{http_route}}", exemplar=True)],
                   steps=LATENCY_STEPS),
        logs_timeseries("Request log records by workflow and status",
                        "The request log's end records (completed, failed, rejected) per interval, from "
                        "VictoriaLogs: every execution, whatever its trace's sampling.",
                        f"{request_log} AND nexus.workflow.status:* "
                        "| stats by (nexus.workflow.name, nexus.workflow.status) count() records",
                        "{{nexus.workflow.name}} {{nexus.workflow.status}}"),
        logs_panel("Request log",
                   "The request log's records (started, completed, failed, rejected) from VictoriaLogs, newest "
                   "first. Open a line for its fields (status, duration, exception.type, ...); its trace_id "
                   "links to the trace in Jaeger.", request_log),
    ]
    for panel in (panels[0], panels[7], panels[12]):
        color_override(color_override(color_override(panel, ".*completed.*", "green"), ".*failed.*", "red"),
                       ".*rejected.*", "orange")
    return dashboard("nexus-workflows", "Workflows",
                     "nexus-otel workflow executions: rate, errors, latency (with trace exemplars), activity.",
                     [SERVICE_VAR, WORKFLOW_VAR, CHANNEL_VAR], panels)


def plugins() -> dashboard_model.Dashboard:
    runs = selector("nexus_plugin_hook_duration_seconds_count", "plugin", "event")
    buckets = selector("nexus_plugin_hook_duration_seconds_bucket", "plugin", "event")
    errors = selector("nexus_plugin_errors_total", "plugin", "event")
    by_pe = ["plugin", "event"]
    pe_legend = "{{plugin}} {{event}}"

    panels = [
        stat("Hook runs", "Plugin hook runs in the time range.", "short",
             [Query(sum_by([], increase(runs)), "runs")], width=8),
        stat("Hook errors", "Plugin hooks, setups and teardowns that raised in the time range.", "short",
             [Query(sum_by([], increase(errors)), "errors")], steps=((1.0, "red"),), width=8),
        stat("Hook error ratio", "Errors / hook runs in the time range.", "percentunit",
             [Query(ratio(sum_by([], increase(errors)), sum_by([], increase(runs))), "error ratio")],
             steps=ERROR_RATIO_STEPS, width=8),
        timeseries("Hook duration p95 by plugin and event",
                   "95th percentile of nexus_plugin_hook_duration_seconds. Exemplar points link to the "
                   "hook's trace in Jaeger.", "s",
                   [Query(quantile(0.95, buckets, by_pe), f"p95 {pe_legend}", exemplar=True)],
                   steps=HOOK_LATENCY_STEPS, width=24, height=10),
        timeseries("Hook rate by plugin and event", "Hook runs per second.", "ops",
                   [Query(sum_by(by_pe, rate(runs)), pe_legend)]),
        timeseries("Errors by plugin and event", "Hooks that raised, per second (the workflow still ran).", "ops",
                   [Query(sum_by(by_pe, rate(errors)), pe_legend)]),
        timeseries("Error ratio by plugin and event", "Errors / hook runs.", "percentunit",
                   [Query(ratio(sum_by(by_pe, rate(errors)), sum_by(by_pe, rate(runs))), pe_legend)],
                   steps=ERROR_RATIO_STEPS, max_val=1, width=24),
    ]
    return dashboard("nexus-plugins", "Plugins",
                     "nexus-otel plugin hooks: duration (with trace exemplars), rate and errors per plugin and event.",
                     [SERVICE_VAR, PLUGIN_VAR, EVENT_VAR], panels)


def pipeline() -> dashboard_model.Dashboard:
    spans = selector("nexus_telemetry_spans_total")
    lost = selector("nexus_telemetry_spans_total", extra=['outcome=~"failed|dropped|overflow"'])
    log_records = selector("nexus_telemetry_log_records_total")
    log_records_lost = selector("nexus_telemetry_log_records_total", extra=['outcome=~"failed|dropped"'])
    deliveries = selector("nexus_webhook_deliveries_total")
    outbox = selector("nexus_webhook_outbox")
    records_local = selector("nexus_records_outbox_messages", extra=[f'outbox!~"{SHARED_OUTBOX}"'])
    records_shared = selector("nexus_records_outbox_messages", extra=[f'outbox=~"{SHARED_OUTBOX}"'])
    records_pending = selector("nexus_records_outbox_messages", state="pending")
    records_oldest = selector("nexus_records_outbox_oldest_age_seconds")
    limit = selector("nexus_webhook_concurrency_limit")
    in_flight = selector("nexus_webhook_in_flight")
    held = selector("nexus_webhook_held")
    rows = selector("nexus_audit_rows_total")
    queue = selector("nexus_audit_queue")
    hits = sum_by(["workflow"], rate(selector("nexus_cache_hits_total", "workflow")))
    misses = sum_by(["workflow"], rate(selector("nexus_cache_misses_total", "workflow")))
    hits_or_zero = f"({hits} or 0 * {misses})"

    panels = [
        color_override(
            timeseries("Spans by exporter and outcome", "Spans handed to each exporter per second: exported, "
                       "failed (the exporter failed), dropped (its queue was full); for the tail "
                       "sampler kept, sampled_out or overflow (its buffer was full).", "ops",
                       [Query(sum_by(["exporter", "outcome"], rate(spans)), "{{exporter}} {{outcome}}")]),
            ".*(failed|dropped|overflow).*", "red"),
        timeseries("Span loss by exporter", "Failed, dropped and overflowed spans / all spans, per exporter.",
                   "percentunit",
                   [Query(ratio(sum_by(["exporter"], rate(lost)), sum_by(["exporter"], rate(spans))),
                          "{{exporter}}")], steps=SPAN_LOSS_STEPS, max_val=1),
        color_override(
            timeseries("Log records by exporter and outcome", "Log records (the request log's and captured "
                       "`logging` records) handed to each exporter per second: exported, failed (the exporter "
                       "failed), dropped (its queue was full).", "ops",
                       [Query(sum_by(["exporter", "outcome"], rate(log_records)), "{{exporter}} {{outcome}}")]),
            ".*(failed|dropped).*", "red"),
        timeseries("Log record loss by exporter", "Failed and dropped log records / all log records, per "
                   "exporter (otlp, local): failed, the exporter failed (for otlp: the Collector is down or "
                   "refuses); dropped, its queue was full (the app logs faster than it exports). Lost records "
                   "are missing from VictoriaLogs or `nexus-otel logs`; TelemetryLogRecordsLost fires after 5 "
                   "minutes.", "percentunit",
                   [Query(ratio(sum_by(["exporter"], rate(log_records_lost)), sum_by(["exporter"], rate(log_records))),
                          "{{exporter}}")], steps=LOG_LOSS_STEPS, max_val=1),
        color_override(
            timeseries("Webhook deliveries by outcome", "Webhook payloads queued, delivered, retried and "
                       "failed (dead-lettered) per second.", "ops",
                       [Query(sum_by(["outcome"], rate(deliveries)), "{{outcome}}")]),
            "failed", "red"),
        color_override(
            timeseries("Webhook outbox", "Payloads waiting for delivery (pending) and given up on (dead; "
                       "`nexus-otel webhooks replay`).", "short",
                       [Query(sum_by(["state"], outbox), "{{state}}")], steps=OUTBOX_STEPS),
            "dead", "red"),
        right_axis(color_override(
            timeseries("Record outbox: pending, dead, oldest age",
                       "Messages in each record outbox (webhook payloads and audit rows of every sink sharing it): "
                       "pending (waiting or in delivery) and dead (given up on; `nexus-otel webhooks replay`), "
                       "and on the right axis the age of its oldest pending message (0 with none pending). A "
                       "local outbox is a file of each instance's own (the same path on every instance): its "
                       "messages are summed over instances, its age is that of the oldest pending message on "
                       "any of them. The shared outbox (a postgresql:// URL) is one table that every replica "
                       "reads and reports alike: shown once (the max over replicas), not once per replica. The "
                       f"dashed line is the RecordsOutboxBacklogOld alert's threshold ({BACKLOG_OLD_AFTER:g} s; "
                       "it fires after 10 more minutes above it). `nexus-otel webhooks status` (with `--outbox "
                       "URL` for the shared one) shows each destination's state.", "short",
                       [Query(f"{sum_by(['outbox', 'state'], records_local)} or "
                              f"max by (outbox, state) ({records_shared})", "{{state}} {{outbox}}"),
                        Query(f"max by (outbox) ({records_oldest}) or 0 * max by (outbox) ({records_pending})",
                              "oldest age {{outbox}}")],
                       steps=OUTBOX_STEPS, width=24),
            "dead.*", "red"), "B", "s", "oldest pending age", ((BACKLOG_OLD_AFTER, "red"),)),
        timeseries("Webhook concurrency limit by destination", "Requests each destination may have in flight "
                   "now (the limit the sender adapts to each receiver, at most `max_in_flight`), and those in "
                   "flight; summed over the app's processes. A limit that stays low: the receiver answers slowly, "
                   "refuses connections or answers 429/503. `nexus-otel webhooks status` shows it per process.",
                   "short", [Query(sum_by(["destination"], limit), "limit {{destination}}"),
                             Query(sum_by(["destination"], in_flight), "in flight {{destination}}")]),
        color_override(
            timeseries("Held webhook destinations", "1 while a destination gets no new attempts: retry_after "
                       "(the receiver asked for a pause with Retry-After), breaker (its circuit is open after "
                       "failures; single probes until it answers). `nexus-otel webhooks status` says until when.",
                       "short", [Query(f"max by (destination, reason) ({held})", "{{destination}} {{reason}}")],
                       max_val=1),
            ".*breaker", "red"),
        timeseries("Audit rows by outcome", "Audit rows queued, written, retried and failed per second.", "ops",
                   [Query(sum_by(["outcome"], rate(rows)), "{{outcome}}")]),
        timeseries("Audit queue", "Audit rows spooled locally, waiting to be written.", "short",
                   [Query(sum_by([], queue), "queued")], steps=OUTBOX_STEPS),
        timeseries("Cache hit ratio by workflow", "Cache hits / lookups (CachingPlugin).", "percentunit",
                   [Query(f"{hits_or_zero} / ({hits_or_zero} + {misses})", "{{workflow}}")], max_val=1),
        timeseries("Cache lookups by workflow", "Cache hits and misses per second.", "ops",
                   [Query(hits, "hits {{workflow}}"), Query(misses, "misses {{workflow}}")]),
    ]
    return dashboard("nexus-pipeline", "Telemetry pipeline",
                     "nexus-otel's own pipeline: span and log record exporters, webhook deliveries, destinations "
                     "and outbox, audit rows, cache; then the OpenTelemetry Collector the spans and log records go "
                     "through.",
                     [SERVICE_VAR, WORKFLOW_VAR], panels + collector_panels())


def collector_panels() -> list[Any]:
    """The Collector (deploy/otel-collector.yaml) as Prometheus scrapes it: its own metrics and span metrics.

    The Collector's own metrics (``otelcol_*``, port 8888; Collector 0.161 names its counters without a
    ``_total`` suffix) describe the Collector, not a service, so they are not filtered by ``$service``.
    The span metrics (port 8889) carry the sending service's ``service_name``.
    """
    accepted = sum_by(["receiver"], rate("otelcol_receiver_accepted_spans"))
    refused = sum_by(["receiver"], rate("otelcol_receiver_refused_spans"))
    sent = sum_by(["exporter"], rate("otelcol_exporter_sent_spans"))
    queue = ratio(sum_by(["exporter"], "otelcol_exporter_queue_size"),
                  sum_by(["exporter"], "otelcol_exporter_queue_capacity"))
    sampled = sum_by(["decision"], rate("otelcol_processor_tail_sampling_global_count_traces_sampled"))
    logs_accepted = sum_by(["receiver"], rate("otelcol_receiver_accepted_log_records"))
    logs_refused = sum_by(["receiver"], rate("otelcol_receiver_refused_log_records"))
    logs_sent = sum_by(["exporter"], rate("otelcol_exporter_sent_log_records"))
    calls = selector("traces_span_metrics_calls_total", extra=['span_name=~"(invoke_)?workflow .*"',
                                                               'nexus_workflow_name=~"$workflow"'])
    return [
        color_override(
            timeseries("Collector: spans in and out", "Spans the Collector accepted and refused (memory_limiter "
                       "pushing back) per receiver, and sent per exporter, per second. Export failures fire "
                       "the CollectorExportFailing alert.", "ops",
                       [Query(accepted, "accepted {{receiver}}"), Query(refused, "refused {{receiver}}"),
                        Query(sent, "sent {{exporter}}")]),
            "refused.*", "red"),
        color_override(
            timeseries("Collector: log records in and out", "Log records the Collector accepted and refused "
                       "(memory_limiter pushing back) per receiver, and sent per exporter (VictoriaLogs), per "
                       "second. Log records are never sampled: what is accepted is sent; export failures fire "
                       "the CollectorLogExportFailing alert.", "ops",
                       [Query(logs_accepted, "accepted {{receiver}}"), Query(logs_refused, "refused {{receiver}}"),
                        Query(logs_sent, "sent {{exporter}}")]),
            "refused.*", "red"),
        timeseries("Collector: export queue", "How full each exporter's sending queue is: it fills while the "
                   "destination (Jaeger, VictoriaLogs) is slow or down.", "percentunit",
                   [Query(queue, "{{exporter}}")], steps=((0.5, "orange"), (0.9, "red")), max_val=1),
        timeseries("Collector: tail sampling", "Traces the Collector's tail sampler kept (sampled) and dropped "
                   "per second, after decision_wait.", "ops", [Query(sampled, "{{decision}}")]),
        timeseries("Span metrics: workflows per second", "From the Collector's span_metrics connector: every "
                   "workflow span before tail sampling, by workflow and status.", "ops",
                   [Query(sum_by(["nexus_workflow_name", "status_code"], rate(calls)),
                          "{{nexus_workflow_name}} {{status_code}}")]),
    ]


DASHBOARDS: dict[str, Callable[[], dashboard_model.Dashboard]] = {
    "workflows.json": workflows,
    "plugins.json": plugins,
    "pipeline.json": pipeline,
}


def render(model: dashboard_model.Dashboard) -> str:
    """The dashboard as committed: sorted keys, 2-space indent, trailing newline."""
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(model) + "\n"


def generate() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def differences(directory: Path) -> list[str]:
    """What in ``directory`` differs from what :func:`generate` makes (empty: all up to date)."""
    wanted = generate()
    problems = []
    for name, text in wanted.items():
        path = directory / name
        if not path.exists():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the generator's output")
    for path in sorted(directory.glob("*.json")):
        if path.name not in wanted:
            problems.append(f"{path}: not made by the generator")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the dashboards differ from what would be generated")
    parser.add_argument("--dir", type=Path, default=DASHBOARDS_DIR, help=f"output folder (default {DASHBOARDS_DIR})")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences(args.dir)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python grafana/generate.py", file=sys.stderr)
            return 1
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        (args.dir / name).write_text(text, encoding="utf-8")
        print(args.dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
