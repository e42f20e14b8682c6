"""The Grafana dashboards: generated reproducibly, valid for Grafana's dashboard schema, wired to the
provisioned datasources, every panel's PromQL answered by a real Prometheus scraping a served app, and
every panel's LogsQL answered by a real VictoriaLogs holding an app's request log.

The end-to-end part serves ``tests/apps/kit.py`` with the real CLI (``nexus-otel serve``) in a
subprocess, has Debian's ``prometheus`` scrape it every second (with exemplar storage on), sends a
mix of passing and failing requests, then runs every panel's expression through ``/api/v1/query``
with the template variables filled in as Grafana would. The logs part runs an app with
``RequestLoggerPlugin`` exporting its log records over OTLP to VictoriaLogs (built by
scripts/build-binaries.sh), then runs every LogsQL target through VictoriaLogs' query API with the
variables filled in as the VictoriaLogs datasource plugin does.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import math
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from nexus_otel import Nexus
from nexus_otel.plugins import RequestLoggerPlugin

SDK_RUNS_HERE = sys.version_info >= (3, 11)
"""grafana-foundation-sdk, which grafana/generate.py builds the dashboards with and the schema test decodes them
with, has no release for Python 3.10 (every one requires 3.11+). On 3.10 the module runs all the same: the
generator's tests check the committed JSON's form without it, and the schema test the JSON's shape."""

if SDK_RUNS_HERE:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.cog.runtime import UnknownDataquery
    from grafana_foundation_sdk.models import dashboard as dashboard_model
    from grafana_foundation_sdk.models import logs as logs_model
    from grafana_foundation_sdk.models import prometheus as prometheus_model
    from grafana_foundation_sdk.models import stat as stat_model
    from grafana_foundation_sdk.models import timeseries as timeseries_model

try:  # tests/ may or may not become a package
    from .deploy_servers import VictoriaLogs, require_binary
    from .prometheus_server import PrometheusServer, poll, prometheus_binary
    from .promql import fill_variables
    from .served import REPO, Served, cli_env
    from .webhook_receiver import WebhookReceiver
except ImportError:
    from deploy_servers import VictoriaLogs, require_binary
    from prometheus_server import PrometheusServer, poll, prometheus_binary
    from promql import fill_variables
    from served import REPO, Served, cli_env
    from webhook_receiver import WebhookReceiver

GRAFANA = REPO / "grafana"
GENERATOR = GRAFANA / "generate.py"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
COMPOSE = REPO / "deploy" / "compose.yaml"
VICTORIALOGS_TYPE = "victoriametrics-logs-datasource"
REQUEST_LOG_SCOPE = "nexus_otel.requests"

TITLES = {"workflows.json": "Workflows", "plugins.json": "Plugins", "pipeline.json": "Telemetry pipeline"}
UNITS = {"s", "reqps", "ops", "percentunit", "short"}
SERVICE_QUERY = "label_values(nexus_workflow_executions_total, service_name)"
# Which template variable filters which metric (the metric has that label).
FILTER_LABELS = {
    "nexus_workflow_duration_seconds": {"workflow", "channel"},
    "nexus_workflow_executions_total": {"workflow", "channel"},
    "nexus_workflow_active": {"workflow"},
    "nexus_workflow_oldest_active_seconds": {"workflow"},
    "nexus_cache_hits_total": {"workflow"},
    "nexus_cache_misses_total": {"workflow"},
    "nexus_plugin_hook_duration_seconds": {"plugin", "event"},
    "nexus_plugin_errors_total": {"plugin", "event"},
}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
METRIC_NAME = re.compile(r"\b(?:nexus|http_server)_[a-z0-9_]+\b")
# The Collector's own metrics describe the Collector, not a service: no $service filter.
COLLECTOR_OWN = re.compile(r"\botelcol_[a-z0-9_]+")
# Queries that need the Collector in the path (its own metrics, its span metrics): they return data in
# tests/test_collector_jaeger.py, where a real Collector runs; the app alone has none.
COLLECTOR_PATH = re.compile(r"\b(?:otelcol|traces_span_metrics)_[a-z0-9_]+")

