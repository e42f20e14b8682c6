"""The deploy kit on the real servers: the served example app -> our Collector -> Jaeger v2 -> its query API
(and its log records -> VictoriaLogs).

The Collector runs ``deploy/otel-collector.yaml`` as shipped (only the
listening addresses and Jaeger's and VictoriaLogs' addresses come from the environment
variables the file reads), its tail sampler's timing too, with one change: ``quick_span_metrics``
(tests/deploy_servers.py), the span metrics exported every second instead of every 15 s (the first
export reads 0, so the shipped interval would hold the span metrics test for 30 s after the start);
Jaeger runs ``deploy/jaeger.yaml``; a real Prometheus scrapes the
Collector. One module-scoped kit is shared: the traffic is sent once, then the
tests wait out the tail sampler's ``decision_wait`` (10 s) together.

What ``docs/deploy.md`` promises of the Collector is checked here: traces in
Jaeger as a correct tree with the contract's attributes and the caller's trace
continued, secret-looking attributes masked, every error trace kept and the OK
ones thinned to about 10 %, span metrics and the Collector's own metrics in
Prometheus under the names the alerts and dashboards use, the app's log records
in VictoriaLogs under their traces' ids.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from nexus_otel.exporters.local import read_spans

from .deploy_servers import REPO, Collector, Jaeger, VictoriaLogs, parent_of, require_binary, tags_of
from .prometheus_server import PrometheusServer, wait_until
from .promql import fill_variables, metric_names
from .served import Served, cli_env

SERVICE = "shop-e2e"
FAILING, OK = 20, 200
OK_RATIO = 0.10  # deploy/otel-collector.yaml: sample-the-rest, 10 %
MISDIRECTED_GAP = 3.5  # s between the two failing exports: more than the batch timeout (2 s) and a scrape (1 s)
PIPELINE_DASHBOARD = REPO / "grafana" / "dashboards" / "pipeline.json"
SECRET_SERVICE = "no-redaction-service"


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _send_unredacted_span(endpoint: str) -> str:
    """A service without nexus-otel's redaction sends secret-looking attributes through the Collector."""
    provider = TracerProvider(resource=Resource.create({"service.name": SECRET_SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    with provider.get_tracer("e2e").start_as_current_span("charge card") as span:
        span.set_attributes({
            "db.password": "hunter2",
            "api_key": "k-123456",
            "note": "retried with Bearer abc.DEF-123456",
            "payment.card": "4111 1111 1111 1111",
            "order.id": "o-42",
        })
        span.set_status(Status(StatusCode.ERROR, "card declined"))  # errors are always kept
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


def _send_log_record(endpoint: str) -> None:
    """One log record through the Collector's OTLP/HTTP receiver, by the SDK's OTLP log exporter."""
    provider = LoggerProvider(resource=Resource.create({"service.name": SECRET_SERVICE}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")))
    provider.get_logger("e2e").emit(body="card declined")
    provider.shutdown()


def _send_span_and_log_record(endpoint: str) -> None:
    _send_unredacted_span(endpoint)
    _send_log_record(endpoint)


def _every_kept_trace_in_jaeger(collector: Collector, jaeger: Jaeger) -> bool:
    """Whether the tail sampler has decided every trace the Collector received and Jaeger holds each it kept.

    Decisions come ``decision_wait`` (10 s) after a trace's first span, then the batch (2 s): this is
    when the sampled traffic is complete in Jaeger, read from the Collector's own counters.
    """
    text = httpx.get(f"http://127.0.0.1:{collector.metrics_port}/metrics", timeout=5).text

    def total(name: str, having: str = "") -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if re.match(rf"{name}[{{ ]", line) and having in line)

    received = total("otelcol_processor_tail_sampling_new_trace_id_received")
    decided = total("otelcol_processor_tail_sampling_global_count_traces_sampled")
    kept = total("otelcol_processor_tail_sampling_global_count_traces_sampled", 'sampled="true"')
    in_jaeger = len(jaeger.traces(SERVICE, limit=5000)) + len(jaeger.traces(SECRET_SERVICE))
    return received > 0 and decided == received and in_jaeger == kept


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    require_binary("otelcol")
    require_binary("jaeger")
    require_binary("victorialogs")
    work = tmp_path_factory.mktemp("kit")
    no_otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=2))  # a gRPC server without the OTLP service
    no_otlp_port = no_otlp.add_insecure_port("127.0.0.1:0")
    no_otlp.start()
    with Jaeger(work) as jaeger, VictoriaLogs(work) as logs, \
            Collector(work, "otel-collector.yaml", jaeger_endpoint=jaeger.otlp_grpc_endpoint,
                      victorialogs_endpoint=logs.otlp_endpoint, quick_span_metrics=True) as collector, \
            Collector(work, "otel-collector.yaml", jaeger_endpoint=f"127.0.0.1:{no_otlp_port}",
                      victorialogs_endpoint=f"{logs.url}/no-otlp-here", name="misdirected") as misdirected, \
            PrometheusServer(work / "prometheus",
                             [f"127.0.0.1:{collector.metrics_port}", f"127.0.0.1:{collector.prometheus_port}",
                              f"127.0.0.1:{misdirected.metrics_port}"],
                             job="otel-collector") as prom:
        # An error trace and a log record to the Collector whose Jaeger and VictoriaLogs addresses are wrong:
        # their exports fail (at once: a gRPC server without OTLP and an HTTP 400 are not retried). A second
        # pair some seconds later fails in later batches, so Prometheus has seen the failure counts rise (the
        # alerts' rates) by the time the tests run.
        _send_span_and_log_record(misdirected.otlp_http_url)
        again = threading.Timer(MISDIRECTED_GAP, _send_span_and_log_record, [misdirected.otlp_http_url])
        again.start()
        data_dir = work / "app-data"
        env = cli_env(data_dir, OTEL_SERVICE_NAME=SERVICE, OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_url,
                      OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_TRACES_EXPORTER="otlp,local",
                      OTEL_METRICS_EXPORTER="otlp", OTEL_METRIC_EXPORT_INTERVAL="1000",
                      OTEL_BSP_SCHEDULE_DELAY="200", NEXUS_OTEL_LOCAL_DELAY_MS="50")
        app = Served("nexus_otel.demo.app:create_app", env, REPO, "--plugins-dir", "plugins")
        try:
            sent = {"failing": [], "ok": []}
            with httpx.Client(base_url=app.url, timeout=10) as client:
                for i in range(FAILING + OK):
                    trace_id, span_id, traceparent = _traceparent()
                    failing = i % ((FAILING + OK) // FAILING) == 0 and len(sent["failing"]) < FAILING
                    if failing:
                        response = client.post("/workflows/checkout", headers={"traceparent": traceparent},
                                               json={"items": [{"sku": "B2", "price": 5, "stock": 0}]})
                        assert response.status_code == 500
                    else:
                        response = client.post("/workflows/greet", headers={"traceparent": traceparent},
                                               json={"name": f"user{i}"})
                        assert response.status_code == 200
                    assert response.headers["x-trace-id"] == trace_id
                    sent["failing" if failing else "ok"].append((trace_id, span_id))
            secret_trace = _send_unredacted_span(collector.otlp_http_url)
            for trace_id, _ in sent["failing"]:
                wait_until(lambda t=trace_id: jaeger.trace(t), 60, what=f"failing trace {trace_id} in Jaeger")
            wait_until(lambda: _every_kept_trace_in_jaeger(collector, jaeger), 30,
                       what="every trace the Collector received decided, and each one it kept in Jaeger")
            yield {"jaeger": jaeger, "collector": collector, "misdirected": misdirected, "prom": prom, "app": app,
                   "data_dir": data_dir, "sent": sent, "secret_trace": secret_trace, "logs": logs}
        finally:
            app.stop()
            again.join()
            no_otlp.stop(grace=None)


def _local_trace(data_dir: Path, trace_id: str) -> list:
    return [s for s in read_spans(data_dir) if s.trace_id == trace_id]


def _assert_same_tree(jaeger: Jaeger, data_dir: Path, trace_id: str) -> dict[str, dict]:
    """Jaeger has exactly the spans the app recorded for the trace, with the same parents; by name."""
    trace = jaeger.trace(trace_id)
    assert trace, f"trace {trace_id} is not in Jaeger"
    spans = {s["spanID"]: s for s in trace["spans"]}
    local = {s.span_id: s for s in _local_trace(data_dir, trace_id)}
    assert local, "the app's own store has the trace"
    assert {i: s["operationName"] for i, s in spans.items()} == {i: s.name for i, s in local.items()}
    assert {i: parent_of(s) for i, s in spans.items()} == {i: s.parent_id for i, s in local.items()}
    for span in spans.values():
        assert trace["processes"][span["processID"]]["serviceName"] == SERVICE
    return spans


def test_a_failed_request_is_found_in_jaeger_by_service_and_id_as_the_app_recorded_it(kit):
    jaeger, data_dir = kit["jaeger"], kit["data_dir"]
    trace_id, caller_span = kit["sent"]["failing"][0]

    assert SERVICE in jaeger.services()
    assert trace_id in {t["traceID"] for t in jaeger.traces(SERVICE)}
    spans = _assert_same_tree(jaeger, data_dir, trace_id)
    by_name = {s["operationName"]: s for s in spans.values()}
    server = by_name["POST /workflows/{name}"]
    workflow = by_name["workflow checkout"]
    assert parent_of(server) == caller_span  # the caller's traceparent is continued
    assert parent_of(workflow) == server["spanID"]
    tags = tags_of(workflow)
    assert tags["nexus.workflow.name"] == "checkout"
    assert tags["nexus.channel"] == "api"
    assert tags["error.type"] == "nexus_otel.demo.app.OutOfStock"
    assert tags["otel.status_code"] == "ERROR"
    assert tags_of(server)["http.response.status_code"] == 500

    # The same trace through the v3 API (OTLP JSON).
    v3 = jaeger.trace_v3(trace_id)
    assert {s["spanId"] for s in v3} == set(spans)
    v3_workflow = next(s for s in v3 if s["name"] == "workflow checkout")
    assert v3_workflow["attrs"]["nexus.workflow.name"] == "checkout"
    assert v3_workflow["resource"]["service.name"] == SERVICE


def test_a_kept_ok_request_shows_its_hook_spans_under_the_workflow_span(kit):
    jaeger, data_dir = kit["jaeger"], kit["data_dir"]
    in_jaeger = {t["traceID"] for t in jaeger.traces(SERVICE, limit=5000)}
    kept = [(t, s) for t, s in kit["sent"]["ok"] if t in in_jaeger]
    assert kept, "the sampler keeps about 10 % of OK traces"
    trace_id, caller_span = kept[0]
    spans = _assert_same_tree(jaeger, data_dir, trace_id)
    by_name = {s["operationName"]: s for s in spans.values()}
    server, workflow = by_name["POST /workflows/{name}"], by_name["workflow greet"]
    hooks = [s for s in spans.values() if s["operationName"].startswith("hook workflow_completed ")]
    assert parent_of(server) == caller_span and parent_of(workflow) == server["spanID"]
    assert hooks and all(parent_of(h) == workflow["spanID"] for h in hooks)
    for hook in hooks:
        tags = tags_of(hook)
        assert tags["nexus.hook.event"] == "workflow_completed"
        assert hook["operationName"] == f"hook workflow_completed {tags['nexus.plugin.name']}"
    assert tags_of(workflow)["nexus.workflow.name"] == "greet"


def test_every_error_trace_arrives_and_ok_ones_are_thinned_as_configured(kit):
    jaeger, data_dir = kit["jaeger"], kit["data_dir"]
    ok_ids = {t for t, _ in kit["sent"]["ok"]}
    failing_ids = {t for t, _ in kit["sent"]["failing"]}
    in_jaeger = {t["traceID"]: t for t in jaeger.traces(SERVICE, limit=5000)}

    assert failing_ids <= set(in_jaeger)
    kept_ok = ok_ids & set(in_jaeger)
    mean = OK * OK_RATIO
    sigma = math.sqrt(OK * OK_RATIO * (1 - OK_RATIO))
    assert abs(len(kept_ok) - mean) <= 4 * sigma, f"{len(kept_ok)} of {OK} OK traces kept, expected about {mean}"

    # Each kept trace is whole: the sampler decides on traces, not spans.
    local: dict[str, set] = {}
    for span in read_spans(data_dir):
        local.setdefault(span.trace_id, set()).add(span.span_id)
    for trace_id in kept_ok | failing_ids:
        assert {s["spanID"] for s in in_jaeger[trace_id]["spans"]} == local[trace_id], trace_id


def test_secret_looking_attributes_from_any_service_arrive_masked(kit):
    jaeger = kit["jaeger"]
    trace = wait_until(lambda: jaeger.trace(kit["secret_trace"]), 30, what="the unredacted service's trace")
    tags = tags_of(trace["spans"][0])
    assert "db.password" not in tags and "api_key" not in tags  # attributes/redact deletes the keys
    assert "abc.DEF-123456" not in tags["note"] and "****" in tags["note"]  # redaction masks the values
    assert "4111" not in tags["payment.card"]
    assert tags["order.id"] == "o-42"  # the rest is untouched
    assert "hunter2" not in json.dumps(trace)


def _collector_metric_names(expr: str) -> set[str]:
    """The Collector's own metric families (``otelcol_*``) a PromQL expression selects."""
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in metric_names(expr) if n.startswith("otelcol_")}


def _alert_rules() -> list[dict]:
    """The alerting rules of deploy/alerts.yml."""
    return [r for group in yaml.safe_load((REPO / "deploy" / "alerts.yml").read_text())["groups"]
            for r in group["rules"] if "alert" in r]


def _alert_rule(name: str) -> dict:
    return next(r for r in _alert_rules() if r["alert"] == name)


def _collector_queries() -> list[str]:
    dashboard = json.loads(PIPELINE_DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])
            if re.search(r"\b(otelcol|traces_span_metrics)_", t["expr"])]


