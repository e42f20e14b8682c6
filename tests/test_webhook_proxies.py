"""Webhooks go through the forward proxy the environment (or ``proxy=``) names, as curl and httpx do.

The proxy is a real one, Debian's tinyproxy, on a loopback port with its own
configuration: its log shows each request it carried (``POST http://...`` for
an ``http://`` receiver, ``CONNECT host:port`` for an ``https://`` one), and it
adds a ``Via`` header to the requests it forwards, which the receiver sees.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus_otel.errors import PluginSetupError
from nexus_otel.exporters.http1 import HttpError, Pool
from nexus_otel.exporters.proxies import ProxyRoutes
from nexus_otel.exporters.tls import client_context
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.testing import CapturedTelemetry

from .ports import free_port
from .webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.skipif(shutil.which("tinyproxy") is None, reason="tinyproxy is not installed "
                                "(scripts/test.sh installs it: apt-get install tinyproxy)")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUEST_METHOD")
N = 12  # executions per test


class Tinyproxy:
    """tinyproxy on a free loopback port, logging each request it carries; ``user``/``password``: BasicAuth."""

    def __init__(self, directory: Path, connect_ports: tuple[int, ...] = (), user: str | None = None,
                 password: str | None = None) -> None:
        self.port = free_port()
        self.log = directory / "tinyproxy.log"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 30", "MaxClients 200",
                 f'LogFile "{self.log}"', "LogLevel Connect", f'PidFile "{directory / "tinyproxy.pid"}"']
        lines += [f"ConnectPort {port}" for port in connect_ports]
        if user is not None:
            lines.append(f"BasicAuth {user} {password}")
        config = directory / "tinyproxy.conf"
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(["tinyproxy", "-d", "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    log = self.log.read_text() if self.log.exists() else ""
                    raise RuntimeError(f"tinyproxy did not start: {log}") from None
                time.sleep(0.05)

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def requests(self) -> list[str]:
        """The request lines the proxy carried, oldest first (``POST http://127.0.0.1:PORT/hook HTTP/1.1``)."""
        if not self.log.exists():
            return []
        return [line.split("): ", 1)[1] for line in self.log.read_text().splitlines()
                if "Request (file descriptor" in line]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch):
    """Each test starts from an environment without proxy variables (in either spelling)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture
def proxy(tmp_path, receiver) -> Iterator[Tinyproxy]:
    with_dir = tmp_path / "proxy"
    with_dir.mkdir()
    server = Tinyproxy(with_dir, connect_ports=(receiver.port,))
    yield server
    server.close()


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def _https_receiver(ca) -> WebhookReceiver:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return WebhookReceiver(ssl_context=context)


def _run(tmp_path, receiver: WebhookReceiver, url: str | None = None, **settings) -> None:
    """``N`` executions delivered to ``receiver`` (each once), then the app stopped."""
    app = CapturedTelemetry("proxies").app("proxies")
    app.add_plugin(WebhookPlugin(url or receiver.url, outbox_path=tmp_path / "outbox.sqlite", **settings))
    app.register("ship", lambda inputs: inputs["n"])
    try:
        for i in range(N):
            app.execute_workflow("ship", {"n": i})
        receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs}) >= N, timeout=15)
    finally:
        app.stop()


def _via_proxy(receiver: WebhookReceiver) -> list[bool]:
    return ["tinyproxy" in r.headers.get("via", "") for r in receiver.requests()]


def test_http_proxy_from_the_environment_carries_every_webhook(tmp_path, monkeypatch, receiver, proxy):
    """HTTP_PROXY naming a proxy: every webhook to an http:// receiver passes through it, in absolute form."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    _run(tmp_path, receiver)
    assert all(_via_proxy(receiver)) and len(receiver.requests()) >= N
    carried = [line for line in proxy.requests() if line == f"POST {receiver.url} HTTP/1.1"]
    assert len(carried) == len(receiver.requests())
    assert {r.path for r in receiver.requests()} == {"/hook"}


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "{port_form}", "localhost, 127.0.0.1", "*"])
def test_no_proxy_covering_the_receiver_sends_it_direct(tmp_path, monkeypatch, receiver, proxy, no_proxy):
    """NO_PROXY naming the receiver (its host, host:port, in a list, or *): no webhook goes through the proxy."""
    monkeypatch.setenv("http_proxy", proxy.url())
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port_form=f"127.0.0.1:{receiver.port}"))
    _run(tmp_path, receiver)
    assert not any(_via_proxy(receiver))
    assert proxy.requests() == []


