"""Webhooks to https receivers whose certificates a private CA signed, and to receivers that require mutual TLS.

The CA and certificates come from trustme; the receivers are real TLS servers
on 127.0.0.1. A receiver the sender cannot verify gets nothing (the payload is
a dead letter naming the certificate error); ``ca_file=``, ``SSL_CERT_FILE`` or
``SSL_CERT_DIR`` naming the CA lets it through; a receiver requiring a client certificate gets
payloads only from a sender given one (``client_cert=``, ``client_key=``).
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_otel.errors import PluginSetupError
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.testing import CapturedTelemetry

from .webhook_receiver import WebhookReceiver

trustme = pytest.importorskip("trustme")
N = 8  # executions per test


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def ca_file(tmp_path, ca) -> str:
    path = tmp_path / "private-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _server_context(ca, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


@pytest.fixture
def receiver(ca) -> Iterator[WebhookReceiver]:
    """An https receiver whose certificate the private CA signed."""
    with WebhookReceiver(ssl_context=_server_context(ca)) as hook:
        yield hook


@pytest.fixture
def mtls_receiver(ca) -> Iterator[WebhookReceiver]:
    """An https receiver that accepts only clients presenting a certificate the private CA signed."""
    with WebhookReceiver(ssl_context=_server_context(ca, require_client_cert=True)) as hook:
        yield hook


def _app(tmp_path, url: str, **settings):
    app = CapturedTelemetry("tls").app("tls")
    webhook = WebhookPlugin(url, outbox_path=tmp_path / "outbox.sqlite", **settings)
    app.add_plugin(webhook)
    app.register("ship", lambda inputs: inputs["n"])
    return app, webhook


def _delivered(tmp_path, receiver: WebhookReceiver, **settings) -> int:
    """Run N executions; how many distinct payloads the receiver got (waits for all N)."""
    app, _ = _app(tmp_path, receiver.url, **settings)
    try:
        for i in range(N):
            app.execute_workflow("ship", {"n": i})
        receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) >= N, timeout=15)
    finally:
        app.stop()
    return len({r.headers["webhook-id"] for r in receiver.requests()})


def _refused(tmp_path, receiver: WebhookReceiver, **settings) -> str:
    """Run one execution with a single attempt allowed; the dead letter's error (the receiver must get nothing)."""
    app, webhook = _app(tmp_path, receiver.url, max_attempts=1, **settings)
    try:
        app.execute_workflow("ship", {"n": 0})
        deadline = time.monotonic() + 10
        while not webhook.dead_letters() and time.monotonic() < deadline:
            time.sleep(0.05)
        (dead,) = webhook.dead_letters()
    finally:
        app.stop()
    assert receiver.requests() == []
    return dead.last_error or ""


def test_a_private_ca_is_refused_without_its_certificate(tmp_path, receiver):
    """Without the CA, the receiver's certificate does not verify: nothing is sent, a dead letter says why."""
    error = _refused(tmp_path, receiver)
    assert "CERTIFICATE_VERIFY_FAILED" in error


def test_ca_file_lets_the_private_ca_through(tmp_path, receiver, ca_file):
    """ca_file= naming the private CA: every payload is delivered."""
    assert _delivered(tmp_path, receiver, ca_file=ca_file) == N


