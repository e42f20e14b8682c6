"""In-process tail sampling: whole traces kept for errors, slowness, a caller's flag or a ratio; no others exported."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from nexus_otel import Nexus
from nexus_otel.cli import main as cli
from nexus_otel.errors import ConfigurationError
from nexus_otel.processors.tail_sampling import (
    SAMPLING_REASON,
    RecordingSampler,
    TailSampling,
    TailSamplingProcessor,
)
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.telemetry.telemetry import Telemetry
from nexus_otel.traceview import recent_traces

try:  # tests/ may or may not become a package
    from .otlp_receivers import HTTPReceiver
except ImportError:
    from otlp_receivers import HTTPReceiver

pytestmark = pytest.mark.timeout(60)

MS = 1_000_000  # nanoseconds


@pytest.fixture(autouse=True)
def own_providers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* from the machine and no global SDK provider: each Telemetry builds (and wraps) its own."""
    for key in list(os.environ):
        if key.startswith("OTEL_") or key.startswith("NEXUS_OTEL_TAIL_SAMPLING"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(trace_api, "get_tracer_provider", lambda: trace_api.ProxyTracerProvider())
    monkeypatch.setattr(metrics_api, "get_meter_provider", lambda: metrics_api.NoOpMeterProvider())
    yield


class Rig:
    """A Telemetry with tail sampling on, built from a real SDK provider, exporting into memory."""

    def __init__(self, capture, policy: TailSampling, sampler=DEFAULT_ON) -> None:
        self.capture = capture
        self.telemetry = Telemetry(
            "tail", meter_provider=capture.meter_provider, metrics_hub=capture.metrics_hub,
            prometheus_registry=capture.prometheus_registry,
            config=TelemetryConfig(sampler=sampler), tail_sampling=policy,
        )
        self.exporter = InMemorySpanExporter()
        self.telemetry.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.telemetry.tracer

    @property
    def spans(self):
        return list(self.exporter.get_finished_spans())

    def traces(self) -> dict[int, list]:
        out: dict[int, list] = {}
        for s in self.spans:
            out.setdefault(s.context.trace_id, []).append(s)
        return out

    def counted(self, outcome: str) -> float:
        return self.capture.metric_value("nexus.telemetry.spans", exporter="tail_sampling", outcome=outcome)


@pytest.fixture
def rig(capture) -> Iterator:
    """Build rigs for a policy; shut them down after the test."""
    built: list[Rig] = []

    def make(policy: TailSampling, **kwargs) -> Rig:
        r = Rig(capture, policy, **kwargs)
        built.append(r)
        return r

    yield make
    for r in built:
        r.telemetry.shutdown()


def run_trace(tracer, *, children: int = 2, error: bool = False, root_ms: float | None = None,
              context=None, name: str = "root", attributes=None) -> int:
    """One trace: a root with ``children`` children (the last one ERROR if ``error``); its trace id."""
    start = time.time_ns()
    root = tracer.start_span(name, context=context, start_time=start, attributes=attributes,
                             kind=SpanKind.SERVER if context is not None else SpanKind.INTERNAL)
    with trace_api.use_span(root, end_on_exit=False):
        for i in range(children):
            with tracer.start_as_current_span(f"child {i}") as child:
                if error and i == children - 1:
                    child.set_status(Status(StatusCode.ERROR, "boom"))
    root.end(end_time=start + int(root_ms * MS) if root_ms is not None else None)
    return root.get_span_context().trace_id


def caller(flags: str, trace_id: int | None = None):
    """A context extracted from a caller's W3C traceparent with the given flags."""
    ids = RandomIdGenerator()
    tid = trace_id or ids.generate_trace_id()
    header = f"00-{tid:032x}-{ids.generate_span_id():016x}-{flags}"
    return TraceContextTextMapPropagator().extract({"traceparent": header})


def reason(spans) -> str | None:
    """The sampling reason on the (single) local root among ``spans``."""
    roots = [s for s in spans if s.parent is None or s.parent.is_remote]
    assert len(roots) == 1, [s.name for s in spans]
    return roots[0].attributes.get(SAMPLING_REASON)


# -- decisions --------------------------------------------------------------------------------------
def test_error_traces_are_always_kept_whole(rig):
    """With ratio 0, a trace with an ERROR span anywhere is exported whole with reason error; OK ones are not."""
    r = rig(TailSampling(ratio=0.0))
    failed = {run_trace(r.tracer, error=True) for _ in range(5)}
    ok = {run_trace(r.tracer) for _ in range(15)}
    traces = r.traces()
    assert set(traces) == failed and not ok & set(traces)
    for spans in traces.values():
        assert len(spans) == 3 and reason(spans) == "error"
    assert r.counted("kept") == 15 and r.counted("sampled_out") == 45 and r.counted("overflow") == 0


def test_slow_traces_are_kept(rig):
    """A local root at least slow_ms long is kept (reason slow); a faster one is not."""
    r = rig(TailSampling(ratio=0.0, slow_ms=100))
    slow = run_trace(r.tracer, root_ms=150)
    edge = run_trace(r.tracer, root_ms=100)
    fast = run_trace(r.tracer, root_ms=50)
    traces = r.traces()
    assert set(traces) == {slow, edge} and fast not in traces
    assert reason(traces[slow]) == "slow" and reason(traces[edge]) == "slow"


def test_ratio_keeps_a_binomial_share_of_ok_traces(rig):
    """Ratio 0.25 over 2,000 OK traces keeps a share within 4 sigma, each whole, with reason ratio."""
    r = rig(TailSampling(ratio=0.25))
    n, p = 2000, 0.25
    for _ in range(n):
        run_trace(r.tracer, children=1)
    traces = r.traces()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(len(traces) - n * p) <= 4 * sigma, len(traces)
    assert all(len(spans) == 2 and reason(spans) == "ratio" for spans in traces.values())
    assert r.counted("kept") == 2 * len(traces) and r.counted("sampled_out") == 2 * (n - len(traces))


class _Ids(IdGenerator):
    """Hands out a fixed list of trace ids, so two runs see the same ones."""

    def __init__(self, trace_ids: list[int]) -> None:
        self._trace_ids = iter(trace_ids)
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return next(self._trace_ids)


def test_decision_is_deterministic_on_the_trace_id():
    """The same trace ids get the same decisions in a fresh pipeline, matching the SDK's TraceIdRatioBased."""
    trace_ids = [RandomIdGenerator().generate_trace_id() for _ in range(300)]

    def kept(ids: list[int]) -> set[int]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=RecordingSampler(DEFAULT_ON), id_generator=_Ids(ids))
        provider.add_span_processor(TailSamplingProcessor(TailSampling(ratio=0.3), None,
                                                          [SimpleSpanProcessor(exporter)]))
        for _ in ids:
            run_trace(provider.get_tracer("t"), children=1)
        provider.shutdown()
        return {s.context.trace_id for s in exporter.get_finished_spans()}

    first, second = kept(trace_ids), kept(list(reversed(trace_ids)))
    assert first == second and 0 < len(first) < len(trace_ids)
    head = TraceIdRatioBased(0.3)
    assert first == {t for t in trace_ids if head.should_sample(None, t, "x").decision.is_sampled()}