SERVICE = "kit"
APP_TARGET = "tests.apps.kit:create_app"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"grafana-dashboards-test-secret!!").decode()
QUERY_WAIT = 45.0


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nexus_grafana_generate", GENERATOR)
    assert spec is not None and spec.loader is not None, f"cannot load {GENERATOR}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def _dashboards() -> dict[str, dict[str, Any]]:
    return {name: json.loads((DASHBOARDS / name).read_text(encoding="utf-8")) for name in TITLES}


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _targets(datasource_type: str = "prometheus") -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(dashboard file, panel, target) for every target of every panel that reads that kind of datasource."""
    for name, dashboard in _dashboards().items():
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                if target["datasource"]["type"] == datasource_type:
                    yield name, panel, target


def _is_logs(panel: dict[str, Any]) -> bool:
    return panel["datasource"]["type"] == VICTORIALOGS_TYPE


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def _fill(expr: str, service: str = SERVICE) -> str:
    """The expression as Grafana sends it, with every variable at "All" (``.*``) but ``$service``."""
    return fill_variables(expr, service)


def _datasources() -> list[dict[str, Any]]:
    return yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]


# --- (a) the generator ---------------------------------------------------------------------------

def _committed_in_the_generators_form() -> dict[str, str]:
    """The committed dashboards, checked to be exactly the three, each in the generator's form (sorted keys,
    2-space indent, a trailing newline): what can be checked of them where the generator cannot run."""
    committed = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARDS.glob("*.json")}
    assert sorted(committed) == sorted(TITLES)
    for name, text in committed.items():
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n", (
            f"{name} is not in the generator's form: run python grafana/generate.py")
    return committed


def test_generator_reproduces_the_committed_dashboards() -> None:
    """grafana/generate.py generates exactly the committed JSON, byte for byte, and nothing else (on Python 3.10,
    where the generator cannot run: the committed JSON is in its form)."""
    committed = _committed_in_the_generators_form()
    if not SDK_RUNS_HERE:
        return
    generated = _load_generator().generate()
    assert sorted(generated) == sorted(TITLES)
    for name, text in generated.items():
        assert committed[name] == text, f"{name} differs from the generator's output: run python grafana/generate.py"
    assert _load_generator().generate() == generated, "two runs of the generator differ"


def test_generate_check_exits_non_zero_on_drift(tmp_path: Path) -> None:
    """`generate.py --check` exits 0 on the committed folder and 1 when a dashboard was edited by hand (on Python
    3.10, where the generator cannot run: the committed JSON is in its form)."""
    if not SDK_RUNS_HERE:
        _committed_in_the_generators_form()
        return
    ok = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    drifted = tmp_path / "dashboards"
    shutil.copytree(DASHBOARDS, drifted)
    edited = json.loads((drifted / "plugins.json").read_text())
    edited["title"] = "Edited by hand"
    (drifted / "plugins.json").write_text(json.dumps(edited, sort_keys=True, indent=2) + "\n")
    bad = subprocess.run([sys.executable, str(GENERATOR), "--check", "--dir", str(drifted)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert "plugins.json" in bad.stderr and "workflows.json" not in bad.stderr


# --- (b) schema, datasources, variables ---------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TITLES))
def test_dashboard_has_the_shape_the_schema_test_reads(name: str) -> None:
    """Without the SDK (every Python): title, uid, uniquely numbered timeseries/stat/logs panels with options and
    targets on Prometheus or VictoriaLogs, query variables."""
    data = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    assert data["title"] == TITLES[name] and data["uid"] and data["panels"]
    ids = [panel.get("id") for panel in data["panels"]]
    assert len(set(ids)) == len(ids) and None not in ids, f"panel ids not unique: {ids}"
    for panel in data["panels"]:
        assert panel["type"] in ("timeseries", "stat", "logs"), panel.get("title")
        assert isinstance(panel.get("options"), dict) and panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] in ("prometheus", VICTORIALOGS_TYPE), (panel["title"], target)
    assert all(variable["type"] == "query" for variable in data["templating"]["list"])


@pytest.mark.parametrize("name", sorted(TITLES))
def test_dashboard_loads_with_the_grafana_schema(name: str) -> None:
    """The dashboard decodes into grafana-foundation-sdk's typed models and encodes back unchanged (on Python 3.10,
    which the SDK does not support, the shape test above stands in)."""
    data = json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))
    if not SDK_RUNS_HERE:
        test_dashboard_has_the_shape_the_schema_test_reads(name)
        return
    register_default_plugins()
    model = dashboard_model.Dashboard.from_json(data)
    # Anything the schema does not know is dropped by the decoder, so a round trip shows it.
    assert json.loads(JSONEncoder(sort_keys=True).encode(model)) == data
    assert model.title == TITLES[name] and model.uid and model.panels
    ids = [panel.id_val for panel in model.panels]
    assert len(set(ids)) == len(ids) and None not in ids, f"panel ids not unique: {ids}"
    for panel in model.panels:
        assert isinstance(panel, dashboard_model.Panel)
        assert panel.type_val in ("timeseries", "stat", "logs")
        assert isinstance(panel.options, (timeseries_model.Options, stat_model.Options, logs_model.Options)), (
            panel.title)
        assert panel.targets, panel.title
        for target in panel.targets:
            # The VictoriaLogs plugin's queries have no type in the SDK: they decode as a plain bag.
            logs = isinstance(target, UnknownDataquery) and target.data["datasource"]["type"] == VICTORIALOGS_TYPE
            assert isinstance(target, prometheus_model.Dataquery) or logs, (panel.title, target)
    for variable in model.templating.list_val or []:
        assert variable.type_val == dashboard_model.VariableType.QUERY


def test_every_datasource_reference_is_provisioned() -> None:
    """Every panel, target and variable names a provisioned datasource uid; exemplars lead to Jaeger by trace_id."""
    datasources = {ds["uid"]: ds for ds in _datasources()}
    for name, dashboard in _dashboards().items():
        refs = [(v["name"], v["datasource"]) for v in dashboard["templating"]["list"]]
        for panel in _panels(dashboard):
            refs.append((panel["title"], panel["datasource"]))
            refs += [(f"{panel['title']} {t['refId']}", t["datasource"]) for t in panel["targets"]]
        for where, ref in refs:
            assert ref["uid"] in datasources, f"{name}: {where} uses datasource {ref} that is not provisioned"
            assert ref["type"] == datasources[ref["uid"]]["type"], f"{name}: {where}: {ref}"

    prometheus = datasources["prometheus"]
    assert (prometheus["type"], prometheus["url"], prometheus["isDefault"]) == (
        "prometheus", "http://prometheus:9090", True)
    jaeger = [ds for ds in datasources.values() if ds["type"] == "jaeger"]
    assert [(ds["uid"], ds["url"]) for ds in jaeger] == [("jaeger", "http://jaeger:16686")]
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": jaeger[0]["uid"]}]


def test_traces_and_logs_link_both_ways() -> None:
    """Jaeger links a span to its trace's records in VictoriaLogs; a record's trace_id links to the trace in Jaeger."""
    datasources = {ds["uid"]: ds for ds in _datasources()}
    (logs,) = [ds for ds in datasources.values() if ds["type"] == VICTORIALOGS_TYPE]
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    assert logs["url"] == "http://victorialogs:9428" and "victorialogs" in services
    assert "-httpListenAddr=:9428" in services["victorialogs"]["command"]
    assert VICTORIALOGS_TYPE in services["grafana"]["environment"]["GF_PLUGINS_PREINSTALL"].split(",")

    to_logs = datasources["jaeger"]["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == logs["uid"] and to_logs["customQuery"] is True
    # $$ is how a provisioning file writes a literal $ (one $ would read an environment variable).
    assert to_logs["query"] == 'trace_id:="$${__span.traceId}"'
    assert to_logs["spanStartTimeShift"].startswith("-") and not to_logs["spanEndTimeShift"].startswith("-")

    (to_trace,) = logs["jsonData"]["derivedFields"]
    assert to_trace == {"name": "trace_id", "matcherType": "label", "matcherRegex": "trace_id",
                        "url": "$${__value.raw}", "urlDisplayLabel": to_trace["urlDisplayLabel"],
                        "datasourceUid": "jaeger"}


def test_dashboard_provider_reads_the_folder_compose_mounts() -> None:
    """The file provider loads /var/lib/grafana/dashboards, where compose mounts grafana/dashboards."""
    providers = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert [(p["type"], p["options"]["path"]) for p in providers] == [("file", "/var/lib/grafana/dashboards")]
    volumes = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["grafana"]["volumes"]
    assert "../grafana/dashboards:/var/lib/grafana/dashboards:ro" in volumes
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in volumes


def test_queries_use_the_template_variables() -> None:
    """Every selector filters on $service, and on $workflow/$channel/$plugin/$event where the metric has the label."""
    for name, dashboard in _dashboards().items():
        variables = _variables(dashboard)
        assert variables["service"]["query"] == SERVICE_QUERY
        for variable in variables.values():
            assert (variable["multi"], variable["includeAll"], variable["allValue"]) == (True, True, ".*"), (
                f"{name}: ${variable['name']}")
        used = set()
        for panel in _panels(dashboard):
            for target in panel["targets"]:
                expr = target["expr"]
                if _is_logs(panel):
                    assert expr.startswith(f'scope.name:="{REQUEST_LOG_SCOPE}" AND service.name:~"^$service$"'), (
                        f"{name}: {panel['title']}: {expr}")
                    for label, field in (("workflow", "nexus.workflow.name"), ("channel", "nexus.channel")):
                        if label in variables:
                            assert f'{field}:~"^${label}$"' in expr, f"{name}: {panel['title']} ignores ${label}"
                    used.update(re.findall(r"\$([a-z_]+)", expr))
                    continue
                selectors = SELECTOR.findall(expr)
                assert selectors or COLLECTOR_OWN.search(expr), f"{name}: {panel['title']}: no selector in {expr}"
                bare = METRIC_NAME.findall(re.sub(r"\bby \([^)]*\)", "", SELECTOR.sub("", expr)))
                assert not bare, f"{name}: {panel['title']}: metrics without a selector: {bare}"
                for metric, matchers in selectors:
                    assert 'service_name=~"$service"' in matchers, f"{name}: {panel['title']}: {metric}{{{matchers}}}"
                    family = re.sub(r"_(bucket|count|sum)$", "", metric)
                    for label in FILTER_LABELS.get(family, set()) & set(variables):
                        assert f'{label}=~"${label}"' in matchers, (
                            f"{name}: {panel['title']}: {metric} is not filtered by ${label}")
                used.update(re.findall(r"\$([a-z_]+)", expr))
        unused = set(variables) - used - {"service"}
        assert not unused, f"{name}: variables no query uses: {unused}"
        assert {"service", "workflow"} <= set(variables) or name == "plugins.json"


def test_panels_have_units_thresholds_and_exemplars() -> None:
    """Units on every panel; thresholds on error-ratio and latency panels; exemplars on exactly the latency queries."""
    for name, dashboard in _dashboards().items():
        for panel in _panels(dashboard):
            if panel["type"] == "logs":
                continue  # log lines: no unit, no thresholds
            defaults = panel["fieldConfig"]["defaults"]
            where = f"{name}: {panel['title']}"
            assert defaults.get("unit") in UNITS, where
            latency = any("histogram_quantile" in t["expr"] for t in panel["targets"])
            errors = defaults["unit"] == "percentunit" and "error" in panel["title"].lower()
            if latency or errors:
                steps = defaults["thresholds"]["steps"]
                assert len(steps) >= 2 and steps[0]["value"] is None, f"{where}: thresholds {steps}"
                assert [s["value"] for s in steps[1:]] == sorted(s["value"] for s in steps[1:]), where
            if latency:
                assert defaults["unit"] == "s", where
            for target in panel["targets"]:
                assert target.get("exemplar", False) == ("histogram_quantile" in target["expr"]), (
                    f"{where}: {target['expr']}")
    workflows = {p["title"]: p for p in _panels(_dashboards()["workflows.json"])}
    latency = workflows["Latency p50 / p95 / p99 by workflow and channel"]
    assert [re.match(r"histogram_quantile\(([0-9.]+),", t["expr"]).group(1) for t in latency["targets"]] == [
        "0.5", "0.95", "0.99"]


# --- (c) a real Prometheus answers every query -------------------------------------------------------

@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    """A local webhook receiver for the kit app's WebhookPlugin."""
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory, webhook: WebhookReceiver) -> Iterator[Served]:
    """tests/apps/kit.py served by `nexus-otel serve`, with its outbox and audit database in a temp dir."""
    workdir = tmp_path_factory.mktemp("kit")
    env = cli_env(workdir / "nexus-data", KIT_WEBHOOK_URL=webhook.url, KIT_WEBHOOK_SECRET=WEBHOOK_SECRET,
                  KIT_OUTBOX=str(workdir / "outbox.sqlite"), KIT_AUDIT_DSN=f"sqlite:///{workdir / 'audit.sqlite'}")
    served = Served(APP_TARGET, env, workdir)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def prometheus(kit: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Debian's prometheus with exemplar storage on, scraping the kit app every second."""
    try:
        binary = prometheus_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    workdir = tmp_path_factory.mktemp("prometheus")
    # PrometheusServer has no way to pass feature flags: start it through a wrapper that adds one.
    wrapper = workdir / "prometheus-with-exemplars"
    wrapper.write_text(f"#!/bin/sh\nexec '{binary}' --enable-feature=exemplar-storage \"$@\"\n")
    wrapper.chmod(0o755)
    server = PrometheusServer(workdir, [kit.url.removeprefix("http://")])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules[PrometheusServer.__module__], "prometheus_binary", lambda: str(wrapper))
        server.start()
    try:
        server.wait_for_targets_up()
        yield server
    finally:
        server.stop()


