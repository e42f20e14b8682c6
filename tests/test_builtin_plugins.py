"""Built-in plugins: request logging, metrics, monitoring and caching, each over a reusable building block."""

import asyncio
import io
import json
import logging
import threading
import time

import httpx
import pytest
from opentelemetry.sdk.metrics.export import MetricExportResult
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from nexus_otel.errors import ConfigurationError, PluginSetupError
from nexus_otel.plugins import CachingPlugin, MetricsPlugin, MonitoringPlugin, RequestLoggerPlugin


def _shop(app):
    @app.workflow("ok")
    def ok(inputs):
        logging.getLogger("user.code").warning("inside the workflow")
        return {"n": inputs.get("n")}

    @app.workflow("bad")
    def bad(inputs):
        raise ValueError("nope")


# -- request logging ------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_request_log_records_carry_the_spans_trace_id(capture, fmt):
    """Start and end records, in plain and JSON form, carry the workflow span's trace and span ids."""
    out = io.StringIO()
    app = capture.app()
    _shop(app)
    app.add_plugin(RequestLoggerPlugin(fmt, output=out))
    user_log = io.StringIO()
    user_handler = logging.StreamHandler(user_log)
    user_handler.setFormatter(logging.Formatter("%(message)s trace_id=%(trace_id)s span_id=%(span_id)s"))
    logging.getLogger("user.code").addHandler(user_handler)
    try:
        app.execute_workflow("ok", {"n": 1, "password": "s3cr3t"}, session_id="s1", channel="api")
        with pytest.raises(ValueError):
            app.execute_workflow("bad", {})
    finally:
        logging.getLogger("user.code").removeHandler(user_handler)
        app.stop()
    spans = {s.name: s for s in capture.spans}
    ok_span, bad_span = spans["workflow ok"], spans["workflow bad"]
    ok_trace = f"{ok_span.context.trace_id:032x}"
    ok_id = f"{ok_span.context.span_id:016x}"
    lines = [line for line in out.getvalue().splitlines() if line]
    assert len(lines) == 4
    assert "s3cr3t" not in out.getvalue()
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        started, completed, _, failed = records
        assert started["message"] == "workflow started" and started["event"] == "workflow.started"
        assert started["inputs"] == {"n": 1, "password": "[REDACTED]"}
        assert started["session_id"] == "s1" and started["channel"] == "api"
        assert completed["status"] == "completed" and completed["duration_ms"] >= 0
        assert failed["status"] == "failed" and failed["error_type"] == "ValueError"
        assert failed["level"] == "WARNING"
        assert started["trace_id"] == completed["trace_id"] == ok_trace
        assert started["span_id"] == ok_id
        assert failed["trace_id"] == f"{bad_span.context.trace_id:032x}"
    else:
        assert "workflow started" in lines[0] and f"trace_id={ok_trace}" in lines[0]
        assert "workflow=ok" in lines[0] and 'inputs={"n": 1, "password": "[REDACTED]"}' in lines[0]
        assert "workflow completed" in lines[1] and "status=completed" in lines[1] and f"span_id={ok_id}" in lines[1]
        assert "workflow failed" in lines[3] and "error_type=ValueError" in lines[3]
    # A log call by the workflow's own code carries the workflow span's ids.
    assert user_log.getvalue().strip() == f"inside the workflow trace_id={ok_trace} span_id={ok_id}"


def test_request_logger_bad_settings_fail_at_setup(capture):
    """A wrong format or output fails at setup naming the setting and the value."""
    with pytest.raises(PluginSetupError, match=r"RequestLoggerPlugin.format='xml'.*'plain', 'json'"):
        capture.app().add_plugin(RequestLoggerPlugin("xml"))
    with pytest.raises(PluginSetupError, match=r"RequestLoggerPlugin.output=42"):
        capture.app().add_plugin(RequestLoggerPlugin(output=42))


def test_request_logger_teardown_stops_logging_and_correlation(capture):
    """After unregister, no more records and the log record factory is restored."""
    before = logging.getLogRecordFactory()
    out = io.StringIO()
    app = capture.app()
    _shop(app)
    app.add_plugin(RequestLoggerPlugin(output=out))
    assert logging.getLogRecordFactory() is not before
    app.plugins.unregister("request_logger")
    assert logging.getLogRecordFactory() is before
    app.execute_workflow("ok", {})
    assert out.getvalue() == ""


