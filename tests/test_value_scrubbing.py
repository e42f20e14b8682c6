"""Secrets inside values are masked by their shape, whatever their key, in every place telemetry goes."""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
import sys

import pytest

from nexus_otel import Nexus
from nexus_otel.errors import ConfigurationError
from nexus_otel.logs.formatters import JsonFormatter, PlainFormatter
from nexus_otel.plugins import DatabasePlugin, RequestLoggerPlugin, WebhookPlugin
from nexus_otel.redaction import DEFAULT_PATTERNS, MASK, Redactor

from .otlp_receivers import HTTPReceiver
from .webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(60)

DB_PASSWORD = "Tr0ub4dor-and-3"
CARD = "5555 5555 5555 4444"  # Luhn-valid (a card network's published test number)
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB_TOKEN = "ghp_" + "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0LmNbVc"
AWS_SECRET_2 = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
CARD_2 = "4000-0566-5566-5556"

INPUTS = {
    "db_conn": f"postgresql://admin:{DB_PASSWORD}@db/x",
    "note": f"pay with {CARD} please",
    "aws": AWS_SECRET,
    "order": "4111111111111112",  # 16 digits that fail the Luhn check: an ordinary number, kept
}
MESSAGES = {
    "github": f"push refused for {GITHUB_TOKEN}",
    "aws": f"boto: bad credentials aws_secret_access_key {AWS_SECRET_2}",
    "card": f"charge declined for card {CARD_2}",
}
SECRETS = (DB_PASSWORD, CARD, AWS_SECRET, GITHUB_TOKEN, AWS_SECRET_2, CARD_2, CARD.replace(" ", ""))


def _fail(inputs):
    raise RuntimeError(MESSAGES[inputs["case"]])