def _send(client: httpx.Client, phase: int) -> list[tuple[str, int]]:
    """One round of the mix: passing, slow, cached (hits and a miss) and failing executions."""
    mix = (
        [("greet", {"name": f"user{i}"}, 200) for i in range(5)]
        + [("slow", {"seconds": 0.02 * (i + 1)}, 200) for i in range(3)]
        + [("lookup", {"key": key}, 200) for key in ("a", "b", "a", "b", f"new{phase}")]
        + [("explode", {}, 500) for _ in range(2)]
    )
    sent = []
    for workflow, inputs, expected in mix:
        response = client.post(f"/workflows/{workflow}", json=inputs)
        assert response.status_code == expected, f"POST /workflows/{workflow}: {response.status_code} {response.text}"
        sent.append((workflow, response.status_code))
    return sent


@pytest.fixture(scope="module")
def traffic(kit: Served, prometheus: PrometheusServer, webhook: WebhookReceiver) -> list[tuple[str, int]]:
    """Two rounds of the mix a few scrapes apart, so every rate has an increase to see."""
    sent = []
    with httpx.Client(base_url=kit.url, timeout=10.0) as client:
        sent += _send(client, 1)
        time.sleep(2.5)
        sent += _send(client, 2)
    webhook.wait_for(lambda reqs: len(reqs) >= 10, timeout=20)
    return sent


