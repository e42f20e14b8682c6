"""Defects found by trying nexus-otel as a newcomer and as a hostile caller, each pinned by a test."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.sdk.trace import SpanProcessor

from nexus_otel import Nexus, NexusPlugin
from nexus_otel.errors import ConfigurationError, PluginSetupError, PluginValidationError
from nexus_otel.plugins import AuthPlugin
from nexus_otel.processors.span_redaction import RedactingSpanProcessor
from nexus_otel.redaction import Redactor
from nexus_otel.serving import BackgroundServer
from nexus_otel.telemetry.config import TelemetryConfig
from nexus_otel.testing import CapturedTelemetry
from nexus_otel.traceview import find_trace

from .faults import SilentServer
from .served import cli_env, nexus_otel


def test_a_trace_is_readable_from_the_local_store_within_a_second(tmp_path):
    """`nexus-otel traces <id>` right after a request finds it: the local store writes within ~0.5 s."""
    app = Nexus("fresh", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    app.register("greet", lambda inputs: "hi")
    seen = {}
    app.on_workflow_started(lambda event: seen.setdefault("trace", event.trace_id))
    with app:
        app.execute_workflow("greet", {})
        ended = time.monotonic()
        found = None
        while found is None and time.monotonic() - ended < 1.0:
            found = find_trace(tmp_path, seen["trace"])
            time.sleep(0.05)
        assert found is not None, "the trace was not in the local store within 1 s"


def test_webhooks_status_without_an_outbox_reports_it_empty(tmp_path):
    """`nexus-otel webhooks status` before any webhook was queued: 0 pending, 0 dead, exit 0."""
    result = nexus_otel("webhooks", "status", env=cli_env(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("pending 0  dead 0")
    assert not (tmp_path / "data" / "outbox.sqlite").exists()  # looking created nothing


def test_otlp_timeout_is_read_in_milliseconds(tmp_path):
    """OTEL_EXPORTER_OTLP_TIMEOUT=300 is 0.3 s per export (the SDK alone reads it as 300 s)."""
    with SilentServer() as silent:
        app = Nexus("timeouts", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": silent.url, "OTEL_EXPORTER_OTLP_TIMEOUT": "300",
                                         "OTEL_METRICS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
        app.register("greet", lambda inputs: "hi")
        app.execute_workflow("greet", {})
        started = time.monotonic()
        app.telemetry.force_flush()
        elapsed = time.monotonic() - started
        app.stop(timeout=1)
    assert elapsed < 5, f"one export against a silent endpoint took {elapsed:.1f} s"


@pytest.mark.parametrize("env, variable", [
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "50"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
    ({"OTEL_BSP_MAX_QUEUE_SIZE": "100", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "200"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
    ({"OTEL_BSP_SCHEDULE_DELAY": "0"}, "OTEL_BSP_SCHEDULE_DELAY"),
    ({"OTEL_BLRP_MAX_QUEUE_SIZE": "0"}, "OTEL_BLRP_MAX_QUEUE_SIZE"),
])
def test_batch_processor_settings_the_sdk_would_reject_fail_at_start_naming_the_variable(env, variable):
    """A batch size over the queue size, a zero queue or delay: a ConfigurationError naming it, no bare ValueError."""
    with pytest.raises(ConfigurationError, match=variable):
        TelemetryConfig.from_env(env)
    with pytest.raises(ConfigurationError, match=variable):
        Nexus("bad", environ=env)


def test_a_404_echoes_a_bounded_name_and_hides_workflows_behind_auth():
    """An unknown 10 KB workflow name comes back cut; with AuthPlugin on, the 404 lists no workflow names."""
    open_app = CapturedTelemetry("open").app("open")
    open_app.register("secret_report", lambda inputs: 1)
    guarded = CapturedTelemetry("guarded").app("guarded")
    guarded.register("secret_report", lambda inputs: 1)
    guarded.add_plugin(AuthPlugin(strategy="api_key", api_keys={"ci": "k" * 32}))
    for app, listed in ((open_app, True), (guarded, False)):
        with BackgroundServer(app) as url:
            r = httpx.post(f"{url}/workflows/{'x' * 10_000}", json={}, timeout=10)
        assert r.status_code == 404
        assert len(r.content) < 2_000, len(r.content)
        assert ("secret_report" in r.text) is listed


def test_a_hook_with_the_wrong_signature_fails_at_registration():
    """`on_startup(lambda event: ...)` raises at once, naming the plugin, the hook and the expected call."""
    app = Nexus("hooks", environ={"OTEL_SDK_DISABLED": "true"})
    with pytest.raises(PluginValidationError, match=r"startup hook .*cannot be called as fn\(\) with no arguments"):
        app.on_startup(lambda event: None)
    with pytest.raises(PluginValidationError, match=r"workflow_completed hook .*fn\(event\)"):
        app.on_workflow_completed(lambda: None)

    class Wrong(NexusPlugin):
        name = "wrong"

        def setup(self, nexus_app):
            nexus_app.on_shutdown(lambda event: None)

    with pytest.raises(PluginSetupError, match="wrong"):
        app.add_plugin(Wrong())
    app.on_startup(lambda: None)  # the right shapes still register
    app.on_workflow_failed(lambda event: None)
    app.stop()


def test_force_flush_reaches_every_sink_even_after_one_fails():
    """The redacting processor flushes every sink within one deadline; a failing one does not stop the rest."""

    class Sink(SpanProcessor):
        def __init__(self, ok: bool) -> None:
            self.ok = ok
            self.flushed = 0

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            self.flushed += 1
            return self.ok

    failing, healthy = Sink(False), Sink(True)
    processor = RedactingSpanProcessor(Redactor(), [failing, healthy])
    assert processor.force_flush(1000) is False
    assert failing.flushed == 1 and healthy.flushed == 1


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"a":' * 30_000, b'{"a":' + b"[" * 150 + b"]" * 150 + b"}"],
                         ids=["100k-arrays", "30k-objects", "150-levels"])
def test_deeply_nested_json_is_the_callers_error(body, caplog):
    """A body nested past 100 levels is a 400 naming the limit, with no traceback in the server log."""
    app = CapturedTelemetry("deep").app("deep")
    app.register("echo", lambda inputs: inputs)
    with BackgroundServer(app) as url:
        r = httpx.post(f"{url}/workflows/echo", content=body, headers={"content-type": "application/json"},
                       timeout=10)
        ok = httpx.post(f"{url}/workflows/echo", json={"a": [[[1]]]}, timeout=10)
    assert r.status_code == 400 and "100 levels" in r.json()["error"], r.text
    assert ok.status_code == 200
    assert not [rec for rec in caplog.records if rec.exc_info or "Traceback" in rec.getMessage()]


def test_calls_turned_away_by_auth_or_rate_limits_count_as_rejected(tmp_path):
    """401/403/429 are status="rejected" in the contract metrics and the records, not "failed"."""
    from nexus_otel.caller import Caller
    from nexus_otel.errors import AuthenticationError, RateLimitExceeded
    from nexus_otel.plugins import DatabasePlugin, MetricsPlugin, RateLimitPlugin

    capture = CapturedTelemetry("guard")
    app = capture.app("guard")
    metrics = MetricsPlugin()
    app.add_plugin(AuthPlugin(strategy="api_key", api_keys={"ci": "k" * 32}))
    app.add_plugin(RateLimitPlugin(limit=60, burst=1, key="api_key"))
    app.add_plugin(metrics)
    app.add_plugin(DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}", spool_path=str(tmp_path / "spool.sqlite")))
    app.register("work", lambda inputs: 1)
    app.register("boom", lambda inputs: 1 / 0)
    with pytest.raises(AuthenticationError):
        app.execute_workflow("work", {}, caller=Caller(api_key="wrong"))
    assert app.execute_workflow("work", {}, caller=Caller(api_key="k" * 32)) == 1
    with pytest.raises(RateLimitExceeded):
        app.execute_workflow("work", {}, caller=Caller(api_key="k" * 32))
    assert capture.metric_value("nexus.workflow.executions", workflow="work", status="rejected") == 2
    assert capture.metric_value("nexus.workflow.executions", workflow="work", status="completed") == 1
    assert not capture.metric_value("nexus.workflow.executions", workflow="work", status="failed")
    figures = metrics.get_metrics()
    assert figures["requests_rejected"] == 2 and figures["requests_failed"] == 2 and figures["requests_success"] == 1
    rejected = [s for s in capture.spans_named("workflow work") if "error.type" in s.attributes]
    assert sorted(s.attributes["error.type"].rsplit(".", 1)[-1] for s in rejected) == [
        "AuthenticationError", "RateLimitExceeded"]
    app.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        statuses = sorted(r[0] for r in db.execute("SELECT status FROM workflow_executions"))
    assert statuses == ["completed", "rejected", "rejected"]


@pytest.mark.parametrize("args", [("run", "tests.apps.marking:app", "mark"),
                                  ("serve", "tests.apps.marking:app", "--port", "0"),  # never the default 8000
                                  ("plugins", "tests.apps.marking:app"), ("demo", "-n", "1")],
                         ids=["run", "serve", "plugins", "demo"])
def test_a_bad_environment_variable_is_one_line_and_exit_2_for_every_command(tmp_path, args):
    """OTEL_TRACES_SAMPLER=bogus: one line naming the variable, the value and what is expected; no usage banner."""
    env = cli_env(tmp_path / "data", OTEL_TRACES_SAMPLER="bogus", TEST_MARKER=str(tmp_path / "m"))
    result = nexus_otel(*args, env=env, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "OTEL_TRACES_SAMPLER" in lines[0] and "'bogus'" in lines[0], result.stderr
    assert "parentbased_always_on" in lines[0] and "Usage" not in result.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line_before_anything_starts(tmp_path):
    """`serve` on a taken port: one line naming the address, a non-zero exit, no 'serving' or lifecycle output."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = nexus_otel("serve", "tests.apps.marking:app", "--port", str(port),
                            env=cli_env(tmp_path / "data"), cwd=tmp_path, timeout=30)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines


def test_sensitive_query_parameters_are_masked_on_the_server_span():
    """`?api_key=...&token=...` reaches no sink: url.query keeps the names and masks those values."""
    capture = CapturedTelemetry("query")
    app = capture.app("query")
    app.register("work", lambda inputs: 1)
    with BackgroundServer(app) as url:
        r = httpx.post(f"{url}/workflows/work?api_key=sk-live-123&page=2&access%5Ftoken=tok-456", json={},
                       timeout=10)
    assert r.status_code == 200
    (server,) = [s for s in capture.spans if s.attributes.get("url.query")]
    query = server.attributes["url.query"]
    assert "sk-live-123" not in query and "tok-456" not in query
    assert query == "api_key=REDACTED&page=2&access%5Ftoken=REDACTED"  # the word the URL conventions use


def test_a_plugin_that_replaces_execute_workflow_applies_to_http_calls_too():
    """Kailash Nexus's caching example (it replaces execute_workflow) caches HTTP calls as well as Python ones."""
    import hashlib
    import json

    class SeedCaching(NexusPlugin):  # as in Kailash Nexus's plugin API, but for the import
        def __init__(self, ttl=300):
            self.ttl = ttl
            self.cache = {}

        @property
        def name(self):
            return "caching"

        def setup(self, nexus_app):
            original_execute = nexus_app.execute_workflow

            def cached_execute(workflow_name, inputs, **kwargs):
                key = hashlib.sha256(json.dumps({"workflow": workflow_name, "inputs": inputs},
                                                sort_keys=True).encode()).hexdigest()
                cached = self.cache.get(key)
                if cached and time.time() - cached["timestamp"] < self.ttl:
                    return cached["result"]
                result = original_execute(workflow_name, inputs, **kwargs)
                self.cache[key] = {"result": result, "timestamp": time.time()}
                return result

            nexus_app.execute_workflow = cached_execute

    capture = CapturedTelemetry("cached")
    app = capture.app("cached")
    runs = []
    app.register("slow", lambda inputs: runs.append(inputs) or {"n": inputs["n"]})
    app.add_plugin(SeedCaching())
    with BackgroundServer(app) as url:
        answers = [httpx.post(f"{url}/workflows/slow", json={"n": 1}, timeout=10) for _ in range(3)]
    assert [a.json()["result"] for a in answers] == [{"n": 1}] * 3
    assert len(runs) == 1, "the HTTP channel went around the plugin's execute_workflow"
    (span,) = capture.spans_named("workflow slow")
    assert span.attributes["nexus.channel"] == "api"  # the HTTP channel's name, passed through the replacement


