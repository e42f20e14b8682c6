"""Pre-aggregated hot-path instruments: same numbers as the SDK's, exemplars, thread safety, every output."""

import random
import subprocess
import sys
import textwrap
import threading

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.trace import SpanContext, TraceFlags

from nexus_otel import Nexus
from nexus_otel.errors import ConfigurationError
from nexus_otel.telemetry import contract as c
from nexus_otel.telemetry.bound import BoundMetrics

BOUNDS = c.WORKFLOW_BUCKETS
SAMPLED = SpanContext(0x1234, 0x99, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
UNSAMPLED = SpanContext(0x5678, 0x77, is_remote=False, trace_flags=TraceFlags(0))


def _sdk_points(values_by_attrs, kind):
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    if kind == "histogram":
        inst = meter.create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=list(BOUNDS))
        measure = inst.record
    else:
        inst = (meter.create_counter if kind == "counter" else meter.create_up_down_counter)("h", unit="1")
        measure = inst.add
    for attrs, values in values_by_attrs:
        for v in values:
            measure(v, attrs)
    metric = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics[0]
    return metric, {frozenset(p.attributes.items()): p for p in metric.data.data_points}


def _bound_points(values_by_attrs, kind):
    bound = BoundMetrics()
    if kind == "histogram":
        family = bound.histogram("h", "s", "", BOUNDS)
    elif kind == "counter":
        family = bound.counter("h", "1")
    else:
        family = bound.up_down_counter("h", "1")
    for attrs, values in values_by_attrs:
        series = family.bind(attrs)
        for v in values:
            (series.record if kind == "histogram" else series.add)(v)
    [metric] = bound.produce()
    return metric, {frozenset(p.attributes.items()): p for p in metric.data.data_points}


def test_histogram_matches_the_sdk_aggregation():
    """Bucket counts, count, sum, min and max equal the SDK's for the same values, bounds included."""
    rng = random.Random(7)
    values = [rng.choice(BOUNDS) for _ in range(200)] + [rng.uniform(0, 400) for _ in range(800)] + [0.0]
    data = [({"workflow": "a", "status": "completed"}, values[:600]),
            ({"workflow": "b", "status": "failed"}, values[600:])]
    sdk_metric, sdk = _sdk_points(data, "histogram")
    ours_metric, ours = _bound_points(data, "histogram")
    assert set(sdk) == set(ours)
    assert type(sdk_metric.data) is type(ours_metric.data)
    assert ours_metric.data.aggregation_temporality == sdk_metric.data.aggregation_temporality
    for key, p in sdk.items():
        q = ours[key]
        assert list(q.bucket_counts) == list(p.bucket_counts)
        assert list(q.explicit_bounds) == list(p.explicit_bounds)
        assert (q.count, q.min, q.max) == (p.count, p.min, p.max)
        assert q.sum == pytest.approx(p.sum)


@pytest.mark.parametrize("kind", ["counter", "up_down_counter"])
def test_sums_match_the_sdk_aggregation(kind):
    """Counters and up-down counters add up like the SDK's and keep its monotonic flag."""
    values = [1, 1, 3, 1] if kind == "counter" else [1, 1, -1, 1, -1, -1]
    data = [({"workflow": "a"}, values), ({"workflow": "b"}, values[:2])]
    sdk_metric, sdk = _sdk_points(data, kind)
    ours_metric, ours = _bound_points(data, kind)
    assert ours_metric.data.is_monotonic is sdk_metric.data.is_monotonic
    assert {k: p.value for k, p in ours.items()} == {k: p.value for k, p in sdk.items()}


def test_concurrent_measurements_are_not_lost():
    """Eight threads adding and recording at once lose no measurement."""
    bound = BoundMetrics()
    counter = bound.counter("c").bind({"w": "x"})
    hist = bound.histogram("h", "s", "", BOUNDS).bind({"w": "x"})

    def work():
        for _ in range(20_000):
            counter.add(1)
            hist.record(0.003)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    points = {m.name: m.data.data_points[0] for m in bound.produce()}
    assert points["c"].value == 160_000
    assert points["h"].count == 160_000
    assert points["h"].bucket_counts[BOUNDS.index(0.005)] == 160_000


def test_exemplars_follow_the_exemplar_filter():
    """trace_based keeps sampled spans only, always_on keeps any span, always_off keeps none."""
    def exemplars(filter_name, ctx):
        bound = BoundMetrics(filter_name)
        bound.histogram("h", "s", "", BOUNDS).bind({}).record(0.02, ctx)
        bound.counter("c").bind({}).add(1, ctx)
        return {m.name: list(m.data.data_points[0].exemplars) for m in bound.produce()}

    kept = exemplars("trace_based", SAMPLED)
    [ex] = kept["h"]
    assert (ex.trace_id, ex.span_id, ex.value) == (SAMPLED.trace_id, SAMPLED.span_id, 0.02)
    assert [e.trace_id for e in kept["c"]] == [SAMPLED.trace_id]
    assert exemplars("trace_based", UNSAMPLED) == {"h": [], "c": []}
    assert [e.trace_id for e in exemplars("always_on", UNSAMPLED)["h"]] == [UNSAMPLED.trace_id]
    assert exemplars("always_off", SAMPLED) == {"h": [], "c": []}