def _has_finite_sample(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def test_every_panel_query_returns_data(prometheus: PrometheusServer, traffic: list) -> None:
    """Each panel's PromQL, variables filled in, parses in Prometheus and returns at least one finite sample."""
    queries = sorted({(_fill(t["expr"]), f"{name}: {panel['title']} {t['refId']}")
                      for name, panel, t in _targets() if not COLLECTOR_PATH.search(t["expr"])})
    assert len(queries) >= 25

    def run() -> dict[str, Any]:
        answers = {}
        for expr, where in queries:
            response = prometheus.client.get("/api/v1/query", params={"query": expr})
            body = response.json()
            if body.get("status") != "success":
                answers[where] = (expr, body)
            elif not _has_finite_sample(body["data"]["result"]):
                answers[where] = (expr, body["data"]["result"])
        return answers

    failing = poll(run, until=lambda f: not f, timeout=QUERY_WAIT, interval=1.0)
    assert not failing, "queries with no data:\n" + "\n".join(
        f"  {where}\n    {expr}\n    -> {got}" for where, (expr, got) in failing.items())


def test_panel_queries_follow_the_variables(prometheus: PrometheusServer, traffic: list) -> None:
    """The Executions panel sees both statuses; $workflow=explode keeps only failures; another $service sees none."""
    expr = next(t["expr"] for name, panel, t in _targets()
                if name == "workflows.json" and panel["title"] == "Executions")
    assert sorted(code for _, code in traffic) == [200] * 26 + [500] * 4
    everything = poll(lambda: prometheus.vector(_fill(expr), "status"),
                      until=lambda v: set(v) == {"completed", "failed"} and min(v.values()) > 0, timeout=QUERY_WAIT)
    assert set(everything) == {"completed", "failed"} and min(everything.values()) > 0, everything
    only_explode = _fill(expr.replace('workflow=~"$workflow"', 'workflow=~"explode"'))
    assert set(prometheus.vector(only_explode, "status")) == {"failed"}
    only_greet = _fill(expr.replace('workflow=~"$workflow"', 'workflow=~"greet|slow"'))
    assert set(prometheus.vector(only_greet, "status")) == {"completed"}
    assert prometheus.query(_fill(expr, service="no-such-service")) == []


def test_template_variable_queries_list_the_app(prometheus: PrometheusServer, traffic: list) -> None:
    """Each variable's label_values() query, through Prometheus's label API, lists the kit app's values."""
    expected = {"service": {SERVICE}, "workflow": {"greet", "slow", "lookup", "explode"}, "channel": {"api"},
                "plugin": {"flaky"}, "event": {"workflow_started", "workflow_completed", "workflow_failed"}}
    for name, dashboard in _dashboards().items():
        for var_name, variable in _variables(dashboard).items():
            match = re.fullmatch(r"label_values\((.+), ([a-z_]+)\)", variable["query"])
            assert match, f"{name}: ${var_name}: {variable['query']}"
            series, label = _fill(match.group(1)), match.group(2)
            want = expected[var_name]
            got = poll(lambda label=label, series=series: set(
                           prometheus._api(f"/api/v1/label/{label}/values", **{"match[]": series})),
                       until=lambda v, want=want: want <= v, timeout=QUERY_WAIT)
            assert expected[var_name] <= got, f"{name}: ${var_name}: {got}"


def test_latency_panels_have_trace_exemplars(prometheus: PrometheusServer, traffic: list) -> None:
    """Every exemplar-enabled query gets exemplars from Prometheus, each labelled with the provisioned trace_id."""
    destination = next(ds for ds in _datasources() if ds["uid"] == "prometheus")["jsonData"][
        "exemplarTraceIdDestinations"][0]["name"]
    exemplar_targets = [(f"{name}: {panel['title']} {t['refId']}", _fill(t["expr"]))
                        for name, panel, t in _targets() if t.get("exemplar")]
    assert len(exemplar_targets) >= 5

    def exemplars(expr: str) -> list[dict[str, Any]]:
        now = time.time()
        data = prometheus._api("/api/v1/query_exemplars", query=expr, start=str(now - 300), end=str(now))
        return [e for series in data for e in series["exemplars"]]

    for where, expr in exemplar_targets:
        got = poll(lambda expr=expr: exemplars(expr), until=bool, timeout=QUERY_WAIT)
        assert got, f"{where}: no exemplars for {expr}"
        for exemplar in got:
            assert re.fullmatch(r"[0-9a-f]{32}", exemplar["labels"].get(destination, "")), (where, exemplar)


# --- (d) a real VictoriaLogs answers every LogsQL query ----------------------------------------------

LOGS_SERVICE = "kit-logs"  # the request log below comes from its own app, so its $service has only records
ALL_VALUE = ".*"  # every variable's allValue


def _fill_logsql(expr: str, service: str = LOGS_SERVICE, **values: list[str]) -> str:
    """The LogsQL as the VictoriaLogs plugin sends it: a variable inside ``:~"..."`` becomes ``(a|b)``, "All"
    (these variables' ``allValue``) ``(.*)``; ``$service`` is ``service`` unless given."""
    chosen = {"service": [service], **values}
    return re.sub(r"\$([a-z_]+)", lambda m: "(" + "|".join(chosen.get(m.group(1), [ALL_VALUE])) + ")", expr)



@pytest.fixture(scope="module")
def request_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaLogs]:
    """VictoriaLogs holding the request log of an app that ran greet 4 times and explode twice over OTLP."""
    require_binary("victorialogs")
    workdir = tmp_path_factory.mktemp("request-log")
    with VictoriaLogs(workdir) as store:
        app = Nexus(LOGS_SERVICE, environ={
            "OTEL_SERVICE_NAME": LOGS_SERVICE, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{store.otlp_endpoint}/v1/logs",
            "OTEL_BLRP_SCHEDULE_DELAY": "100", "NEXUS_OTEL_DATA_DIR": str(workdir / "data")})

        @app.workflow("greet")
        def greet(inputs: dict) -> dict:
            return {"hello": inputs.get("name")}

        @app.workflow("explode")
        def explode(inputs: dict) -> dict:
            raise ValueError("boom")

        app.add_plugin(RequestLoggerPlugin(output=None))
        for index in range(4):
            app.execute_workflow("greet", {"name": f"user{index}"}, channel="api")
        for _ in range(2):
            with pytest.raises(ValueError):
                app.execute_workflow("explode", {}, channel="api")
        app.stop()
        poll(lambda: store.query(f'service.name:="{LOGS_SERVICE}"'), until=lambda r: len(r) >= 12, timeout=QUERY_WAIT)
        yield store


