"""`nexus-otel demo`, the README's first command, runs to the end and reports what it sent, truthfully."""

import logging
import re
import time
from collections import Counter

import pytest

from nexus_otel.demo.checks import Request, Sent, traces_check
from nexus_otel.demo.driver import invoked_as
from nexus_otel.exporters.local import read_spans
from nexus_otel.telemetry.config import TelemetryConfig

from .ports import free_port
from .served import REPO, cli_env, nexus_otel


def test_demo_runs_and_its_summary_matches_what_it_sent(tmp_path):
    """The demo finishes in under a minute; its table and the stored spans agree with the traffic sent; its output
    explains the counts and names the commands to run next as they can be run."""
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
    assert re.search(r"SPAN\s+DURATION\s+STARTED AFTER", text)
    # The hints name the command as it was run (here `python -m`), and the stack script that runs Jaeger.
    assert "-m nexus_otel.cli traces" in text and "OTEL_EXPORTER_OTLP_ENDPOINT" in text
    assert "bash scripts/stack.sh up" in text and "run Jaeger" not in text
    # The statuses add up to one more than the executions, and the output says why.
    statuses = re.search(r"HTTP\s+statuses\s+\{([^}]*)\}", text)
    assert statuses and sum(int(n) for n in re.findall(r": (\d+)", statuses.group(1))) == 201
    assert "the 404, sent on purpose to a workflow that does not exist" in " ".join(text.split())
    # No example plugin chatter or slow-workflow warnings by default.
    for chatter in ("Plugin instantiated", "Plugin enabled", "Nexus started, plugin running", "slow workflow"):
        assert chatter not in text + out.stderr, chatter


def test_demo_checks_its_telemetry_when_it_goes_by_otlp_under_another_service_name(tmp_path):
    """README tour step 5: OTLP only, OTEL_SERVICE_NAME=orders: latencies from its own metrics, a match, exit 0."""
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


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"], ids=["closed-port", "grpc-at-an-http-port"])
def test_demo_fails_within_15_s_naming_the_endpoint_when_nothing_takes_its_telemetry(tmp_path, protocol):
    """OTLP to a closed port, or gRPC to an OTLP/HTTP receiver: the demo stops early, names the endpoint it could
    not deliver to and exits 1."""
    from .otlp_receivers import HTTPReceiver

    with HTTPReceiver() as receiver:
        # Over http/protobuf nothing listens at the endpoint; over grpc an OTLP/HTTP receiver does.
        endpoint = receiver.endpoint if protocol == "grpc" else f"http://127.0.0.1:{free_port()}"
        env = cli_env(tmp_path / "data", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_PROTOCOL=protocol)
        start = time.monotonic()
        out = nexus_otel("demo", "--plugins-dir", str(REPO / "plugins"), env=env, cwd=tmp_path, timeout=60)
        elapsed = time.monotonic() - start
    text = " ".join(out.stdout.split())  # as read, whatever the line wrapping
    assert out.returncode == 1, out.stdout + out.stderr
    assert elapsed < 15, elapsed
    assert "✗ telemetry was not delivered" in text and "matches what was sent" not in text
    # Over http/protobuf the exporters append the signal's path to the general endpoint; over grpc they do not.
    traces, metrics = ((endpoint, endpoint) if protocol == "grpc"
                       else (f"{endpoint}/v1/traces", f"{endpoint}/v1/metrics"))
    assert f"spans could not be exported to the OTLP endpoint {traces} ({protocol})" in text
    assert f"metrics pushes to the OTLP endpoint {metrics} ({protocol})" in text
    assert "bash scripts/stack.sh up" in text


@pytest.mark.parametrize("sampling, check", [
    ({"NEXUS_OTEL_TAIL_SAMPLING_RATIO": "0.1"}, "tail sampling kept every error and every caller-sampled trace"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"},
     "every sampled trace stored, no other"),
], ids=["tail-0.1", "parentbased-traceidratio-0.5"])
def test_demo_under_sampling_checks_what_sampling_promises(tmp_path, sampling, check):
    """Under a sampler, fewer traces are stored than executions ran, and the demo still exits 0: it checks that
    every execution is counted in metrics and records, and that the traces sampling promises to keep are kept."""
    data = tmp_path / "data"
    out = nexus_otel("demo", "--requests", "60", "--plugins-dir", str(REPO / "plugins"),
                     env=cli_env(data, COLUMNS="200", **sampling), cwd=tmp_path, timeout=120)
    text = " ".join(out.stdout.split())  # as read, whatever the line wrapping
    assert out.returncode == 0, out.stdout + out.stderr
    assert "✓ telemetry matches what was sent: 60 executions" in text
    for line in ("✓ metrics count every execution: 60 of 60", "✓ one record per execution: 60 of 60",
                 f"✓ {check}", "✓ telemetry delivered"):
        assert line in text, line
    workflow_spans = [s for s in read_spans(data) if s.name.startswith("workflow ")]
    assert 0 < len(workflow_spans) < 60  # sampled: the old comparison of spans with executions would fail
    failed = int(re.search(r"(\d+) failed on purpose", text).group(1))
    errors = sum(1 for s in workflow_spans if s.status == "ERROR")
    if "NEXUS_OTEL_TAIL_SAMPLING_RATIO" in sampling:
        assert failed > 0 and errors == failed  # the tail sampler keeps every error trace


def test_a_missing_error_trace_under_tail_sampling_is_named():
    """The trace check says which promise failed and which trace is missing, not only that something differs."""
    sent = Sent(requests=[
        Request("checkout", failed=True, trace_id="a" * 32, head_sampled=True, caller_sampled=False,
                continued=False),
        Request("greet", failed=False, trace_id="b" * 32, head_sampled=True, caller_sampled=False,
                continued=False),
    ])
    check = traces_check(sent, Counter({"b" * 32: 1}), tail_sampling=True)
    assert not check.ok and check.name == "tail sampling kept every error and every caller-sampled trace"
    assert check.detail == f"1 traces not stored (e.g. {'a' * 32})"
    assert traces_check(sent, Counter({"a" * 32: 1}), tail_sampling=True).ok


def test_a_signal_path_in_the_general_endpoint_is_warned_about(caplog):
    """OTEL_EXPORTER_OTLP_ENDPOINT ending in /v1/traces: a warning at start says what the exporters will do with it
    and which variable to set instead."""
    with caplog.at_level(logging.WARNING, logger="nexus_otel.telemetry"):
        config = TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert config.otlp_traces.endpoint == "http://127.0.0.1:4318/v1/traces/v1/traces"  # as the specification says
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "ends in a signal's path (/v1/traces)" in warning
    assert "set OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318," in warning
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nexus_otel.telemetry"):
        TelemetryConfig.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not caplog.records


def test_the_hints_name_the_command_as_it_can_be_run(tmp_path, monkeypatch):
    """A nexus-otel off the PATH is named by its path from the working directory (.venv/bin/nexus-otel)."""
    script = tmp_path / ".venv" / "bin" / "nexus-otel"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invoked_as(str(script)) == ".venv/bin/nexus-otel"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert invoked_as(str(script)) == "nexus-otel"