# -- metrics ---------------------------------------------------------------------------------
def test_get_metrics_and_prometheus_scrape_agree(capture):
    """After 6 passes and 2 failures, get_metrics() overall and per workflow agree with the scrape."""
    app = capture.app()
    _shop(app)
    plugin = MetricsPlugin()
    app.add_plugin(plugin)
    for i in range(6):
        app.execute_workflow("ok", {"n": i})
    for _ in range(2):
        with pytest.raises(ValueError):
            app.execute_workflow("bad", {})
    m = plugin.get_metrics()
    assert (m["requests_total"], m["requests_success"], m["requests_failed"]) == (8, 6, 2)
    assert m["success_rate"] == pytest.approx(0.75)
    assert m["avg_duration"] == pytest.approx(m["total_duration"] / 6) and m["total_duration"] > 0
    assert m["workflows"]["ok"]["requests_success"] == 6 and m["workflows"]["bad"]["requests_failed"] == 2
    assert m["workflows"]["bad"]["success_rate"] == 0
    scraped = {}
    for family in text_string_to_metric_families(capture.prometheus_text()):
        for s in family.samples:
            if s.name == "nexus_workflow_executions_total":
                scraped[(s.labels["workflow"], s.labels["status"])] = s.value
    assert scraped == {("ok", "completed"): 6.0, ("bad", "failed"): 2.0}


def test_openmetrics_scrape_has_exemplars_pointing_at_exported_traces(capture):
    """An OpenMetrics scrape shows duration exemplars whose trace_id is an exported workflow span's."""
    app = capture.app()
    _shop(app)
    app.add_plugin(MetricsPlugin())
    for i in range(5):
        app.execute_workflow("ok", {"n": i})
    text = capture.prometheus_text(openmetrics=True)
    assert text.endswith("# EOF\n")
    exemplar_traces = set()

    for family in om_parse(text):
        for s in family.samples:
            if s.name == "nexus_workflow_duration_seconds_bucket" and s.exemplar is not None:
                exemplar_traces.add(s.exemplar.labels["trace_id"])
    exported = {f"{s.context.trace_id:032x}" for s in capture.spans_named("workflow ok")}
    assert exemplar_traces and exemplar_traces <= exported


# -- monitoring --------------------------------------------------------------------------------
def test_monitoring_seed_style_attributes_and_own_port(capture):
    """Set as Kailash Nexus's plugin API does (attributes after construction): metrics served on their own port."""
    app = capture.app()
    _shop(app)
    plugin = MonitoringPlugin()
    plugin.backend = "prometheus"
    plugin.interval = 30
    plugin.port = 0
    app.add_plugin(plugin)
    app.execute_workflow("ok", {})
    url = plugin.url
    body = httpx.get(url, timeout=5).text
    assert ('nexus_workflow_executions_total{channel="python",service_name="test",status="completed",workflow="ok"} 1.0'
            in body)
    app.stop()
    assert plugin.url is None
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=2)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"backend": "statsd"}, "MonitoringPlugin.backend='statsd'"),
        ({"interval": 0}, "MonitoringPlugin.interval=0"),
        ({"interval": -5}, "MonitoringPlugin.interval=-5"),
        ({"interval": "30"}, "MonitoringPlugin.interval='30'"),
        ({"interval": True}, "MonitoringPlugin.interval=True"),
        ({"port": 70000}, "MonitoringPlugin.port=70000"),
    ],
)
def test_monitoring_bad_settings_fail_at_setup(capture, kwargs, needle):
    """A wrong backend, interval or port fails at setup naming it; nothing stays registered."""
    app = capture.app()
    with pytest.raises(PluginSetupError) as info:
        app.add_plugin(MonitoringPlugin(**kwargs))
    assert needle in str(info.value)
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert app.plugins.list() == []


class _CollectingExporter:
    """A metric exporter that keeps what it is given (the real console/OTLP ones are tested elsewhere)."""

    def __init__(self):
        self.batches = []
        self._preferred_temporality = {}
        self._preferred_aggregation = {}

    def export(self, data, timeout_millis=10_000, **kwargs):
        self.batches.append(data)
        return MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis=30_000, **kwargs):
        pass

    def force_flush(self, timeout_millis=10_000):
        return True


def test_monitoring_console_backend_prints_every_interval(capture, capsys):
    """backend="console" prints the metrics every interval seconds."""
    app = capture.app()
    _shop(app)
    app.add_plugin(MonitoringPlugin(backend="console", interval=0.2))
    app.execute_workflow("ok", {})
    time.sleep(0.7)
    out = capsys.readouterr().out
    assert out.count('"name": "nexus.workflow.executions"') >= 2
    app.stop()


