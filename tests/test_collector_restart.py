"""The Collector stopped for 5 s mid-run and started again, on the real binaries.

The app (tests/apps/kit.py: WebhookPlugin to a real receiver, DatabasePlugin on
SQLite) is served with OTLP to our Collector running deploy/otel-collector.yaml,
which sends to Jaeger v2. While the Collector is down the app keeps answering;
its records (webhooks, audit rows) lose nothing, the spans it could not export
are counted in ``nexus_telemetry_spans_total``, and after the restart its traces
reach Jaeger again. The outage is five times the exporter's timeout the test sets
(``OTEL_EXPORTER_OTLP_TIMEOUT``, 1 s, retries included) and 25 times its batch
delay (200 ms): batch after batch gives up while it lasts, so spans are really lost. The Collector runs with
``short_waits`` (tests/deploy_servers.py): the traces after the restart are decided in seconds, not 10 s.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time

import httpx

from .deploy_servers import Collector, Jaeger, require_binary
from .prometheus_server import wait_until
from .served import Served, cli_env
from .webhook_receiver import WebhookReceiver

SERVICE = "kit-restart"
DOWN_SECONDS = 5.0  # five times OTEL_EXPORTER_OTLP_TIMEOUT below


def _span_outcomes(metrics_text: str) -> dict[str, float]:
    """``nexus_telemetry_spans_total`` for the OTLP exporter, by outcome."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("nexus_telemetry_spans_total{") and 'exporter="otlp' in line:
            outcome = re.search(r'outcome="([^"]+)"', line).group(1)
            out[outcome] = out.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_a_collector_down_for_five_seconds_loses_no_record_and_counts_the_lost_spans(tmp_path):
    require_binary("otelcol")
    require_binary("jaeger")
    with WebhookReceiver() as webhook, Jaeger(tmp_path) as jaeger, \
            Collector(tmp_path, "otel-collector.yaml", jaeger_endpoint=jaeger.otlp_grpc_endpoint,
                      short_waits=True) as collector:
        audit = tmp_path / "audit.sqlite"
        env = cli_env(tmp_path / "data", OTEL_SERVICE_NAME=SERVICE, KIT_WEBHOOK_URL=webhook.url,
                      KIT_AUDIT_DSN=f"sqlite:///{audit}", OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_http_url,
                      OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", OTEL_METRICS_EXPORTER="none",
                      OTEL_BSP_SCHEDULE_DELAY="200", OTEL_EXPORTER_OTLP_TIMEOUT="1000")
        app = Served("tests.apps.kit:create_app", env, tmp_path)
        sent = 0
        latencies: dict[str, list[float]] = {"up": [], "down": []}
        try:
            with httpx.Client(base_url=app.url, timeout=10) as client:
                def send(phase: str, workflow: str = "greet", traceparent: str | None = None) -> None:
                    nonlocal sent
                    started = time.perf_counter()
                    response = client.post(f"/workflows/{workflow}", json={"name": "x"},
                                           headers={"traceparent": traceparent} if traceparent else {})
                    latencies[phase].append(time.perf_counter() - started)
                    assert response.status_code == (500 if workflow == "explode" else 200), response.text
                    sent += 1

                for _ in range(30):
                    send("up")
                collector.stop()  # SIGTERM: it drains and exits
                down_until = time.monotonic() + DOWN_SECONDS
                while time.monotonic() < down_until:
                    send("down")
                    time.sleep(0.05)
                collector.start()
                after = []
                for _ in range(5):
                    trace_id = secrets.token_hex(16)
                    send("up", "explode", f"00-{trace_id}-{secrets.token_hex(8)}-01")  # errors: always kept
                    after.append(trace_id)
                for trace_id in after:
                    wait_until(lambda t=trace_id: jaeger.trace(t), 60,
                               what=f"trace {trace_id} in Jaeger after the restart")
                webhook.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) >= sent, timeout=30)
                outcomes = _span_outcomes(client.get("/metrics").text)
        finally:
            app.stop()

    ids = [r.headers["webhook-id"] for r in webhook.requests() if r.status == 200]
    assert len(set(ids)) == sent
    with sqlite3.connect(audit) as db:
        assert db.execute("SELECT count(*), count(DISTINCT workflow_id) FROM workflow_executions").fetchone() == (
            sent, sent)
    # The spans sent while the Collector was down are counted, not silently gone.
    lost = outcomes.get("failed", 0) + outcomes.get("dropped", 0)
    assert lost > 0, outcomes
    assert outcomes.get("exported", 0) > 0, outcomes
    # Workflows did not wait for the Collector: the median request while it was down took at most
    # five times the median while it was up (an export in the request's path would take its timeout).
    up = sorted(latencies["up"])[len(latencies["up"]) // 2]
    down = sorted(latencies["down"])[len(latencies["down"]) // 2]
    assert len(latencies["down"]) > 20 and down <= 5 * up, (up, down)