def test_an_https_receiver_through_https_proxy_gets_a_connect_tunnel(tmp_path, monkeypatch, ca, proxy):
    """HTTPS_PROXY: an https:// receiver is reached through CONNECT, verified end to end (the proxy sees no request)."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with _https_receiver(ca) as secure:
        # The proxy fixture allows CONNECT to the plain receiver's port only: give it this one.
        proxy.close()
        tunnel = Tinyproxy(tmp_path / "proxy", connect_ports=(secure.port,))
        try:
            monkeypatch.setenv("HTTPS_PROXY", tunnel.url())
            _run(tmp_path, secure, ca_file=str(ca_file))
            carried = tunnel.requests()
        finally:
            tunnel.close()
    assert f"CONNECT 127.0.0.1:{secure.port} HTTP/1.1" in carried
    assert all(line.startswith("CONNECT ") for line in carried)  # the webhooks themselves were encrypted
    assert not any(_via_proxy(secure))


def test_proxy_credentials_from_the_url(tmp_path, ca):
    """Credentials in the proxy URL become Proxy-Authorization, for a forwarded request and for CONNECT."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "proxy").mkdir()
    with WebhookReceiver() as plain, _https_receiver(ca) as secure:
        guarded = Tinyproxy(tmp_path / "proxy", connect_ports=(secure.port,), user="alice", password="s3cret")
        try:
            _run(tmp_path / "a", plain, proxy=guarded.url("alice:s3cret"))
            _run(tmp_path / "b", secure, proxy=guarded.url("alice:s3cret"), ca_file=str(ca_file))
            carried = guarded.requests()
        finally:
            guarded.close()
    assert all(_via_proxy(plain))
    assert f"CONNECT 127.0.0.1:{secure.port} HTTP/1.1" in carried


def test_refused_proxy_credentials_say_so_and_stay_masked(tmp_path, ca):
    """A proxy answering 407 to CONNECT: a failed delivery naming the proxy (password masked) and the credentials."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "proxy").mkdir()
    with _https_receiver(ca) as secure:
        guarded = Tinyproxy(tmp_path / "proxy", connect_ports=(secure.port,), user="alice", password="s3cret")
        app = CapturedTelemetry("proxies").app("proxies")
        webhook = WebhookPlugin(secure.url, outbox_path=tmp_path / "outbox.sqlite", max_attempts=1,
                                proxy=guarded.url("alice:WRONG"), ca_file=str(ca_file))
        app.add_plugin(webhook)
        app.register("ship", lambda inputs: inputs["n"])
        try:
            app.execute_workflow("ship", {"n": 1})
            deadline = time.monotonic() + 10
            while not webhook.dead_letters() and time.monotonic() < deadline:
                time.sleep(0.05)
            (dead,) = webhook.dead_letters()
        finally:
            app.stop()
            guarded.close()
    assert secure.requests() == []
    # tinyproxy answers wrong credentials with 401 (none at all with 407): both say the credentials.
    assert "refused the credentials in its URL" in dead.last_error
    assert f"http://alice:REDACTED@127.0.0.1:{guarded.port}" in dead.last_error and "WRONG" not in dead.last_error


def test_the_tunnel_on_asyncios_own_loop_and_a_proxy_asking_for_credentials(tmp_path, ca):
    """CONNECT and TLS over it on asyncio's loop too (the poster runs uvloop's); no credentials: 407, said so;
    an unknown CA: refused."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    (tmp_path / "proxy").mkdir()
    headers = {"content-type": "application/json", "webhook-id": "msg_1"}

    async def post(pool: Pool, url: str) -> tuple[int, str | None]:
        try:
            return await pool.post(url, b"{}", headers, 5.0)
        finally:
            pool.close()

    with _https_receiver(ca) as secure:
        guarded = Tinyproxy(tmp_path / "proxy", connect_ports=(secure.port,), user="alice", password="s3cret")
        try:
            tls = client_context(ca_file=str(ca_file))
            with_credentials = Pool("t", proxy=ProxyRoutes(guarded.url("alice:s3cret")), tls=tls)
            assert asyncio.run(post(with_credentials, secure.url)) == (200, None)
            without = Pool("t", proxy=ProxyRoutes(guarded.url()), tls=tls)
            with pytest.raises(HttpError, match="answered CONNECT .* with 407 .*asks for credentials"):
                asyncio.run(post(without, secure.url))
            # The receiver's certificate is verified through the tunnel: without the private CA, refused.
            unverified = Pool("t", proxy=ProxyRoutes(guarded.url("alice:s3cret")))
            with pytest.raises(HttpError, match="through proxy .*CERTIFICATE_VERIFY_FAILED"):
                asyncio.run(post(unverified, secure.url))
        finally:
            guarded.close()
    assert len(secure.requests()) == 1