def test_span_metrics_count_every_workflow_span_before_sampling(kit):
    prom = kit["prom"]
    prom.wait_for_targets_up()
    want = {"greet": float(OK), "checkout": float(FAILING)}
    calls = prom.wait_until(
        lambda: (v := prom.vector('sum by (nexus_workflow_name) (traces_span_metrics_calls_total'
                                  f'{{service_name="{SERVICE}", span_name=~"workflow .*"}})',
                                  "nexus_workflow_name")) == want and v,
        timeout=60, what=f"span metrics {want} from the span_metrics connector")
    assert calls == want


def test_every_collector_metric_the_alerts_and_dashboard_use_exists_on_the_running_collector(kit):
    prom = kit["prom"]
    exprs = [r["expr"] for r in _alert_rules()] + _collector_queries()
    used = set().union(*(_collector_metric_names(expr) for expr in exprs))
    assert len(used) >= 5, used
    # Counters appear once they count something: the misdirected Collector's failed exports bring
    # otelcol_exporter_send_failed_spans and otelcol_exporter_send_failed_log_records.
    exposed = prom.wait_until(
        lambda: used <= (names := {re.sub(r"_(bucket|count|sum)$", "", n)
                                   for n in prom._api("/api/v1/label/__name__/values")}) and names,
        timeout=60, what=f"{sorted(used)} in Prometheus")
    assert used <= exposed, f"used but not on the running Collector: {sorted(used - exposed)}"