def _stats_range(store: VictoriaLogs, expr: str) -> httpx.Response:
    now = time.time()
    return store.client.post("/select/logsql/stats_query_range", data={
        "query": expr, "start": str(int(now - 600)), "end": str(int(now + 60)), "step": "60s"})


def test_every_logs_query_is_answered_by_victorialogs(request_log: VictoriaLogs) -> None:
    """Each LogsQL target, variables filled in as the plugin does, is accepted by VictoriaLogs and returns records."""
    targets = list(_targets(VICTORIALOGS_TYPE))
    assert {t["queryType"] for _, _, t in targets} == {"instant", "statsRange"}
    for name, panel, target in targets:
        where = f"{name}: {panel['title']} {target['refId']}"
        expr = _fill_logsql(target["expr"])
        if target["queryType"] == "instant":
            response = request_log.query_response(expr, limit="1000")
            assert response.status_code == 200, f"{where}: {expr}: {response.text}"
            records = [json.loads(line) for line in response.text.splitlines()]
            assert len(records) == 12, f"{where}: {records}"  # started + an end record per execution
            for record in records:  # the derived field's label: the link to Jaeger
                assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"]), (where, record)
        else:
            response = _stats_range(request_log, expr)
            assert response.status_code == 200, f"{where}: {expr}: {response.text}"
            series = {(s["metric"]["nexus.workflow.name"], s["metric"]["nexus.workflow.status"]):
                      sum(int(v) for _, v in s["values"]) for s in response.json()["data"]["result"]}
            assert series == {("greet", "completed"): 4, ("explode", "failed"): 2}, f"{where}: {series}"