def test_an_explicit_proxy_wins_over_the_environment(tmp_path, monkeypatch, receiver, proxy):
    """proxy= sends every webhook through that proxy, whatever HTTP_PROXY and NO_PROXY say."""
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    _run(tmp_path, receiver, proxy=proxy.url())
    assert all(_via_proxy(receiver))
    assert len(proxy.requests()) == len(receiver.requests()) >= N


def test_proxy_false_ignores_the_environment(tmp_path, monkeypatch, receiver, proxy):
    """proxy=False: every webhook goes direct, though HTTP_PROXY names a proxy."""
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    monkeypatch.setenv("ALL_PROXY", proxy.url())
    _run(tmp_path, receiver, proxy=False)
    assert not any(_via_proxy(receiver))
    assert proxy.requests() == []


@pytest.mark.parametrize(("setting", "value", "named"), [
    ("proxy", "socks5://alice:s3cret@127.0.0.1:1080", "WebhookPlugin.proxy"),
    ("proxy", "http://alice:s3cret@127.0.0.1:port", "WebhookPlugin.proxy"),
    ("proxy", True, "WebhookPlugin.proxy"),
    ("HTTPS_PROXY", "socks5://alice:s3cret@127.0.0.1:1080", "HTTPS_PROXY"),
    ("http_proxy", "https://alice:s3cret@127.0.0.1:3128", "http_proxy"),
])
def test_a_proxy_url_that_cannot_work_fails_the_start(tmp_path, monkeypatch, setting, value, named):
    """A bad proxy URL, set or from the environment, fails setup naming it, its password masked."""
    kwargs = {}
    if setting == "proxy":
        kwargs["proxy"] = value
    else:
        monkeypatch.setenv(setting, value)
    app = CapturedTelemetry("proxies").app("proxies")
    with pytest.raises(PluginSetupError) as info:
        app.add_plugin(WebhookPlugin("https://127.0.0.1:9/hook", outbox_path=tmp_path / "o.sqlite", **kwargs))
    message = str(info.value)
    assert f"invalid {named}=" in message and "s3cret" not in message
    assert "expected an http:// proxy URL" in message


# Which destinations NO_PROXY sends direct (HTTP_PROXY set): urllib's rules, as curl and httpx read the same forms.
# "*", a host, a domain (and its subdomains), host:port, an IP, a list. docs/records.md lists where httpx differs.
NO_PROXY_CASES = [
    ("*", "http://hooks.example.com/x", True),
    ("example.com", "http://example.com/x", True),
    ("example.com", "http://hooks.example.com/x", True),
    ("example.com", "http://notexample.com/x", False),
    (".example.com", "http://hooks.example.com/x", True),
    ("hooks.example.com:8080", "http://hooks.example.com:8080/x", True),
    ("hooks.example.com:8080", "http://hooks.example.com:9090/x", False),
    ("10.0.0.7", "http://10.0.0.7:8000/x", True),
    ("10.0.0.7", "http://10.0.0.8/x", False),
    ("localhost, 10.0.0.7", "http://localhost:8000/x", True),
    ("EXAMPLE.com", "http://Hooks.Example.COM/x", True),
    ("::1", "http://[::1]:8000/x", True),
    ("[::1]", "http://[::1]:8000/x", True),
    ("::1", "http://[::2]:8000/x", False),
    # Where httpx decides otherwise (docs/records.md): urllib and curl take .example.com to cover example.com too,
    # and a * inside a list as no wildcard at all.
    (".example.com", "http://example.com/x", True),
    ("localhost, *", "http://hooks.example.com/x", False),
]


@pytest.mark.parametrize(("no_proxy", "url", "direct"), NO_PROXY_CASES)
def test_no_proxy_forms(monkeypatch, no_proxy, url, direct):
    """NO_PROXY's common forms decide as urllib (and curl) decide; httpx agrees but where noted."""
    from urllib.parse import urlsplit

    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    parts = urlsplit(url)
    proxy = ProxyRoutes().proxy_for(parts.scheme, parts.hostname or "", parts.port or 80)
    assert (proxy is None) is direct