def test_the_export_failing_alert_expression_finds_the_misdirected_collector_only(kit):
    prom, misdirected = kit["prom"], kit["misdirected"]
    rule = _alert_rule("CollectorExportFailing")

    def still_failing() -> list:  # a Collector keeps failing while its traffic goes on
        _send_unredacted_span(misdirected.otlp_http_url)
        return prom.query(rule["expr"])

    firing = prom.wait_until(still_failing, timeout=60, what=rule["expr"])
    assert {s["metric"]["instance"] for s in firing} == {f"127.0.0.1:{misdirected.metrics_port}"}
    assert {s["metric"]["exporter"] for s in firing} == {"otlp_grpc/jaeger"}


def test_the_log_export_failing_alert_expression_finds_the_misdirected_collector_only(kit):
    """CollectorLogExportFailing's expression names the misdirected Collector's logs exporter, and nothing else."""
    prom, misdirected = kit["prom"], kit["misdirected"]
    rule = _alert_rule("CollectorLogExportFailing")

    def still_failing() -> list:  # a Collector keeps failing while its traffic goes on
        _send_log_record(misdirected.otlp_http_url)
        return prom.query(rule["expr"])

    firing = prom.wait_until(still_failing, timeout=60, what=rule["expr"])
    assert {s["metric"]["instance"] for s in firing} == {f"127.0.0.1:{misdirected.metrics_port}"}
    assert {s["metric"]["exporter"] for s in firing} == {"otlp_http/victorialogs"}