def test_ca_file_replaces_the_system_store(tmp_path, receiver, monkeypatch):
    """ca_file= is trusted instead of the system's store, as curl --cacert: another CA's bundle is refused."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    assert "CERTIFICATE_VERIFY_FAILED" in _refused(tmp_path, receiver, ca_file=str(other))


def test_ssl_cert_file_in_the_environment_still_works(tmp_path, receiver, ca_file, monkeypatch):
    """SSL_CERT_FILE naming the private CA (set before the app starts): every payload is delivered."""
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)
    assert _delivered(tmp_path, receiver) == N


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to hash the certificate directory")
def test_ssl_cert_dir_in_the_environment_still_works(tmp_path, receiver, ca_file, monkeypatch):
    """SSL_CERT_DIR naming a hashed directory holding the private CA: every payload is delivered."""
    directory = tmp_path / "certs"
    directory.mkdir()
    shutil.copy(ca_file, directory / "private-ca.pem")
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_DIR", str(directory))
    assert _delivered(tmp_path, receiver) == N


def test_mtls_receiver_refuses_a_sender_without_a_client_certificate(tmp_path, mtls_receiver, ca_file):
    """A receiver requiring a client certificate: a sender without one delivers nothing."""
    error = _refused(tmp_path, mtls_receiver, ca_file=ca_file)
    # TLS 1.3 finishes the client's handshake before the server checks for a certificate: the server's alert
    # (certificate required) reaches the sender, or its close does first (a broken pipe), as chance has it.
    assert "CERTIFICATE_REQUIRED" in error or "connection closed before the answer ended" in error, error


@pytest.mark.parametrize("key_apart", [False, True], ids=["key-in-cert-file", "key-in-client_key"])
def test_mtls_receiver_accepts_the_client_certificate(tmp_path, mtls_receiver, ca, ca_file, key_apart):
    """client_cert= (with the key in it, or in client_key=): the mTLS receiver gets every payload."""
    leaf = ca.issue_cert("webhook-sender.example")
    cert = tmp_path / "client.pem"
    key = tmp_path / "client.key"
    if key_apart:
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        settings = {"client_cert": str(cert), "client_key": key}  # a Path works as well as a str
    else:
        leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
        settings = {"client_cert": cert}
    assert _delivered(tmp_path, mtls_receiver, ca_file=ca_file, **settings) == N


def _files(tmp_path: Path, ca) -> dict[str, str]:
    """Files to misconfigure with: a cert alone, a key alone, another leaf's key, a text file, nothing."""
    leaf, other = ca.issue_cert("a.example"), ca.issue_cert("b.example")
    files = {
        "cert_only": b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        "other_key": other.private_key_pem.bytes(),
        "text": b"not a certificate\n",
    }
    paths = {name: str(tmp_path / f"{name}.pem") for name in files}
    for name, data in files.items():
        Path(paths[name]).write_bytes(data)
    paths["missing"] = str(tmp_path / "nowhere" / "missing.pem")
    paths["directory"] = str(tmp_path)
    return paths


@pytest.mark.parametrize(("settings", "named", "says"), [
    ({"ca_file": "missing"}, "WebhookPlugin.ca_file", "No such file"),
    ({"ca_file": "directory"}, "WebhookPlugin.ca_file", "Is a directory"),
    ({"ca_file": "text"}, "WebhookPlugin.ca_file", "a PEM file of CA certificates"),
    ({"ca_file": 42}, "WebhookPlugin.ca_file", "a path to"),
    ({"client_cert": "missing"}, "WebhookPlugin.client_cert", "No such file"),
    ({"client_cert": "cert_only"}, "WebhookPlugin.client_cert", "its unencrypted private key"),
    ({"client_cert": "cert_only", "client_key": "text"}, "WebhookPlugin.client_key", "PEM private key"),
    ({"client_cert": "cert_only", "client_key": "other_key"}, "WebhookPlugin.client_cert", "matching client_key"),
    ({"client_key": "other_key"}, "WebhookPlugin.client_key", "together with WebhookPlugin.client_cert"),
])
def test_bad_tls_settings_fail_the_start_naming_the_setting(tmp_path, ca, settings, named, says):
    """A missing, unreadable or invalid certificate file fails setup, naming the setting and the path."""
    files = _files(tmp_path, ca)
    given = {name: files.get(value, value) if isinstance(value, str) else value for name, value in settings.items()}
    app = CapturedTelemetry("tls").app("tls")
    with pytest.raises(PluginSetupError) as info:
        app.add_plugin(WebhookPlugin("https://127.0.0.1:9/hook", outbox_path=tmp_path / "o.sqlite", **given))
    message = str(info.value)
    assert f"invalid {named}=" in message and says in message
    shown = given.get(named.split(".")[1])
    if isinstance(shown, str):
        assert shown in message