def test_per_workflow_policy_overrides_ratio_and_threshold(rig):
    """per_workflow: checkout kept at ratio 1, report kept when slow, others dropped at the default ratio 0."""
    r = rig(TailSampling(ratio=0.0, per_workflow={
        "checkout": TailSampling(ratio=1.0), "report": TailSampling(ratio=0.0, slow_ms=100),
    }))
    app = Nexus("tail", telemetry=r.telemetry)
    app.register("checkout", lambda inputs: "paid")
    app.register("browse", lambda inputs: time.sleep(inputs["s"]))
    app.register("report", lambda inputs: time.sleep(inputs["s"]))
    app.on_workflow_started(lambda event: None)
    for _ in range(10):
        app.execute_workflow("checkout", {})
        app.execute_workflow("browse", {"s": 0})
    app.execute_workflow("browse", {"s": 0.12})  # as slow as the slow report, but browse has no threshold
    app.execute_workflow("report", {"s": 0.12})
    app.execute_workflow("report", {"s": 0})
    by_workflow: dict[str, list[str]] = {}
    for spans in r.traces().values():
        (workflow,) = [s for s in spans if s.name.startswith("workflow ")]
        by_workflow.setdefault(workflow.attributes["nexus.workflow.name"], []).append(reason(spans))
        assert len(spans) == 2  # the hook span came along
    assert by_workflow == {"checkout": ["ratio"] * 10, "report": ["slow"]}