def test_the_pipeline_dashboards_collector_panels_return_data(kit):
    prom = kit["prom"]
    queries = _collector_queries()
    assert len(queries) >= 5
    for expr in queries:
        promql = fill_variables(expr, SERVICE)
        result = prom.wait_until(lambda q=promql: [s for s in prom.query(q) if math.isfinite(float(s["value"][1]))],
                                 timeout=60, what=f"data for {promql}")
        assert result, promql


def test_the_queue_filling_alert_reads_each_collectors_export_queue(kit):
    """The expression (without its threshold) gives one fill ratio per Collector and exporter, from 0 to 1."""
    prom, collector, misdirected = kit["prom"], kit["collector"], kit["misdirected"]
    rule = _alert_rule("CollectorExportQueueFilling")
    ratio = rule["expr"].strip().rsplit(">", 1)[0].strip()
    series = prom.wait_until(lambda: prom.query(ratio), timeout=30, what=ratio)
    instances = {(s["metric"]["instance"], s["metric"]["exporter"]) for s in series}
    assert instances == {(f"127.0.0.1:{c.metrics_port}", exporter) for c in (collector, misdirected)
                         for exporter in ("otlp_grpc/jaeger", "otlp_http/victorialogs")}
    assert all(0.0 <= float(s["value"][1]) <= 1.0 for s in series)


def test_the_apps_log_records_reach_victorialogs_with_their_traces(kit):
    """Every failing checkout's logging.warning, sampled or not, is in VictoriaLogs under its trace and span ids."""
    logs, jaeger = kit["logs"], kit["jaeger"]
    failing = {trace_id for trace_id, _ in kit["sent"]["failing"]}
    query = f'service.name:="{SERVICE}" AND _msg:="checkout refused: B2 is out of stock"'

    def arrived() -> list[dict]:
        found = [r for r in logs.query(query, limit="1000") if r["trace_id"] in failing]
        return found if len(found) >= len(failing) else []

    records = wait_until(arrived, 30, what="a log record per failing checkout", interval=0.5)
    assert {r["trace_id"] for r in records} == failing and len(records) == len(failing)
    trace_id = kit["sent"]["failing"][0][0]
    (record,) = [r for r in records if r["trace_id"] == trace_id]
    workflow = next(s for s in jaeger.trace(trace_id)["spans"] if s["operationName"] == "workflow checkout")
    assert record["span_id"] == workflow["spanID"], "written inside the workflow span"
    assert record["severity_text"] == "WARN"
