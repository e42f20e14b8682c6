"""Logs on the real stack: the served app -> our Collector (``deploy/otel-collector.yaml`` as shipped) -> VictoriaLogs.

The app (``tests/apps/logging_shop.py``) runs under ``nexus-otel serve`` with request logging on and
writes its own ``logging.info`` line inside its workflow; it sends logs over OTLP/HTTP to the
Collector and keeps its spans in the local store, where the test reads each workflow span's id.
100 executions over HTTP: 10 fail, 5 arrive with a caller's ``traceparent`` whose sampled flag
is 00. Everything is read back through VictoriaLogs' query API, as an operator would.
"""

from __future__ import annotations

import secrets
import signal
import time

import httpx
import pytest

from nexus_otel.exporters.local import read_spans
from nexus_otel.redaction import MASK

from .deploy_servers import REPO, Collector, VictoriaLogs, require_binary
from .served import Served, cli_env

SERVICE = "logging-shop"
N, FAILING, UNSAMPLED = 100, 10, 5
SECRET = "hunter2-do-not-log"
REQUESTS = 'scope.name:="nexus_otel.requests"'
USER_LINES = 'scope.name:="shop.orders"'


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    require_binary("otelcol")
    require_binary("victorialogs")
    work = tmp_path_factory.mktemp("logs-stack")
    with VictoriaLogs(work) as logs, \
            Collector(work, "otel-collector.yaml", jaeger_endpoint="127.0.0.1:9",
                      victorialogs_endpoint=logs.otlp_endpoint) as collector:
        data = work / "app-data"
        env = cli_env(data, OTEL_SERVICE_NAME=SERVICE, OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_url,
                      OTEL_TRACES_EXPORTER="local", OTEL_METRICS_EXPORTER="none",
                      OTEL_BLRP_SCHEDULE_DELAY="200", OTEL_BSP_SCHEDULE_DELAY="200")
        app = Served("tests.apps.logging_shop:create_app", env, REPO)
        sent = []
        try:
            with httpx.Client(base_url=app.url, timeout=10) as client:
                for i in range(N):
                    fail = i % (N // FAILING) == 0
                    headers = {}
                    caller = None
                    if not fail and len([s for s in sent if s["caller"]]) < UNSAMPLED:
                        caller = secrets.token_hex(16)
                        headers["traceparent"] = f"00-{caller}-{secrets.token_hex(8)}-00"
                    answer = client.post("/workflows/order", headers=headers,
                                         json={"n": i, "fail": fail, "password": SECRET})
                    assert answer.status_code == (500 if fail else 200), answer.text
                    sent.append({"n": i, "fail": fail, "caller": caller, "trace_id": answer.json()["trace_id"]})
        finally:
            code, stderr = app.stop()  # flushes the app's logs to the Collector
        # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully
        assert code in (0, -signal.SIGTERM) and "Traceback" not in stderr, stderr
        deadline = time.monotonic() + 30  # the Collector batches for up to 2 s; VictoriaLogs shows a part in ~1 s
        while time.monotonic() < deadline:
            if len(logs.query(REQUESTS, limit="1000")) >= 2 * N and len(logs.query(USER_LINES, limit="1000")) >= N:
                break
            time.sleep(0.3)
        yield {"logs": logs, "sent": sent, "spans": list(read_spans(data))}


def test_every_execution_gives_two_request_log_records_joined_to_its_trace(stack):
    """200 request-log records arrive in VictoriaLogs, each with its execution's trace id, the unsampled ones too."""
    records = stack["logs"].query(REQUESTS, limit="1000")
    assert len(records) == 2 * N, f"{len(records)} request-log records for {N} executions"
    by_trace: dict[str, list[dict]] = {}
    for record in records:
        by_trace.setdefault(record["trace_id"], []).append(record)
    for sent in stack["sent"]:
        got = by_trace.get(sent["trace_id"], [])
        assert sorted(r["severity_text"] for r in got) == (["INFO", "WARN"] if sent["fail"] else ["INFO", "INFO"])
        assert {r["nexus.workflow.name"] for r in got} == {"order"} and all(r["_msg"] for r in got)
        assert {r["service.name"] for r in got} == {SERVICE}
    unsampled = [s for s in stack["sent"] if s["caller"]]
    assert len(unsampled) == UNSAMPLED
    for sent in unsampled:  # the caller's trace continues, unsampled: no span kept, the records joined all the same
        assert sent["trace_id"] == sent["caller"] and len(by_trace[sent["caller"]]) == 2
        assert not [s for s in stack["spans"] if s.trace_id == sent["caller"]]


def test_failed_executions_carry_the_exception_and_secrets_arrive_masked(stack):
    """The failing executions' records carry exception.type; the password in the inputs arrives masked."""
    logs = stack["logs"]
    failed = logs.query(f'{REQUESTS} "nexus.workflow.status":="failed"', limit="1000")
    assert len(failed) == FAILING
    assert {r["exception.type"] for r in failed} == {"ValueError"}
    assert all("refused" in r["exception.message"] for r in failed)
    started = logs.query(f'{REQUESTS} "nexus.workflow.status":""', limit="1000")
    assert len(started) == N and all(MASK in r["nexus.workflow.inputs"] for r in started)
    assert logs.query(f'"{SECRET}"', limit="10") == []


def test_a_users_logging_call_arrives_with_the_workflow_spans_ids(stack):
    """``logging.info`` inside the workflow arrives with the workflow span's trace id and span id."""
    lines = stack["logs"].query(USER_LINES, limit="1000")
    assert len(lines) == N, f"{len(lines)} user lines for {N} executions (the DEBUG ones stay below the level)"
    workflow_spans = {s.trace_id: s for s in stack["spans"] if s.name == "workflow order"}
    sampled = [s for s in stack["sent"] if not s["caller"]]
    assert len(workflow_spans) == len(sampled)
    by_trace = {line["trace_id"]: line for line in lines}
    for sent in sampled:
        line = by_trace[sent["trace_id"]]
        assert line["span_id"] == workflow_spans[sent["trace_id"]].span_id
        assert line["_msg"] == f"placing order {sent['n']}" and line["severity_text"] == "INFO"
    for sent in (s for s in stack["sent"] if s["caller"]):
        assert by_trace[sent["caller"]]["span_id"]  # unsampled: the (non-recording) workflow span's id all the same