# -- a caller's traceparent ------------------------------------------------------------------------
def test_sampled_caller_keeps_the_trace_whole(rig):
    """A caller's traceparent with flag 01 keeps the trace whole (reason parent), even at ratio 0."""
    r = rig(TailSampling(ratio=0.0))
    tid = run_trace(r.tracer, context=caller("01"), children=3)
    (spans,) = r.traces().values()
    assert spans[0].context.trace_id == tid and len(spans) == 4
    assert reason(spans) == "parent"
    assert all(s.context.trace_flags.sampled for s in spans)


def test_unsampled_caller_drops_ok_traces_but_keeps_errors(rig):
    """Flag 00: an OK trace is dropped even at ratio 1; an error trace is kept whole, its spans exported sampled."""
    r = rig(TailSampling(ratio=1.0))
    ok = run_trace(r.tracer, context=caller("00"))
    assert r.spans == [] and r.counted("sampled_out") == 3

    start = time.time_ns()
    root = r.tracer.start_span("server", context=caller("00"), kind=SpanKind.SERVER, start_time=start,
                               attributes={"http.route": "/pay"})
    assert root.is_recording() and not root.get_span_context().trace_flags.sampled  # recorded, not head-sampled
    with trace_api.use_span(root, end_on_exit=False):
        with r.tracer.start_as_current_span("workflow pay") as workflow:
            workflow.set_status(Status(StatusCode.ERROR, "declined"))
    root.end()
    (spans,) = r.traces().values()
    assert spans[0].context.trace_id == root.get_span_context().trace_id != ok
    assert [s.name for s in spans] == ["workflow pay", "server"]
    assert all(s.context.trace_flags.sampled for s in spans)
    assert reason(spans) == "error"
    assert spans[1].attributes["http.route"] == "/pay"  # start attributes survive the head's DROP


def test_head_dropped_trace_keeps_errors_and_slow_only(rig):
    """With OTEL_TRACES_SAMPLER=always_off, errors and slow traces are still exported; OK ones never."""
    r = rig(TailSampling(ratio=1.0, slow_ms=100), sampler=TelemetryConfig.from_env(
        {"OTEL_TRACES_SAMPLER": "always_off"}).sampler)
    assert isinstance(r.telemetry.tracer_provider.sampler, RecordingSampler)
    failed = run_trace(r.tracer, error=True)
    slow = run_trace(r.tracer, root_ms=200)
    run_trace(r.tracer, root_ms=10)
    traces = r.traces()
    assert {t: reason(s) for t, s in traces.items()} == {failed: "error", slow: "slow"}
    assert all(s.context.trace_flags.sampled for s in r.spans)


# -- spans after the decision, memory, threads --------------------------------------------------------
def test_spans_ending_after_the_decision_follow_it(rig):
    """A child ending after its root, and a second local root of the trace, follow the trace's decision."""
    r = rig(TailSampling(ratio=0.0))
    for error in (False, True):
        root = r.tracer.start_span("root")
        late = r.tracer.start_span("late child", context=trace_api.set_span_in_context(root))
        if error:
            root.set_status(Status(StatusCode.ERROR, "boom"))
        root.end()
        late.end()
    (spans,) = r.traces().values()
    assert [s.name for s in spans] == ["root", "late child"] and reason(spans) == "error"
    assert r.counted("sampled_out") == 2 and r.counted("kept") == 2

    r.exporter.clear()
    context = caller("01")
    first = r.tracer.start_span("server 1", context=context)
    second = r.tracer.start_span("server 2", context=context)
    first.end()
    second.end()
    assert [(s.name, s.attributes[SAMPLING_REASON]) for s in r.spans] == [("server 1", "parent"),
                                                                          ("server 2", "parent")]