def test_histogram_keeps_the_last_exemplar_per_bucket():
    """Each bucket shows the latest measurement's trace, as the SDK's aligned reservoir does."""
    bound = BoundMetrics()
    series = bound.histogram("h", "s", "", BOUNDS).bind({})
    first = SpanContext(1, 1, False, TraceFlags(TraceFlags.SAMPLED))
    later = SpanContext(2, 2, False, TraceFlags(TraceFlags.SAMPLED))
    series.record(0.002, first)
    series.record(0.0021, later)
    series.record(7.0, first)
    [metric] = bound.produce()
    by_value = {e.value: e.trace_id for e in metric.data.data_points[0].exemplars}
    assert by_value == {0.0021: 2, 7.0: 1}


def test_series_past_the_cardinality_limit_fold_into_overflow():
    """Past the limit, new attribute sets are counted in one otel.metric.overflow series."""
    bound = BoundMetrics(cardinality_limit=3)
    family = bound.counter("c")
    for i in range(10):
        family.bind({"workflow": f"w{i}"}).add(1)
    [metric] = bound.produce()
    values = {frozenset(p.attributes.items()): p.value for p in metric.data.data_points}
    assert len(values) == 3
    assert values[frozenset({("otel.metric.overflow", True)})] == 8
    assert sum(values.values()) == 10


def test_same_instrument_twice_is_the_same_and_a_clash_is_an_error():
    """Asking again returns the instrument; the same name with other buckets is refused."""
    bound = BoundMetrics()
    h = bound.histogram("h", "s", "", BOUNDS)
    assert bound.histogram("h", "s", "", BOUNDS) is h
    with pytest.raises(ValueError, match="'h'"):
        bound.histogram("h", "s", "", (1.0, 2.0))
    with pytest.raises(ValueError, match="increase"):
        bound.histogram("x", "s", "", (2.0, 1.0))


def test_bad_exemplar_filter_fails_at_start_naming_the_variable():
    """OTEL_METRICS_EXEMPLAR_FILTER with an unknown value stops the app from starting."""
    with pytest.raises(ConfigurationError, match="OTEL_METRICS_EXEMPLAR_FILTER"):
        Nexus("x", environ={"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"})


def test_served_app_scrape_has_exemplars_of_the_workflow_span(tmp_path):
    """On embedded defaults the OpenMetrics scrape links the duration bucket to the workflow's trace."""
    app = Nexus("ex", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.register("w", lambda i: 1)
    seen = []
    app.on_workflow_completed(lambda e: seen.append(e.trace_id))
    app.execute_workflow("w")
    text = app.telemetry.prometheus_exposition(openmetrics=True)[0].decode()
    buckets = [line for line in text.splitlines()
               if line.startswith("nexus_workflow_duration_seconds_bucket{") and "trace_id" in line]
    assert len(buckets) == 1 and f'trace_id="{seen[0]}"' in buckets[0]
    app.stop()


def test_borrowed_meter_provider_gets_the_contract_metrics_through_the_sdk():
    """A process-wide SDK MeterProvider (not built by nexus-otel) receives the contract metrics."""
    code = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from nexus_otel import Nexus

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        app = Nexus("g", environ={"OTEL_TRACES_EXPORTER": "none"})
        assert app.telemetry.bound_metrics is None
        app.register("w", lambda i: 1)
        app.on_workflow_started(lambda e: None)
        app.execute_workflow("w")
        app.execute_workflow("w")
        got = {}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    got[m.name] = sum(getattr(p, "count", None) or getattr(p, "value", 0) for p in m.data.data_points)
        print(got["nexus.workflow.executions"], got["nexus.workflow.duration"], got["nexus.plugin.hook.duration"])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2", "2"]


def test_many_channels_keep_memory_bounded_and_fold_into_overflow():
    """Callers inventing a channel per call cannot grow the app's caches or its series without end."""
    from nexus_otel.testing import CapturedTelemetry

    capture = CapturedTelemetry()
    app = capture.app("many")
    app.register("w", lambda inputs: 1)
    for i in range(5000):
        app.execute_workflow("w", channel=f"ch-{i}")
    points = capture.metric_points("nexus.workflow.executions")
    assert len(points) <= 2000
    assert sum(p.value for p in points) == 5000
    assert any(p.attributes.get("otel.metric.overflow") for p in points)
    assert len(app._executor._executions) <= 4096 and len(app._executor._durations) <= 4096
    capture.shutdown()
