"""A webhook URL's credentials and secret query values reach no log line, no CLI output, no span attribute."""

from __future__ import annotations

import logging
import socket
import time

import httpx
import pytest

from nexus_otel.errors import PluginSetupError
from nexus_otel.exporters.webhook import WebhookExporter
from nexus_otel.outbox import Outbox, RetryPolicy
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.records import ExecutionRecord
from nexus_otel.serving import BackgroundServer
from nexus_otel.testing import CapturedTelemetry
from nexus_otel.urls import mask_url, redact_query

from .served import cli_env, nexus_otel
from .webhook_receiver import WebhookReceiver

PASSWORD = "PASSWORD"
SECRET_VALUE = "SECRETVALUE"


def _secret_url(port: int) -> str:
    return f"http://user:{PASSWORD}@127.0.0.1:{port}/hook?api_key={SECRET_VALUE}&page=2"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float = 15.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _lines(caplog) -> list[str]:
    """Every captured log record as it would be printed, its traceback included."""
    handler_format = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return [handler_format.format(record) for record in caplog.records]


def test_mask_url_hides_the_password_a_lone_user_token_and_secret_query_values():
    """mask_url keeps host, path, user and plain parameters; the password, a token user, api_key, sig are REDACTED."""
    assert mask_url(_secret_url(8080)) == "http://user:REDACTED@127.0.0.1:8080/hook?api_key=REDACTED&page=2"
    assert mask_url("https://ghp_abcdef@hooks.example.com/x") == "https://REDACTED@hooks.example.com/x"
    assert mask_url("https://h.example.com/p?sig=abc&q=1#access_token=t") == \
        "https://h.example.com/p?sig=REDACTED&q=1#access_token=REDACTED"
    assert mask_url("audit") == "audit" and mask_url("http://h/p?page=2") == "http://h/p?page=2"
    # The HTTP conventions' keys are matched case-sensitively; ours by name, whatever the case or encoding.
    assert redact_query("AWSAccessKeyId=A&Signature=S&X-Goog-Signature=G&key=K&code=C&access%5Ftoken=T&page=2") == \
        "AWSAccessKeyId=REDACTED&Signature=REDACTED&X-Goog-Signature=REDACTED&key=REDACTED&code=REDACTED" \
        "&access%5Ftoken=REDACTED&page=2"


@pytest.mark.parametrize("receiver_state", ["down", 500, 302])
def test_a_webhook_urls_secrets_are_in_no_log_line_and_no_dead_letters_listing(receiver_state, capture, tmp_path,
                                                                              caplog):
    """Receiver down, answering 500 or 302: the warnings, the give-up error and the CLI show the URL masked."""
    caplog.set_level(logging.INFO)
    with WebhookReceiver(status=500 if receiver_state == "down" else int(receiver_state)) as receiver:
        port = _closed_port() if receiver_state == "down" else receiver.port
        data_dir = tmp_path / "data"
        app = capture.app("shop")
        app.register("order", lambda inputs: {"ok": True})
        plugin = WebhookPlugin(_secret_url(port), outbox_path=data_dir / "outbox.sqlite", max_attempts=2,
                               backoff_base=0.01, backoff_max=0.02)
        app.add_plugin(plugin)
        app.execute_workflow("order", {})
        _wait(lambda: plugin.dead_letters(), what="the payload to be dead-lettered")
        app.stop()
        if receiver_state != "down":
            (request,) = receiver.requests()[:1]
            assert request.path == f"/hook?api_key={SECRET_VALUE}&page=2"  # the receiver itself gets it whole
    lines = _lines(caplog)
    masked = f"http://user:REDACTED@127.0.0.1:{port}/hook?api_key=REDACTED&page=2"
    given_up = [line for line in lines if "giving up" in line]
    assert len(given_up) == 1 and masked in given_up[0], lines
    if receiver_state != 302:  # a retryable failure opens the circuit, with a warning naming the destination
        assert any("is unavailable" in line and masked in line for line in lines), lines
    leaks = [line for line in lines if PASSWORD in line or SECRET_VALUE in line]
    assert leaks == []

    listed = nexus_otel("webhooks", "dead-letters", "--data-dir", str(data_dir), env=cli_env(data_dir), cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert masked in listed.stdout, listed.stdout
    assert PASSWORD not in listed.stdout + listed.stderr and SECRET_VALUE not in listed.stdout + listed.stderr


def test_ten_redirected_payloads_are_one_error_line(tmp_path, caplog):
    """A receiver answering 302 to a batch of 10 payloads: 10 dead letters, one ERROR line naming 10 and HTTP 302."""
    caplog.set_level(logging.INFO)
    with WebhookReceiver(status=302) as receiver:
        exporter = WebhookExporter([_secret_url(receiver.port)], Outbox(tmp_path / "outbox.sqlite"),
                                   policy=RetryPolicy(max_attempts=3, base=0.01, cap=0.02))
        now = time.time()
        for i in range(10):  # queued before the worker starts, so they are one batch
            exporter.on_end(ExecutionRecord(workflow="order", workflow_id=f"wf-{i}", status="completed",
                                            channel="python", session_id=None, started_at=now, ended_at=now,
                                            duration=0.001))
        exporter.start()
        try:
            _wait(lambda: exporter.outbox.counts().get("dead", 0) == 10, what="10 dead letters")
        finally:
            exporter.shutdown(2.0)
        assert len(receiver.requests()) == 10  # each was tried once: a 3xx is final, not retried
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert "10 messages" in line and "HTTP 302" in line and "api_key=REDACTED" in line, line
    assert PASSWORD not in line and SECRET_VALUE not in line


def test_url_query_on_the_server_span_has_secret_values_redacted():
    """`?sig=abc&page=2` gives url.query `sig=REDACTED&page=2`: the conventions' keys and ours, names kept."""
    capture = CapturedTelemetry("query")
    try:
        app = capture.app("query")
        app.register("work", lambda inputs: 1)
        with BackgroundServer(app) as url:
            for query in ("sig=abc&page=2", "key=AIzaK&code=oauthcode&X-Goog-Signature=g&q=x"):
                assert httpx.post(f"{url}/workflows/work?{query}", json={}, timeout=10).status_code == 200
        queries = sorted(s.attributes["url.query"] for s in capture.spans if s.attributes.get("url.query"))
    finally:
        capture.shutdown()
    assert queries == ["key=REDACTED&code=REDACTED&X-Goog-Signature=REDACTED&q=x", "sig=REDACTED&page=2"]


def test_a_rejected_webhook_url_is_named_in_its_error_without_its_credentials(capture, tmp_path):
    """`ftp://user:PASSWORD@host/?api_key=...` fails setup with an error naming the setting and the masked URL."""
    with pytest.raises(PluginSetupError) as info:
        capture.app().add_plugin(WebhookPlugin(f"ftp://user:{PASSWORD}@host/x?api_key={SECRET_VALUE}",
                                               outbox_path=tmp_path / "o.sqlite"))
    message = str(info.value)
    assert "WebhookPlugin.webhook_url='ftp://user:REDACTED@host/x?api_key=REDACTED'" in message, message
    assert PASSWORD not in message and SECRET_VALUE not in message
