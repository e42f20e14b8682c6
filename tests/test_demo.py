"""`nexus-otel demo`, the README's first command, runs to the end and reports what it sent."""

import re
import time

from nexus_otel.exporters.local import read_spans

from .served import REPO, cli_env, nexus_otel


def test_demo_runs_and_its_summary_matches_what_it_sent(tmp_path):
    """The demo finishes in under a minute; its table and the stored spans agree with the traffic sent."""
    data = tmp_path / "data"
    start = time.monotonic()
    out = nexus_otel("demo", "--requests", "200", "--plugins-dir", str(REPO / "plugins"),
                     env=cli_env(data, COLUMNS="120"), cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - start
    assert out.returncode == 0, out.stdout + out.stderr
    assert elapsed < 60
    text = out.stdout
    assert "✓ telemetry matches what was sent: 200 executions" in text
    rows = re.findall(r"│ (\w+)\s+│\s+(\d+) │\s+(\d+) │\s+([\d.]+) │\s+([\d.]+) │\s+(\d+) │\s+(\d+) │", text)
    assert {r[0] for r in rows} == {"greet", "checkout", "report", "enrich"}
    assert sum(int(r[1]) for r in rows) == 200
    for _, executions, errors, p50, p95, sent, failed in rows:
        assert executions == sent and errors == failed
        assert float(p95) >= float(p50) > 0
    workflow_spans = [s for s in read_spans(data) if s.name.startswith("workflow ")]
    assert len(workflow_spans) == 200
    failed = sum(int(r[2]) for r in rows)
    assert failed > 0 and sum(1 for s in workflow_spans if s.status == "ERROR") == failed
    assert "One trace" in text and "└─ workflow checkout" in text and "hook workflow_completed" in text
    assert "nexus-otel traces" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text


def test_demo_checks_its_telemetry_when_it_goes_by_otlp_under_another_service_name(tmp_path):
    """README tour step 4: OTLP only, OTEL_SERVICE_NAME=orders: latencies from its own metrics, a match, exit 0."""
    from .otlp_receivers import HTTPReceiver

    with HTTPReceiver() as receiver:
        env = cli_env(tmp_path / "data", COLUMNS="140", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                      OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_SERVICE_NAME="orders")
        out = nexus_otel("demo", "--requests", "60", "--plugins-dir", str(REPO / "plugins"), env=env, cwd=tmp_path,
                         timeout=120)
        assert receiver.wait_for(lambda: receiver.trace_requests, timeout=10)
        services = {s.resource.get("service.name") for s in receiver.spans()}
    text = out.stdout
    assert out.returncode == 0, text + out.stderr
    assert "✓ telemetry matches what was sent: 60 executions" in text
    assert not re.search(r"\bnan\b", text) and "histogram" in text
    assert "sent by OTLP to" in text and "service orders" in text and "nexus-otel traces " not in text
    assert services == {"orders"}


def test_demo_with_telemetry_off_says_so(tmp_path):
    """OTEL_SDK_DISABLED=true: the demo serves its requests and says telemetry is off; exit 0, no mismatch."""
    out = nexus_otel("demo", "--requests", "20", "--plugins-dir", str(REPO / "plugins"),
                     env=cli_env(tmp_path / "data", OTEL_SDK_DISABLED="true"), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "telemetry is off" in out.stdout and "does not match" not in out.stdout


def test_demo_output_is_what_a_newcomer_needs(tmp_path):
    """No example plugin chatter or slow-workflow warnings by default; the trace tree's columns are labelled."""
    out = nexus_otel("demo", "--requests", "100", "--plugins-dir", str(REPO / "plugins"),
                     env=cli_env(tmp_path / "data", COLUMNS="120"), cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout + out.stderr
    for chatter in ("Plugin instantiated", "Plugin enabled", "Nexus started, plugin running", "slow workflow"):
        assert chatter not in text, chatter
    assert re.search(r"SPAN\s+DURATION\s+STARTED AFTER", out.stdout)
