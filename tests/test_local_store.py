"""The local span store: OTLP/JSON lines, bounded by rotation, read back into trees."""

import json

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

from nexus_otel.exporters.local import LocalSpanExporter, read_spans, store_files
from nexus_otel.traceview import find_trace, recent_traces, render_tree


def _provider(directory, **kwargs):
    exporter = LocalSpanExporter(directory, **kwargs)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_lines_carry_hex_ids_times_and_typed_attributes(tmp_path):
    """Each line holds the resource once and each span with hex ids, nanosecond times and typed values."""
    provider, _ = _provider(tmp_path)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("parent", attributes={"n": 3, "ok": True, "ratio": 0.5, "s": "x"}) as parent:
        with tracer.start_as_current_span("child"):
            pass
    first, second = (json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines())
    child = first["spans"][0]
    assert first["v"] == 1 and "service.name" in first["resource"]
    assert child["n"] == "child"
    assert child["t"] == f"{parent.get_span_context().trace_id:032x}"
    assert child["p"] == f"{parent.get_span_context().span_id:016x}"
    assert isinstance(child["b"], int) and child["e"] >= child["b"]
    assert second["spans"][0]["a"] == {"n": 3, "ok": True, "ratio": 0.5, "s": "x"}
    (record,) = [r for r in read_spans(tmp_path) if r.name == "parent"]
    assert record.attributes == {"n": 3, "ok": True, "ratio": 0.5, "s": "x"} and record.parent_id is None


def test_store_is_bounded_by_rotation(tmp_path):
    """Past max_bytes the file rotates; at most max_files files remain, the newest spans kept."""
    provider, exporter = _provider(tmp_path, max_bytes=4000, max_files=3)
    tracer = provider.get_tracer("t")
    for i in range(200):
        with tracer.start_as_current_span(f"span-{i}", attributes={"pad": "x" * 200}):
            pass
    files = store_files(tmp_path)
    assert len(files) == 3
    assert sum(f.stat().st_size for f in files) <= 3 * 4000
    names = [s.name for s in read_spans(tmp_path)]
    assert names[-1] == "span-199"
    assert "span-0" not in names
    assert exporter.exported == 200 and exporter.failed == 0


def test_unwritable_directory_is_counted_not_raised(tmp_path):
    """A store that cannot be written fails the export and counts the spans; nothing raises into the app."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    provider, exporter = _provider(blocker / "sub")
    with provider.get_tracer("t").start_as_current_span("lost"):
        pass
    assert exporter.failed == 1 and exporter.exported == 0


def test_damaged_line_is_skipped(tmp_path):
    """A truncated line (a crash mid-write) is skipped; the rest still reads."""
    provider, _ = _provider(tmp_path)
    with provider.get_tracer("t").start_as_current_span("kept"):
        pass
    with open(tmp_path / "spans.jsonl", "a") as f:
        f.write('{"resourceSpans": [{"scopeSp\n')
    assert [s.name for s in read_spans(tmp_path)] == ["kept"]


def test_tree_and_summary_from_an_app(capture, tmp_path):
    """An app's trace read back: summary with workflow and status; tree with branches and error marks."""
    app = capture.app("shop")
    capture.tracer_provider.add_span_processor(SimpleSpanProcessor(LocalSpanExporter(tmp_path)))
    app.on_workflow_started(lambda e: None)
    app.on_workflow_failed(lambda e: None)

    @app.workflow("pay")
    def pay(inputs):
        raise ValueError("card declined")

    try:
        app.execute_workflow("pay", {})
    except ValueError:
        pass
    (summary,) = recent_traces(tmp_path)
    assert summary.workflow == "pay" and summary.status == "failed" and summary.span_count == 3
    trace_id, spans = find_trace(tmp_path, summary.trace_id[:8])
    lines = render_tree(spans)
    assert lines[0].startswith("workflow pay") and "ERROR ValueError" in lines[0]
    assert lines[1].startswith("├─ hook workflow_started app")
    assert lines[2].startswith("└─ hook workflow_failed app")


def test_provider_span_status_is_kept(tmp_path):
    """Status code and message survive the round trip."""
    provider, _ = _provider(tmp_path)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_status(Status(StatusCode.ERROR, "broken"))
    (record,) = list(read_spans(tmp_path))
    assert record.status == "ERROR" and record.status_message == "broken"


def test_tree_can_show_attributes_and_events(capture, tmp_path):
    """With attributes on, each span is followed by its redacted attributes and its events."""
    app = capture.app("shop")
    capture.tracer_provider.add_span_processor(SimpleSpanProcessor(LocalSpanExporter(tmp_path)))

    @app.workflow("pay")
    def pay(inputs):
        raise ValueError("card declined")

    try:
        app.execute_workflow("pay", {"card_token": "tok_secret", "amount": 5})
    except ValueError:
        pass
    (summary,) = recent_traces(tmp_path)
    _, spans = find_trace(tmp_path, summary.trace_id)
    lines = render_tree(spans, show_attributes=True)
    assert lines[0].startswith("workflow pay")
    assert "   nexus.workflow.name = pay" in lines
    assert any("card_token" in line and "[REDACTED]" in line and "tok_secret" not in line for line in lines)
    assert any(line.startswith("   event exception:") and "card declined" in line for line in lines)
    assert render_tree(spans) == [lines[0]]
