"""The GenAI opt-in: invoke_workflow workflow spans with it, the telemetry unchanged without it."""

import pytest

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.testing import CapturedTelemetry


class _Audited(NexusPlugin):
    """A plugin with a hook on every workflow event, so hook spans and their metrics are in the comparison."""

    name = "audited"
    version = "1.0"

    def setup(self, app):
        app.on_workflow_started(lambda event: None)
        app.on_workflow_completed(lambda event: None)
        app.on_workflow_failed(lambda event: None)


def _run(environ):
    """Spans and metric names of one app's life (start, a completed and a failed execution, stop) under ``environ``."""
    capture = CapturedTelemetry("shop")
    app = Nexus("shop", telemetry=capture.telemetry("shop", config=TelemetryConfig.from_env(environ)))
    app.add_plugin(_Audited())

    @app.workflow("checkout")
    def checkout(inputs):
        if inputs.get("fail"):
            raise ValueError("declined")
        return {"ok": True}

    app.start()
    app.execute_workflow("checkout", {}, session_id="s1")
    with pytest.raises(ValueError):
        app.execute_workflow("checkout", {"fail": True})
    # Each metric's name and the attribute keys of its series.
    metrics = sorted((name, sorted({tuple(sorted(p.attributes)) for p in metric.data.data_points}))
                     for name, metric in capture.metrics().items())
    app.stop()
    spans = capture.spans
    capture.shutdown()
    return spans, metrics


def _shape(spans, metrics):
    """What dashboards and queries depend on: each span's name and attribute keys, the metrics and their keys."""
    return sorted((s.name, tuple(sorted(s.attributes))) for s in spans), metrics


@pytest.mark.parametrize("opt_in", ["gen_ai_latest_experimental", "http, gen_ai_latest_experimental"])
def test_opt_in_makes_workflow_spans_invoke_workflow(opt_in):
    """With the opt-in (alone or in a list) the workflow span is "invoke_workflow checkout" with the GenAI attributes;
    every other span and every metric is as without it."""
    spans, metrics = _run({"OTEL_SEMCONV_STABILITY_OPT_IN": opt_in})
    workflows = [s for s in spans if s.name == "invoke_workflow checkout"]
    assert len(workflows) == 2 and not [s for s in spans if s.name.startswith("workflow ")]
    for span in workflows:
        assert span.attributes["gen_ai.operation.name"] == "invoke_workflow"
        assert span.attributes["gen_ai.workflow.name"] == "checkout"
        assert span.attributes["nexus.workflow.name"] == "checkout"  # ours stay: dashboards and the tail sampler
    plain_spans, plain_metrics = _run({})
    renamed = [s for s in plain_spans if s.name == "workflow checkout"]
    assert metrics == plain_metrics
    others = [s for s in spans if s not in workflows]
    plain_others = [s for s in plain_spans if s not in renamed]
    assert _shape(others, metrics) == _shape(plain_others, plain_metrics)
    assert sorted(tuple(sorted(set(s.attributes) - {"gen_ai.operation.name", "gen_ai.workflow.name"}))
                  for s in workflows) == sorted(tuple(sorted(s.attributes)) for s in renamed)


@pytest.mark.parametrize("value", ["http", "database/dup", "gen_ai", ""])
def test_without_the_opt_in_nothing_changes(value):
    """OTEL_SEMCONV_STABILITY_OPT_IN without gen_ai_latest_experimental: span names, attribute keys of every span and
    metric names are those of a run without the variable, and no span has a gen_ai.* attribute."""
    spans, metrics = _run({"OTEL_SEMCONV_STABILITY_OPT_IN": value})
    plain_spans, plain_metrics = _run({})
    assert _shape(spans, metrics) == _shape(plain_spans, plain_metrics)
    assert "nexus.workflow.duration" in dict(metrics) and "hook workflow_started audited" in {s.name for s in spans}
    assert "workflow checkout" in {s.name for s in spans}
    assert not [key for s in spans for key in s.attributes if key.startswith("gen_ai.")]