def test_memory_bound_drops_oldest_traces_and_counts_overflow(rig):
    """Past max_buffered_spans the oldest traces are dropped whole (later spans too), counted as overflow."""
    r = rig(TailSampling(ratio=1.0, max_buffered_spans=10))
    roots = [r.tracer.start_span(f"root {i}") for i in range(6)]
    for root in roots:  # 18 children end while their roots are still open
        for j in range(3):
            r.tracer.start_span(f"child {j}", context=trace_api.set_span_in_context(root)).end()
    for root in roots:
        root.end()
    kept = {root.get_span_context().trace_id for root in roots[3:]}
    traces = r.traces()
    assert set(traces) == kept and all(len(spans) == 4 for spans in traces.values())
    assert r.counted("overflow") == 12 and r.counted("kept") == 12 and r.counted("sampled_out") == 0


def test_many_threads_keep_whole_traces_and_count_every_span(rig):
    """Eight threads ending spans at once: kept traces arrive whole, every error is kept, every span counted."""
    r = rig(TailSampling(ratio=0.5))
    errors: set[int] = set()
    lock = threading.Lock()

    def work(seed: int) -> None:
        for i in range(150):
            failed = (i + seed) % 7 == 0
            tid = run_trace(r.tracer, children=3, error=failed)
            if failed:
                with lock:
                    errors.add(tid)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    traces = r.traces()
    assert errors <= set(traces)
    assert all(len(spans) == 4 for spans in traces.values())
    assert r.counted("kept") == 4 * len(traces)
    assert r.counted("kept") + r.counted("sampled_out") == 8 * 150 * 4 and r.counted("overflow") == 0


# -- exemplars ------------------------------------------------------------------------------------------
def test_keeps_exemplar_is_true_only_for_kept_traces(rig):
    """keeps_exemplar, asked right after the workflow span ends, is true only for traces that are exported."""
    r = rig(TailSampling(ratio=0.3, slow_ms=50))
    sampler = r.telemetry.tail_sampler
    answers: dict[int, bool] = {}
    shapes = ("root", "under open root", "caller 00", "caller 01")
    for i in range(400):
        shape, failed, slow = shapes[i % 4], i % 5 == 0, i % 11 == 0
        context = {"caller 00": caller("00"), "caller 01": caller("01")}.get(shape)
        outer = r.tracer.start_span("server", context=context) if shape != "root" else None
        parent = trace_api.set_span_in_context(outer) if outer is not None else None
        start = time.time_ns()
        workflow = r.tracer.start_span("workflow w", context=parent, start_time=start,
                                       attributes={"nexus.workflow.name": "w"})
        if failed:
            workflow.set_status(Status(StatusCode.ERROR, "boom"))
        duration_ns = (60 if slow else 1) * MS
        workflow.end(end_time=start + duration_ns)
        tid = workflow.get_span_context().trace_id
        answers[tid] = sampler.keeps_exemplar(tid, "w", failed, duration_ns / 1e9)
        if outer is not None:
            outer.end(end_time=start + duration_ns + MS)
    kept = set(r.traces())
    promised = {t for t, yes in answers.items() if yes}
    assert promised <= kept
    assert len(promised) > 100  # errors, slow ones and ratio winners are promised, not just a few
    decided_at_once = list(answers)[0::4]  # shape "root": the workflow span was the root, so the answer is exact
    assert {t for t in decided_at_once if t in kept} == {t for t in decided_at_once if answers[t]}


