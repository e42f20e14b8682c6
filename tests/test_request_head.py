"""The webhook request head (``exporters/request_head.py``) against h11 and httpx, the libraries whose rules it follows.

- What a user configures is checked at setup: header names and URLs h11 refuses fail
  ``WebhookPlugin``'s setup with a ConfigurationError naming the setting (never a header's value).
- The heads :func:`request_bytes` writes are compared with h11's for the same inputs, over
  generated ones: byte for byte wherever h11 writes one.
- A URL's path and query are percent-encoded, and its host IDNA-encoded, as httpx does
  (compared over generated URLs); a real request with a space in its path and one to a
  non-ASCII host name reach a real receiver as the encoded forms.
"""

from __future__ import annotations

import dataclasses

import h11
import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nexus_otel.errors import ConfigurationError, PluginSetupError
from nexus_otel.exporters.http1 import HttpError, Target, request_bytes
from nexus_otel.exporters.http_poster import ConcurrentPoster, Post, Reply
from nexus_otel.exporters.request_head import check_headers, check_url
from nexus_otel.exporters.webhook import SIGNATURE_HEADERS, message_id_of
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.testing import CapturedTelemetry

from .webhook_receiver import WebhookReceiver

SECRET = "s3cret-Bearer-value"
TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Header values and names are drawn mostly from what is valid, with the characters that make them invalid mixed in.
TRICKY = " \t\r\n\x00\x01\x7f:\"(),;=@[]{}é\u2028"
SOME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def app():
    capture = CapturedTelemetry("x")
    yield capture.app("x")
    capture.shutdown()


def setup_error(app, tmp_path, url="http://127.0.0.1:9/hook", **kwargs) -> ConfigurationError:
    """The ConfigurationError that adding a WebhookPlugin with these settings fails with."""
    with pytest.raises(PluginSetupError) as info:
        app.add_plugin(WebhookPlugin(url, outbox_path=tmp_path / "o.sqlite", **kwargs))
    cause = info.value.__cause__
    assert isinstance(cause, ConfigurationError), repr(info.value)
    return cause


def h11_refuses(name: str, value: str) -> bool:
    try:
        h11.Request(method="POST", target="/", headers=[("Host", "h"), (name, value)])
    except (h11.LocalProtocolError, UnicodeError):
        return True
    return False


# -- setup: what users configure ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["X-Tenant ", " X-Tenant", "X-Ten\x00ant", "X:Tenant", "X-Tenant: 1", "X Tenant",
                                  "", "Tenänt", "X-Tenant\r\nX-Injected"])
def test_header_names_h11_refuses_fail_setup(app, tmp_path, name):
    assert h11_refuses(name, "v")  # the premise: these are h11's refusals
    error = setup_error(app, tmp_path, headers={name: SECRET})
    assert error.setting == "WebhookPlugin.headers"
    assert "token" in str(error) and SECRET not in str(error)


@pytest.mark.parametrize("value", [f"{SECRET}\r\nX-Injected: 1", f"{SECRET}\x00", f" {SECRET}", f"{SECRET}\t",
                                   f"{SECRET}\x01", f"{SECRET}é"])
def test_bad_header_values_fail_setup_naming_the_header_not_its_value(app, tmp_path, value):
    error = setup_error(app, tmp_path, headers={"Authorization": value})
    assert error.setting == "WebhookPlugin.headers"
    assert "Authorization" in str(error) and SECRET not in str(error)


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "webhook-id", "Webhook-Signature",
                                  "webhook-timestamp"])
def test_headers_the_client_or_the_signature_writes_are_refused(app, tmp_path, name):
    error = setup_error(app, tmp_path, headers={name: "x"})
    assert "nexus-otel writes those itself" in str(error)


def test_a_header_given_twice_is_refused(app, tmp_path):
    error = setup_error(app, tmp_path, headers={"X-Tenant": "a", "x-tenant": "b"})
    assert "each header name once" in str(error)