def test_an_apps_environ_reaches_every_output_it_configures(tmp_path):
    """Nexus(environ={...}): spans and MonitoringPlugin's pushes go to its endpoint with its headers and compression."""
    from nexus_otel.plugins import MonitoringPlugin

    from .otlp_receivers import HTTPReceiver

    with HTTPReceiver() as receiver:
        app = Nexus("env", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRICS_EXPORTER": "none",
                                    "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=acme",
                                    "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
        app.add_plugin(MonitoringPlugin(backend="otlp", interval=60))
        app.register("greet", lambda inputs: "hi")
        app.execute_workflow("greet", {})
        app.stop(timeout=5)
        assert receiver.wait_for(lambda: receiver.trace_requests and receiver.metric_requests, timeout=5)
    assert "workflow greet" in {s.name for s in receiver.spans()}
    assert "nexus.workflow.executions" in receiver.metric_names()
    # Headers and compression from environ= too, on every request (spans and metrics).
    assert receiver.request_headers and all(h.get("x-tenant") == "acme" for h in receiver.request_headers)
    assert set(receiver.content_encodings) == {"gzip"}


BEARER = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLXZhbHVl"


def test_credentials_inside_free_text_reach_no_sink(tmp_path):
    """A bearer token, a URL password and key=value secrets in an exception: masked in span, events, audit, UA."""
    import sqlite3

    from nexus_otel.plugins import DatabasePlugin

    capture = CapturedTelemetry("free-text")
    app = capture.app("free-text")
    app.add_plugin(DatabasePlugin(f"sqlite:///{tmp_path / 'audit.sqlite'}", spool_path=str(tmp_path / "spool.sqlite")))

    def call_upstream(inputs):
        raise RuntimeError(f"upstream refused {BEARER} at https://svc:hunter2@api.example/x "
                           "(config: client_secret=s3cr3t-value, page=2)")

    app.register("call", call_upstream)
    with BackgroundServer(app) as url:
        r = httpx.post(f"{url}/workflows/call", json={}, headers={"user-agent": f"tool/1.0 {BEARER}"}, timeout=10)
    assert r.status_code == 500
    app.stop()
    with sqlite3.connect(tmp_path / "audit.sqlite") as db:
        (error,) = db.execute("SELECT error FROM workflow_executions").fetchone()
    everything = [error, str(r.content)]
    for span in capture.spans:
        everything += [str(dict(span.attributes)), str(span.status.description)]
        everything += [str(dict(event.attributes)) for event in span.events]
    text = "\n".join(everything)
    for secret in ("eyJhbGciOiJIUzI1NiJ9", "c2lnbmF0dXJlLXZhbHVl", "hunter2", "s3cr3t-value"):
        assert secret not in text, secret
    assert "page=2" in error and "upstream refused Bearer [REDACTED]" in error  # the rest of the message stays


def test_key_names_match_by_pattern_and_free_text_scrubbing_can_be_turned_off():
    """Keys such as db_pass, passphrase, otp, security_code are masked; scrub_credentials=False leaves text alone."""
    r = Redactor()
    masked = r({"db_pass": "a", "passphrase": "b", "otp": "c", "security_code": "d", "userPw": "e", "page": 2})
    assert masked == {"db_pass": "[REDACTED]", "passphrase": "[REDACTED]", "otp": "[REDACTED]",
                      "security_code": "[REDACTED]", "userPw": "[REDACTED]", "page": 2}
    assert "eyJ" not in r.scrub_text("m", BEARER)
    assert Redactor(scrub_credentials=False).scrub_text("m", BEARER) == BEARER
