"""Workflow inputs reach span attributes only redacted and bounded; recording them is a setting."""

import json

import pytest

from nexus_otel.errors import ConfigurationError
from nexus_otel.redaction import MASK, Redactor

SECRETS = {
    "user": "ada",
    "password": "hunter2-secret",
    "api_key": "ak_live_123456",
    "Authorization": "Bearer eyJhbGciOi.secret",
    "nested": {"X-Api-Key": "xk_999", "db_password": "pw_777", "ok": [1, {"accessToken": "tok_555"}]},
    "big": "A" * 1_000_000,
}


def test_secrets_are_masked_and_big_values_cut(capture):
    """Sensitive keys at any depth are masked; a 1 MB string becomes a short one."""
    app = capture.app()
    app.register("w", lambda inputs: "ok")
    app.execute_workflow("w", SECRETS)
    text = capture.span("workflow w").attributes["nexus.workflow.inputs"]
    for secret in ("hunter2-secret", "ak_live_123456", "eyJhbGciOi", "xk_999", "pw_777", "tok_555"):
        assert secret not in text
    assert "A" * 300 not in text
    assert len(text) <= 4096 + 40
    data = json.loads(text)
    assert data["user"] == "ada"
    assert data["password"] == MASK and data["Authorization"] == MASK
    assert data["nested"]["X-Api-Key"] == MASK and data["nested"]["ok"][1]["accessToken"] == MASK
    assert "truncated 999744 chars" in data["big"]


def test_inputs_are_not_mutated(capture):
    """Redaction works on a copy: the workflow gets the real inputs."""
    app = capture.app()
    app.register("w", lambda inputs: inputs["password"])
    assert app.execute_workflow("w", {"password": "real"}) == "real"


def test_recording_inputs_can_be_switched_off(capture):
    """record_inputs=False: no inputs attribute at all."""
    app = capture.app(record_inputs=False)
    app.register("w", lambda inputs: 1)
    app.execute_workflow("w", {"user": "ada"})
    assert "nexus.workflow.inputs" not in capture.span("workflow w").attributes


def test_custom_keys_and_callback():
    """Extra sensitive keys add to the defaults, and a callback can drop e-mail addresses."""
    redact = Redactor(
        extra_sensitive_keys=("iban",),
        callback=lambda path, value: "[email]" if isinstance(value, str) and "@" in value else value,
    )
    out = redact({"IBAN": "DE00", "contact": {"email": "a@b.c"}, "password": "p"})
    assert out == {"IBAN": MASK, "contact": {"email": "[email]"}, "password": MASK}
    only = Redactor(sensitive_keys=("iban",))
    assert only({"iban": "x", "password": "p"}) == {"iban": MASK, "password": "p"}


def test_bad_redactor_settings_name_the_setting():
    """A nonsense size limit fails at construction naming the setting."""
    with pytest.raises(ConfigurationError, match=r"Redactor.max_value_length=0"):
        Redactor(max_value_length=0)
    with pytest.raises(ConfigurationError, match=r"Redactor.max_depth=True"):
        Redactor(max_depth=True)