@pytest.mark.parametrize("path", ["/hook\x00", "/ho\x7fok", "/hook\nX-Injected: 1", "/hook\t", "/hook?q=\x01"])
def test_urls_with_control_characters_fail_setup_with_credentials_masked(app, tmp_path, path):
    assert h11_refuses_target(path)  # the premise: h11 refuses these targets
    error = setup_error(app, tmp_path, url=f"http://user:{SECRET}@127.0.0.1:9{path}")
    assert error.setting == "WebhookPlugin.webhook_url"
    assert "control character" in str(error) and SECRET not in str(error) and "REDACTED" in str(error)


@pytest.mark.parametrize("url", ["http://exa mple.com/", "http://-bad-.bücher.example/", "http://999.1.1.1/",
                                 "http://[::1/", "ftp://host/", "http:///path", "http://host:99999/"])
def test_urls_that_cannot_be_requested_fail_setup(app, tmp_path, url):
    assert setup_error(app, tmp_path, url=url).setting == "WebhookPlugin.webhook_url"


def h11_refuses_target(target: str) -> bool:
    try:
        h11.Request(method="POST", target=target, headers=[("Host", "h")])
    except (h11.LocalProtocolError, UnicodeError):
        return True
    return False


@SOME
@given(st.text(TOKEN_CHARS + TRICKY, max_size=12), st.text(TOKEN_CHARS + TRICKY, max_size=12))
def test_configured_headers_are_refused_whenever_h11_refuses_them(name, value):
    """h11 refuses it => refused at setup; and anything accepted at setup is a head request_bytes writes."""
    assume(name.lower() not in {"host", "content-length", "transfer-encoding"} | SIGNATURE_HEADERS)
    try:
        checked = check_headers("WebhookPlugin.headers", {name: value})
    except ConfigurationError:
        return
    assert not h11_refuses(name, value)
    request_bytes(Target.of("http://h/"), b"", checked, "ua")  # must not raise


# -- request heads, compared with h11's ------------------------------------------------------------------------

def h11_request(target: Target, body: bytes, fields: list[tuple[str, str]]) -> bytes:
    """h11's bytes for a POST with these header fields, in this order, and this body."""
    connection = h11.Connection(h11.CLIENT)
    events = (h11.Request(method="POST", target=target.path, headers=fields), h11.Data(data=body), h11.EndOfMessage())
    return b"".join(connection.send(event) or b"" for event in events)


names = st.text(st.sampled_from(TOKEN_CHARS + ": ("), min_size=1, max_size=10).filter(
    lambda n: n.lower() not in {"host", "accept", "user-agent", "authorization", "content-length", "transfer-encoding"})
values = st.text(st.sampled_from(TOKEN_CHARS + TRICKY + "/,= "), max_size=16)


@SOME
@given(url=st.sampled_from(["http://127.0.0.1:9/h", "https://u:p@hooks.example.com/a/b?x=1", "http://[::1]:8080/",
                            "http://bücher.example/ä ö?q=ü"]),
       headers=st.lists(st.tuples(names, values), max_size=5), user_agent=values,
       body=st.binary(max_size=64))
def test_request_heads_are_h11s_byte_for_byte(url, headers, user_agent, body):
    """Where h11 writes a request, request_bytes writes the same bytes, or refuses for RFC 9110's stricter rule.

    The fields handed to h11 are ours in the documented order: Host, Accept, User-Agent,
    Authorization (the URL's credentials), the caller's, Content-Length. The one difference
    allowed: h11 lets control characters other than NUL, CR, LF and TAB (and DEL) through in a
    value, which RFC 9110's ``field-vchar`` (VCHAR / obs-text) does not; request_bytes refuses
    those. Names and values are ``str``, which h11 takes as ASCII only, as request_bytes does.
    """
    target = Target.of(url)
    given_headers = dict(headers)
    fields = [("host", target.host_header), ("accept", "*/*"), ("user-agent", user_agent)]
    if target.authorization:
        fields.append(("authorization", target.authorization))
    fields += list(given_headers.items()) + [("content-length", str(len(body)))]
    try:
        theirs: bytes | None = h11_request(target, body, fields)
    except (h11.LocalProtocolError, UnicodeError):
        theirs = None
    try:
        ours: bytes | None = request_bytes(target, body, given_headers, user_agent)
    except HttpError:
        ours = None
    if ours is not None:
        assert ours == theirs
    elif theirs is not None:  # refused by RFC 9110's rule alone: a control character h11 lets through
        assert any(c in "\x01\x7f" for _, value in fields for c in value), fields