def test_logs_queries_follow_the_variables(request_log: VictoriaLogs) -> None:
    """$workflow=explode keeps its failed records only; another $service or $channel sees none; bad LogsQL is a 400."""
    expr = next(t["expr"] for name, panel, t in _targets(VICTORIALOGS_TYPE) if panel["title"] == "Request log")
    explode = request_log.query(_fill_logsql(expr, workflow=["explode"]))
    assert sorted(r["event_name"] for r in explode) == ["nexus.workflow.failed"] * 2 + ["nexus.workflow.started"] * 2
    assert all(r.get("exception.type") == "ValueError" for r in explode if r["event_name"].endswith("failed"))
    both = request_log.query(_fill_logsql(expr, workflow=["explode", "greet"]))
    assert len(both) == 12
    assert request_log.query(_fill_logsql(expr, service="no-such-service")) == []
    assert request_log.query(_fill_logsql(expr, channel=["cli"])) == []
    assert request_log.query_response(_fill_logsql(expr).replace(" AND ", " AND (", 1)).status_code == 400


def test_the_trace_to_logs_query_finds_a_traces_records(request_log: VictoriaLogs) -> None:
    """Jaeger's link (tracesToLogsV2), with a trace id put in as Grafana does, selects that execution's two records."""
    jaeger = next(ds for ds in _datasources() if ds["uid"] == "jaeger")
    template = jaeger["jsonData"]["tracesToLogsV2"]["query"].replace("$$", "$")  # what Grafana reads
    trace_id = request_log.query(f'service.name:="{LOGS_SERVICE}" AND nexus.workflow.name:="explode"')[0]["trace_id"]
    records = request_log.query(template.replace("${__span.traceId}", trace_id))
    assert sorted(r["event_name"] for r in records) == ["nexus.workflow.failed", "nexus.workflow.started"]