# -- configuration --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"NEXUS_OTEL_TAIL_SAMPLING_RATIO": " "}, None),
    ({"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0.1"}, TailSampling(ratio=0.1)),
    ({"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0"}, TailSampling(ratio=0.0)),
    ({"NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS": "250"}, TailSampling(ratio=1.0, slow_ms=250.0)),
    ({"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "1", "NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS": "0.5"},
     TailSampling(ratio=1.0, slow_ms=0.5)),
])
def test_env_vars_turn_tail_sampling_on(env, expected, tmp_path):
    """Either NEXUS_OTEL_TAIL_SAMPLING_* variable turns tail sampling on; the other takes its default."""
    config = TelemetryConfig.from_env({**env, "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    assert config.tail_sampling == expected
    telemetry = Telemetry("env", config=config)
    try:
        assert (telemetry.tail_sampler is None) == (expected is None)
        sampler = telemetry.tracer_provider.sampler
        assert isinstance(sampler, RecordingSampler) == (expected is not None)
        if expected is not None:
            assert telemetry.tail_sampler in telemetry.sinks.children
            assert not [p for p in telemetry.sinks.children if p is not telemetry.tail_sampler]
    finally:
        telemetry.shutdown()


@pytest.mark.parametrize(("var", "value", "needle"), [
    ("NEXUS_OTEL_TAIL_SAMPLING_RATIO", "1.5", "a number from 0 to 1"),
    ("NEXUS_OTEL_TAIL_SAMPLING_RATIO", "-0.1", "a number from 0 to 1"),
    ("NEXUS_OTEL_TAIL_SAMPLING_RATIO", "ten percent", "a number from 0 to 1"),
    ("NEXUS_OTEL_TAIL_SAMPLING_RATIO", "nan", "a number from 0 to 1"),
    ("NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS", "-1", "zero or more"),
    ("NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS", "500ms", "zero or more"),
    ("NEXUS_OTEL_TAIL_SAMPLING_SLOW_MS", "inf", "zero or more"),
])
def test_bad_env_values_name_the_variable(var, value, needle):
    """A bad NEXUS_OTEL_TAIL_SAMPLING_* value fails at start with ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError) as info:
        Nexus("svc", environ={var: value})
    assert info.value.setting == var
    assert var in str(info.value) and repr(value) in str(info.value) and needle in str(info.value)


def test_keyword_overrides_the_environment_and_off_is_todays_pipeline(tmp_path):
    """Telemetry(tail_sampling=...) wins over the env; with neither, exporters sit directly behind redaction."""
    local = {"NEXUS_OTEL_DATA_DIR": str(tmp_path)}
    on = Telemetry("kw", environ={**local, "NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0.5"},
                   tail_sampling=TailSampling(ratio=0.2))
    off = Telemetry("kw", environ=local)
    try:
        assert on.tail_sampler is not None and on.tail_sampler.policy == TailSampling(ratio=0.2)
        assert on.tail_sampler.children and on.sinks.children == (on.tail_sampler,)
        assert off.tail_sampler is None and off.tracer_provider.sampler is off.config.sampler
        assert off.sinks.children and not any(isinstance(p, TailSamplingProcessor) for p in off.sinks.children)
        with pytest.raises(ConfigurationError, match="tail_sampling"):
            Telemetry("kw", environ=local, tail_sampling={"ratio": 0.5})
    finally:
        on.shutdown()
        off.shutdown()


@pytest.mark.parametrize(("kwargs", "setting"), [
    ({"ratio": 1.5}, "TailSampling.ratio"),
    ({"ratio": "0.5"}, "TailSampling.ratio"),
    ({"ratio": True}, "TailSampling.ratio"),
    ({"ratio": float("nan")}, "TailSampling.ratio"),
    ({"slow_ms": -1}, "TailSampling.slow_ms"),
    ({"slow_ms": "500"}, "TailSampling.slow_ms"),
    ({"max_buffered_spans": 0}, "TailSampling.max_buffered_spans"),
    ({"per_workflow": [("checkout", None)]}, "TailSampling.per_workflow"),
    ({"per_workflow": {"checkout": 1.0}}, "TailSampling.per_workflow['checkout']"),
    ({"per_workflow": {"": TailSampling()}}, "TailSampling.per_workflow"),
    ({"per_workflow": {"a": TailSampling(per_workflow={"b": TailSampling()})}},
     "TailSampling.per_workflow['a'].per_workflow"),
])
def test_tail_sampling_validates_its_settings(kwargs, setting):
    """A bad TailSampling setting raises ConfigurationError naming the setting and the bad value."""
    with pytest.raises(ConfigurationError) as info:
        TailSampling(**kwargs)
    assert info.value.setting == setting and setting in str(info.value)
    assert "expected" in str(info.value)


# -- end to end -------------------------------------------------------------------------------------------
def test_cli_shows_the_sampling_reason_on_the_root(tmp_path):
    """`nexus-otel traces TRACE_ID -a` shows nexus.sampling.reason on the kept trace's root."""
    app = Nexus("cli", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "NEXUS_OTEL_TAIL_SAMPLING_RATIO": "1"})

    def pay(inputs):
        raise ValueError("card declined")

    app.register("pay", pay)
    app.register("look", lambda inputs: "ok")
    app.on_workflow_started(lambda event: None)
    app.execute_workflow("look", {})
    with pytest.raises(ValueError):
        app.execute_workflow("pay", {})
    app.stop()
    summaries = {s.workflow: s for s in recent_traces(tmp_path)}
    assert set(summaries) == {"pay", "look"}
    for workflow, expected in (("pay", "error"), ("look", "ratio")):
        result = CliRunner().invoke(cli, ["traces", summaries[workflow].trace_id, "-a", "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[1].split()[0] == "SPAN"  # the column labels, then the tree
        lines = lines[:1] + lines[2:]
        assert lines[1].startswith(f"workflow {workflow}")
        root_attributes = lines[2:lines.index(next(x for x in lines[2:] if x.startswith("└─ ")))]
        assert f"│  {SAMPLING_REASON} = {expected}" in root_attributes  # the root has children below
        assert not any(SAMPLING_REASON in line for line in lines[lines.index(root_attributes[-1]) + 1:])


def test_otlp_receiver_gets_every_failed_trace_and_a_tenth_of_the_rest():
    """200 executions at NEXUS_OTEL_TAIL_SAMPLING_RATIO=0.1: all 20 failures arrive, OK ones near 10%, all whole."""
    with HTTPReceiver() as receiver:
        app = Nexus("tail-e2e", environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0.1",
        })
        assert app.telemetry.config.traces_exporters == ("otlp",) and app.telemetry.tail_sampler is not None

        def work(inputs):
            if inputs["i"] % 10 == 0:
                raise RuntimeError("boom")
            return inputs["i"]

        app.register("work", work)
        app.on_workflow_started(lambda event: None)
        app.start()
        for i in range(200):
            try:
                app.execute_workflow("work", {"i": i})
            except RuntimeError:
                pass
        exposition = app.telemetry.prometheus_exposition(openmetrics=True)[0].decode()
        app.stop()
        assert receiver.wait_for(lambda: receiver.metric_requests and receiver.trace_requests, timeout=10)
        spans = receiver.spans()
        assert not receiver.errors

    # Every exemplar on /metrics names a trace the receiver got (and there are some: failures have them).
    exemplars = set(re.findall(r'# \{[^}]*trace_id="([0-9a-f]{32})"', exposition))
    assert exemplars and exemplars <= {s.trace_id for s in spans}

    workflows = [s for s in spans if s.name == "workflow work"]
    failed = [s for s in workflows if s.status_code == PbStatus.STATUS_CODE_ERROR]
    ok = [s for s in workflows if s.status_code != PbStatus.STATUS_CODE_ERROR]
    assert len(failed) == 20 and {s.attributes[SAMPLING_REASON] for s in failed} == {"error"}
    sigma = math.sqrt(180 * 0.1 * 0.9)
    assert abs(len(ok) - 18) <= 4 * sigma, len(ok)
    assert {s.attributes[SAMPLING_REASON] for s in ok} <= {"ratio"}
    # Whole traces: every received workflow span came with its hook span, and no hook span came alone.
    hooks = {s.trace_id for s in spans if s.name == "hook workflow_started app"}
    assert hooks == {s.trace_id for s in workflows}
    # What the tail sampler counted as kept is exactly what arrived.
    (kept,) = [point for key, (_, point) in receiver.latest_points("nexus.telemetry.spans").items()
               if dict(key) == {"exporter": "tail_sampling", "outcome": "kept"}]
    assert kept.value == len(spans)