def test_a_callers_defaults_take_their_place_and_the_clients_own_are_left_out():
    target = Target.of("http://user:pw@127.0.0.1:9/h")
    ours = request_bytes(target, b"{}", {"User-Agent": "mine/1", "Host": "elsewhere", "Content-Length": "99",
                                          "Authorization": "Bearer t", "X-Tenant": "acme"}, "ua")
    assert ours == h11_request(target, b"{}", [("host", "127.0.0.1:9"), ("accept", "*/*"), ("user-agent", "mine/1"),
                                               ("authorization", "Bearer t"), ("X-Tenant", "acme"),
                                               ("content-length", "2")])


def test_a_target_made_otherwise_is_checked_too():
    """A Target made otherwise than by ``Target.of`` (a proxy's absolute form is one) is checked as it is made."""
    target = Target.of("http://127.0.0.1:9/h")
    absolute = dataclasses.replace(target, path=f"http://{target.host_header}{target.path}")
    assert request_bytes(absolute, b"", {}, "ua").startswith(b"POST http://127.0.0.1:9/h HTTP/1.1\r\n")
    for bad in ({"path": "/a b"}, {"path": "/a\r\nX: 1"}, {"host_header": "h\x01"}, {"authorization": "Basic \x00"}):
        with pytest.raises(ValueError, match="h11 refuses|control character"):
            dataclasses.replace(target, **bad)
    with pytest.raises(HttpError, match="user-agent"):
        request_bytes(target, b"", {}, "ua\r\nX-Injected: 1")


def test_a_hostile_webhook_id_cannot_break_the_head():
    """An id with a line break: encoded in ``webhook-id``; and a raw one is refused, named, its value not shown."""
    hostile = "wf\r\nX-Injected: 1\x00é"
    message_id = message_id_of(hostile)
    assert message_id == "msg_wf%0D%0AX-Injected:%201%00%C3%A9"
    for plain in ("0123abcdef", "run-1_a.b~", "3f2b6c1e-8d1a-4b7e-9a55-0c6f0b1d2e3f", "tenant:42/run#7"):
        assert message_id_of(plain) == f"msg_{plain}"  # header-safe ids stay as they are
    assert message_id_of("a%20b") == "msg_a%2520b" != message_id_of("a b") == "msg_a%20b"  # never the same id
    target = Target.of("http://127.0.0.1:9/h")
    assert b"X-Injected" in request_bytes(target, b"", {"webhook-id": message_id}, "ua")  # inside the value
    with pytest.raises(HttpError, match="'webhook-id' holds a line break") as info:
        request_bytes(target, b"", {"webhook-id": f"msg_{hostile}"}, "ua")
    assert "Injected" not in str(info.value)
    for bad in ("msg_\x00", "msg_é", " msg"):
        with pytest.raises(HttpError, match="webhook-id"):
            request_bytes(target, b"", {"webhook-id": bad}, "ua")


# -- URLs: paths, queries and hosts as httpx encodes them --------------------------------------------------

path_text = st.text(st.sampled_from("abz09/.-_~%2Fe?&=+;:@!$'()*, \"<>`{}|\\^[]éü€\U0001f600#"), max_size=20)
host_labels = st.text(st.sampled_from("abcxyz019-éüßΩЖ漢"), min_size=1, max_size=8)