def test_secrets_in_values_reach_no_sink(tmp_path):
    """A URL password, card numbers, AWS and GitHub keys in inputs and exception messages: absent from the local
    store, OTLP, the request log, audit rows, webhook payloads and the outbox; the rest of each value stays."""
    data = tmp_path / "data"
    log_out = io.StringIO()
    db = tmp_path / "audit.sqlite"
    with HTTPReceiver() as otlp, WebhookReceiver() as hooks:
        app = Nexus("vault", environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp,local", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_TRACES_SAMPLER": "always_on", "NEXUS_OTEL_DATA_DIR": str(data)})
        app.add_plugin(RequestLoggerPlugin("json", output=log_out))
        app.add_plugin(WebhookPlugin(hooks.url, outbox_path=tmp_path / "outbox.sqlite",
                                     statuses=("completed", "failed")))
        app.add_plugin(DatabasePlugin(f"sqlite:///{db}", spool_path=str(tmp_path / "spool.sqlite")))
        app.register("connect", lambda inputs: {"ok": True})
        app.register("fail", _fail)
        app.execute_workflow("connect", INPUTS)
        for case in MESSAGES:
            with pytest.raises(RuntimeError):
                app.execute_workflow("fail", {"case": case})
        hooks.wait_for_count(4, timeout=15)
        app.stop(timeout=10)
        assert otlp.wait_for(lambda: len(otlp.spans()) >= 4, timeout=10)
        otlp_text = "\n".join(str(request) for request in otlp.trace_requests)  # attributes, events, status
        webhook_text = "".join(r.body.decode() for r in hooks.requests())

    store_text = "".join(p.read_text(errors="replace") for p in data.rglob("*.jsonl"))
    files_text = "".join(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT workflow_name, status, error FROM workflow_executions").fetchall()
    rows_text = json.dumps(rows)
    logs = log_out.getvalue()

    sinks = {"local store": store_text, "OTLP": otlp_text, "request log": logs, "audit rows": rows_text,
             "webhooks": webhook_text, "every file written (outbox, spool, store)": files_text}
    assert all(sinks.values()), {name: len(text) for name, text in sinks.items()}
    leaks = [f"{secret!r} in the {name}" for name, text in sinks.items() for secret in SECRETS if secret in text]
    assert not leaks, "secrets leaked: " + "; ".join(leaks)
    # Masked in place: what is around each secret is still there to read.
    assert "postgresql://admin:[REDACTED]@db/x" in store_text and "postgresql://admin:[REDACTED]@db/x" in logs
    assert "pay with [REDACTED] please" in otlp_text and "4111111111111112" in store_text
    assert sorted(error for _, status, error in rows if status == "failed") == sorted(
        f"RuntimeError: {text}" for text in ("push refused for [REDACTED]",
                                             "boto: bad credentials aws_secret_access_key [REDACTED]",
                                             "charge declined for card [REDACTED]"))
    assert "exception.message" in otlp_text and "charge declined for card [REDACTED]" in otlp_text


@pytest.mark.parametrize("name, secret, text", [
    ("url_password", "s3cr3t", "redis://:s3cr3t@cache:6379/0"),
    ("authorization_scheme", "dXNlcjpwYXNzd29yZA==", "Authorization: Basic dXNlcjpwYXNzd29yZA=="),
    ("token_scheme", "tk_9f8e7d6c5b4a3210ffee", "retry with token tk_9f8e7d6c5b4a3210ffee"),
    ("jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl",
     "id eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJl"),
    ("private_key", "MIIEowIBAAKCAQEA7",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\n-----END RSA PRIVATE KEY-----"),
    ("github_token", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU",
     "GH=github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTU"),
    ("github_token", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "oauth gho_16C7e42F292c6912E7710c838347Ae178B4a ok"),
    ("aws_access_key_id", "AKIAIOSFODNN7EXAMPLE", "key id AKIAIOSFODNN7EXAMPLE,"),
    ("aws_secret_access_key", AWS_SECRET, f'{{"SecretAccessKey": "{AWS_SECRET}"}}'),
    ("slack_token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
     "hook xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("stripe_key", "rk_live_51HxYzAbCdEfGhIjKlMnOpQr", "restricted rk_live_51HxYzAbCdEfGhIjKlMnOpQr"),
    ("google_api_key", "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI", "maps?key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"),
    ("card_number", "378282246310005", "amex 378282246310005."),
    ("card_number", "6011 1111 1111 1117", "discover 6011 1111 1111 1117"),
    ("card_number", "3782 822463 10005", "amex as printed 3782 822463 10005"),
    ("card_number", "3056-930902-5904", "diners 3056-930902-5904;"),
])
def test_each_default_pattern_masks_its_secret_inside_text(name, secret, text):
    """Each default pattern finds its secret inside a longer string, and only that pattern is needed for it."""
    assert secret not in Redactor().scrub_text("m", text)
    assert secret not in Redactor(patterns={name: DEFAULT_PATTERNS[name]}).scrub_text("m", text)
    assert secret in Redactor(patterns={}, sensitive_keys=()).scrub_text("m", text)  # found by the pattern alone


@pytest.mark.parametrize("text", [
    "3f2a9c1e-8d4b-4c2a-9f1e-2b3c4d5e6f70",  # a UUID
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a git commit: 40 hex characters
    "order 4111111111111112 shipped",  # 16 digits, not Luhn-valid
    "1733526000000000000",  # a timestamp in nanoseconds
    "+4915112345678",  # a phone number
    "https://shop.example.com/orders/123456/done?page=2",
    "token validation runs at 12:30",
    "user@example.com",
])
def test_ordinary_values_survive(text):
    """IDs, hashes, timestamps, phone numbers, non-Luhn numbers, plain URLs and prose are left alone."""
    assert Redactor().scrub_text("m", text) == text
    assert Redactor()({"value": text}) == {"value": text}


def test_a_card_number_as_an_integer_and_an_aws_secret_under_a_key_that_names_aws():
    """A Luhn-valid integer card number is masked; a bare 40-character secret only under an AWS key."""
    out = Redactor()({"pan": 5555555555554444, "id": 5555555555554445, "aws_prod": f"key {AWS_SECRET}",
                      "blob": AWS_SECRET})
    assert out == {"pan": MASK, "id": 5555555555554445, "aws_prod": f"key {MASK}", "blob": AWS_SECRET}


def test_a_secret_cut_by_truncation_is_still_masked_whole():
    """The value limit cuts after scrubbing: no half of a token is left in the cut text."""
    text = "x" * 240 + " " + GITHUB_TOKEN
    out = Redactor(max_value_length=256)({"v": text})["v"]
    assert "ghp_" not in out and "Zx9Qw8" not in out and "truncated" in out


def test_allow_list_and_custom_patterns(capture):
    """An allow-listed value and key survive, a custom pattern masks, in spans and in the request log."""
    log_out = io.StringIO()
    redactor = Redactor(extra_patterns={"employee_id": r"EMP-\d{6}", "ticket": r"ticket #(?P<secret>\d+)"},
                        allow_values=["4111 1111 1111 1111"], allow_keys=["token_count"])
    app = capture.app(redactor=redactor)
    app.add_plugin(RequestLoggerPlugin("json", output=log_out))
    app.register("w", lambda inputs: 1)
    app.execute_workflow("w", {"test_card": "card 4111 1111 1111 1111", "real_card": CARD, "token_count": 12,
                               "who": "EMP-123456 on ticket #8812"})
    app.stop()
    attribute = json.loads(capture.span("workflow w").attributes["nexus.workflow.inputs"])
    logged = json.loads(next(line for line in log_out.getvalue().splitlines() if "inputs" in line))["inputs"]
    for inputs in (attribute, logged):
        assert inputs == {"test_card": "card 4111 1111 1111 1111", "real_card": MASK, "token_count": 12,
                          "who": f"{MASK} on ticket #{MASK}"}


def test_bad_patterns_name_the_setting():
    """A pattern that does not compile, or matches nothing at all, fails at construction naming itself."""
    with pytest.raises(ConfigurationError, match=r"Redactor.extra_patterns\['iban'\].*valid regular expression"):
        Redactor(extra_patterns={"iban": "DE[0-9"})
    with pytest.raises(ConfigurationError, match=r"cannot match ''"):
        Redactor(extra_patterns=[r"x*"])
    with pytest.raises(ConfigurationError, match=r"Redactor.allow_values"):
        Redactor(allow_values="4111")
    compiled = Redactor(extra_patterns=[re.compile(r"emp-\d+", re.IGNORECASE)])
    assert compiled.scrub_text("m", "EMP-77 left") == f"{MASK} left"


def test_log_formatters_scrub_messages_fields_and_tracebacks():
    """A user's own log line through the formatters: secrets in message, extra fields and traceback masked."""
    for formatter in (PlainFormatter(), JsonFormatter()):
        try:
            raise ValueError(f"cannot reach postgresql://admin:{DB_PASSWORD}@db/x")
        except ValueError:
            record = logging.LogRecord("app", logging.ERROR, __file__, 1, "paying with %s", (CARD,), sys.exc_info())
        record.__dict__.update({"payload": {"api_key": "k-123456", "url": f"https://u:{DB_PASSWORD}@h/"},
                                "github": GITHUB_TOKEN})
        line = formatter.format(record)
        for secret in (DB_PASSWORD, CARD, GITHUB_TOKEN, "k-123456"):
            assert secret not in line, (type(formatter).__name__, secret)
        assert "paying with [REDACTED]" in line and "admin:[REDACTED]@db/x" in line