def test_metrics_hub_push_interval(capture):
    """The hub feeds an added exporter on its interval and once more at stop."""
    exporter = _CollectingExporter()
    app = capture.app()
    _shop(app)
    push = app.telemetry.require_metrics_hub("test").add_push(exporter, 0.1, "test")
    app.execute_workflow("ok", {})
    time.sleep(0.45)
    seen = len(exporter.batches)
    assert seen >= 3
    push.stop()
    assert len(exporter.batches) == seen + 1
    names = {m.name for rm in exporter.batches[-1].resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "nexus.workflow.executions" in names


# -- caching --------------------------------------------------------------------------------------
def _counted(app, delay=0.0):
    runs = []

    @app.workflow("price")
    def price(inputs):
        runs.append(inputs["sku"])
        time.sleep(delay)
        return {"sku": inputs["sku"], "price": 10}

    return runs


def test_cache_hit_skips_function_keeps_span_and_hooks_and_expires(capture):
    """Within the TTL the function does not run, the span says nexus.cache.hit=true, hooks see it; after it, it runs."""
    app = capture.app()
    runs = _counted(app)
    clock = [0.0]
    plugin = CachingPlugin(ttl=60)
    app.add_plugin(plugin)
    plugin.cache._clock = lambda: clock[0]
    seen = []
    app.on_workflow_completed(lambda e: seen.append(e.attributes.get("cache_hit")))
    first = app.execute_workflow("price", {"sku": "A"})
    second = app.execute_workflow("price", {"sku": "A"})
    assert first == second == {"sku": "A", "price": 10}
    assert runs == ["A"]
    assert [s.attributes["nexus.cache.hit"] for s in capture.spans_named("workflow price")] == [False, True]
    assert seen == [False, True]
    assert capture.metric_value("nexus.workflow.executions", workflow="price") == 2
    clock[0] = 61
    app.execute_workflow("price", {"sku": "A"})
    assert runs == ["A", "A"]
    assert capture.metric_value("nexus.cache.hits", workflow="price") == 1
    assert capture.metric_value("nexus.cache.misses", workflow="price") == 2
    second["price"] = 0  # callers get copies
    assert app.execute_workflow("price", {"sku": "A"})["price"] == 10


def test_cache_keys_are_canonical_and_failures_not_cached(capture):
    """Key order does not matter; failed runs are not cached; clear_cache() empties it."""
    app = capture.app()
    calls = []

    @app.workflow("flaky")
    def flaky(inputs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("down")
        return "ok"

    plugin = CachingPlugin(ttl=60)
    app.add_plugin(plugin)
    with pytest.raises(ConnectionError):
        app.execute_workflow("flaky", {"a": 1, "b": 2})
    assert app.execute_workflow("flaky", {"b": 2, "a": 1}) == "ok"
    assert app.execute_workflow("flaky", {"a": 1, "b": 2}) == "ok"
    assert len(calls) == 2
    plugin.clear_cache()
    app.execute_workflow("flaky", {"a": 1, "b": 2})
    assert len(calls) == 3


def test_concurrent_misses_run_the_function_once_threads(capture):
    """20 threads asking for the same missing key run the function once; all get the result."""
    app = capture.app()
    runs = _counted(app, delay=0.2)
    app.add_plugin(CachingPlugin(ttl=60))
    results = []
    barrier = threading.Barrier(20)

    def call():
        barrier.wait()
        results.append(app.execute_workflow("price", {"sku": "Z"}))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert runs == ["Z"]
    assert len(results) == 20 and all(r == {"sku": "Z", "price": 10} for r in results)


def test_concurrent_misses_run_the_function_once_asyncio(capture):
    """20 asyncio tasks for one missing key run the async workflow once."""
    app = capture.app()
    runs = []

    @app.workflow("aprice")
    async def aprice(inputs):
        runs.append(1)
        await asyncio.sleep(0.1)
        return 42

    app.add_plugin(CachingPlugin(ttl=60))

    async def main():
        return await asyncio.gather(*(app.aexecute_workflow("aprice", {"k": 1}) for _ in range(20)))

    assert asyncio.run(main()) == [42] * 20
    assert runs == [1]


def test_cache_size_bound_and_settings(capture):
    """max_entries evicts the least recently used; bad ttl fails at setup naming it."""
    app = capture.app()
    runs = _counted(app)
    plugin = CachingPlugin(ttl=60, max_entries=2)
    app.add_plugin(plugin)
    for sku in ("A", "B", "C", "A"):
        app.execute_workflow("price", {"sku": sku})
    assert runs == ["A", "B", "C", "A"]
    assert plugin.stats()["entries"] == 2
    with pytest.raises(PluginSetupError, match=r"CachingPlugin.ttl=0"):
        capture.app("x").add_plugin(CachingPlugin(ttl=0))