@SOME
@given(path=path_text, hosts=st.lists(host_labels, min_size=1, max_size=3))
def test_urls_are_encoded_as_httpx_encodes_them(path, hosts):
    """The request target is httpx's ``raw_path``, the host httpx's ``raw_host``, and h11 accepts the target.

    Where httpx refuses a host (an invalid IDNA label), so does this; where this accepts a host
    httpx refuses, it is one UTS #46 maps (httpx lower-cases only), which the generated labels avoid.
    """
    url = f"http://{'.'.join(hosts)}:8080/{path}"
    try:
        reference = httpx.URL(url)
    except httpx.InvalidURL:
        reference = None
    try:
        target = check_url("WebhookPlugin.webhook_url", url)
    except ConfigurationError:
        assert reference is None, url  # refused only where httpx refuses too
        return
    assert reference is not None, url
    assert target.path == reference.raw_path.decode("ascii")
    assert target.host == reference.raw_host.decode("ascii")
    assert target.host_header == f"{target.host}:8080"
    assert not h11_refuses_target(target.path)


def test_an_internationalised_host_and_an_ipv6_literal():
    target = Target.of("https://user:pw@Bücher.Example:8443/ä ö?x=ü#frag")
    assert (target.host, target.port, target.host_header) == ("xn--bcher-kva.example", 8443,
                                                              "xn--bcher-kva.example:8443")
    assert target.path == "/%C3%A4%20%C3%B6?x=%C3%BC"
    assert Target.of("https://faß.de/").host == "xn--fa-hia.de"  # IDNA 2008 (2003 made it fass.de)
    ipv6 = Target.of("http://[::1]:8080/x")
    assert (ipv6.host, ipv6.host_header) == ("::1", "[::1]:8080")
    assert Target.of("http://[::1]:80/x").host_header == "[::1]"


def test_a_space_in_the_path_and_a_non_ascii_host_reach_a_real_receiver_encoded():
    """Real requests: the receiver sees the percent-encoded path, and the ASCII host UTS #46 maps a name to.

    ``ｌｏｃａｌｈｏｓｔ`` (full-width letters) is what UTS #46 maps to ``localhost``, which resolves here:
    the request is sent to the mapped name, not the raw one.
    """
    with WebhookReceiver() as receiver:
        poster = ConcurrentPoster(per_destination=2)
        try:
            replies = poster.post_all([
                Post(f"{receiver.base_url}/a hook/ü?q=a b&r=%41", b"{}", {"X-Tenant": "acme"}, 5.0),
                Post(f"http://ｌｏｃａｌｈｏｓｔ:{receiver.port}/idn", b"{}", {}, 5.0),
            ])
        finally:
            poster.close()
        assert [r.status if isinstance(r, Reply) else r for r in replies] == [200, 200]
        by_path = {r.path: r for r in receiver.requests()}
    assert set(by_path) == {"/a%20hook/%C3%BC?q=a%20b&r=%41", "/idn"}
    assert by_path["/a%20hook/%C3%BC?q=a%20b&r=%41"].headers["X-Tenant"] == "acme"
    assert by_path["/idn"].headers["Host"] == f"localhost:{receiver.port}"


def test_configured_headers_go_with_every_payload(app, tmp_path):
    """``headers=`` on the plugin: sent with each payload, a Content-Type replacing the default, once."""
    with WebhookReceiver() as receiver:
        app.register("w", lambda inputs: 1)
        app.add_plugin(WebhookPlugin(f"{receiver.base_url}/with space", outbox_path=tmp_path / "o.sqlite",
                                     headers={"Authorization": "Bearer t0k", "Content-Type": "application/x+json"}))
        app.execute_workflow("w", {})
        app.execute_workflow("w", {})
        received = receiver.wait_for_count(2, timeout=10)
        app.stop()
    for request in received:
        assert request.path == "/with%20space"
        assert request.headers["Authorization"] == "Bearer t0k"
        assert request.headers["Content-Type"] == "application/x+json"  # one: the receiver joins repeats with ", "
        assert request.headers["webhook-id"].startswith("msg_")
