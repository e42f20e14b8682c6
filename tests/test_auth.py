"""AuthPlugin: OIDC/JWKS bearer tokens and API keys, over HTTP, Python and the CLI; observable and hard to fool.

The identity provider is a real HTTP server on 127.0.0.1 (``tests/jwks_server.py``)
serving OIDC discovery and a JWKS of RSA 2048 keys generated per test.
"""

import json
import logging
import re
import socket
import time
import types
import urllib.request
from collections import Counter

import httpx
import pytest

from nexus_otel import Caller
from nexus_otel.auth import ApiKeyStore, hash_api_key
from nexus_otel.errors import AccessError, AuthenticationError, AuthorizationError
from nexus_otel.middlewares.auth import AuthMiddleware
from nexus_otel.plugins import AuthPlugin
from nexus_otel.serving import BackgroundServer

from .jwks_server import AUDIENCE, JwksServer, SigningKey, b64url
from .served import REPO, cli_env, nexus_otel

API_KEY = "nxk_live_7fQ2pL9sWm4ZtR8vXc1BnH6yJd3KgE5a"
WRONG_KEY = "nxk_live_0000000000wrongwrongwrong000000"
HS_SECRET = "hs256-shared-secret-Zx81Qm0Lw7PeR4tY"
OTHER_SECRET = "hs256-not-the-secret-Kq20Vb7Nc4Ue9Ws"
HTTP_TIMEOUT = 10


# -- helpers --------------------------------------------------------------------
@pytest.fixture
def idp():
    """A JWKS/OIDC server on 127.0.0.1, stopped after the test."""
    with JwksServer() as server:
        yield server


def oidc_app(capture, idp, mode="discovery", **options):
    """An app with workflows ``order`` (no scope) and ``refund`` (orders:write), guarded by OIDC."""
    app = capture.app("shop")
    source = {"issuer": idp.url} if mode == "discovery" else {"issuer": idp.url, "jwks_url": idp.jwks_url}
    plugin = AuthPlugin(strategy="oidc", audience=AUDIENCE, required_scopes={"refund": ["orders:write"]},
                        **source, **options)
    app.add_plugin(plugin)
    app.register("order", lambda inputs: {"ordered": True})
    app.register("refund", lambda inputs: {"refunded": True})
    principals = []
    app.on_workflow_completed(lambda event: principals.append(event.principal))
    app.on_workflow_failed(lambda event: principals.append(event.principal))
    return app, plugin, principals


def post(url, workflow, token=None, api_key=None):
    headers = {}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if api_key is not None:
        headers["x-api-key"] = api_key
    return httpx.post(f"{url}/workflows/{workflow}", json={}, headers=headers, timeout=HTTP_TIMEOUT)


def assert_rejected(response, status, reason):
    """Status, JSON ``reason`` and an RFC 6750 ``WWW-Authenticate`` header that fits the status."""
    assert response.status_code == status, (reason, response.status_code, response.text)
    body = response.json()
    assert body["reason"] == reason, body
    challenge = response.headers.get("www-authenticate", "")
    assert challenge.startswith("Bearer "), challenge
    if status == 403:
        assert 'error="insufficient_scope"' in challenge, challenge
    elif reason != "missing":
        assert 'error="invalid_token"' in challenge, challenge


def now():
    return int(time.time())


def rejection_cases(idp):
    """``(label, token, workflow, status, reason)`` for every way a bearer token must fail."""
    t = now()
    impostor = SigningKey(kid=idp.key.kid)  # another key claiming the real key's id
    return [
        ("no token", None, "order", 401, "missing"),
        ("not a JWT", "not-a-jwt-at-all", "order", 401, "malformed"),
        ("expired", idp.token(iat=t - 900, nbf=t - 900, exp=t - 120), "order", 401, "expired"),
        ("not yet valid", idp.token(nbf=t + 300), "order", 401, "not_yet_valid"),
        ("wrong issuer", idp.token(iss="https://evil.example"), "order", 401, "bad_issuer"),
        ("wrong audience", idp.token(aud="someone-else"), "order", 401, "bad_audience"),
        ("bad signature", idp.token(key=impostor), "order", 401, "bad_signature"),
        ("alg none", idp.unsigned_token(), "order", 401, "bad_algorithm"),
        ("HS256 with the RSA public key", idp.hs256_with_public_key(), "order", 401, "bad_algorithm"),
        ("missing scope", idp.token(scope="orders:read"), "refund", 403, "insufficient_scope"),
    ]


def span_text(capture):
    """Everything an exporter would receive, as text."""
    return json.dumps([
        {"name": s.name, "attributes": dict(s.attributes or {}), "status": s.status.description,
         "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in s.events],
         "links": [dict(link.attributes or {}) for link in s.links],
         "resource": dict(s.resource.attributes)}
        for s in capture.spans
    ], default=str)


def reachable_strings(root, depth=8):
    """Strings and bytes reachable from ``root`` (attributes, containers, closures); and ApiKeyStores met."""
    seen, strings, stores = set(), [], []

    def walk(obj, d):
        if d < 0 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, str):
            strings.append(obj)
            return
        if isinstance(obj, (bytes, bytearray)):
            strings.extend([bytes(obj).decode("latin-1"), bytes(obj).hex()])
            return
        if isinstance(obj, (int, float, bool, type(None), type, types.ModuleType)):
            return
        if type(obj).__module__.startswith("opentelemetry"):
            return
        if isinstance(obj, ApiKeyStore):
            stores.append(obj)
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(k, d - 1)
                walk(v, d - 1)
            return
        if isinstance(obj, (list, tuple, set, frozenset)):
            for item in obj:
                walk(item, d - 1)
            return
        if isinstance(obj, types.MethodType):
            walk(obj.__self__, d - 1)
            walk(obj.__func__, d - 1)
            return
        if isinstance(obj, types.FunctionType):
            for cell in obj.__closure__ or ():
                walk(cell.cell_contents, d - 1)
            walk(obj.__defaults__, d - 1)
            walk(obj.__kwdefaults__, d - 1)
            return
        if hasattr(obj, "__dict__"):
            walk(vars(obj), d - 1)
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                walk(getattr(obj, name), d - 1)

    walk(root, depth)
    return strings, stores


# -- 1. the snippet of Kailash Nexus's plugin API ------------------------------------------------------------
def test_seed_snippet_registers_google_auth_without_network(capture, monkeypatch):
    """Kailash Nexus's plugin API's AuthPlugin lines run as written (import changed), offline, and guard workflows."""
    def no_network(*args, **kwargs):
        raise AssertionError("AuthPlugin set-up must not use the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    app = capture.app("seed")

    auth_plugin = AuthPlugin()
    auth_plugin.strategy = "oauth2"
    auth_plugin.provider = "google"
    app.add_plugin(auth_plugin)

    assert app.plugins.list() == ["auth"]
    assert isinstance(auth_plugin.middleware, AuthMiddleware)
    assert auth_plugin.middleware in app.middleware
    app.register("hello", lambda inputs: {"hi": True})
    with app:  # a call without a token is turned away before any key is needed
        with pytest.raises(AuthenticationError) as caught:
            app.execute_workflow("hello", {})
    assert caught.value.reason == "missing"
    assert capture.metric_value("nexus.auth.failures", reason="missing", workflow="hello") == 1


# -- 2. OIDC against a real JWKS server --------------------------------------------
@pytest.mark.parametrize("mode", ["discovery", "jwks_url"])
def test_valid_token_passes_and_names_the_principal(capture, idp, mode):
    """A valid RS256 token: 200, enduser.id/enduser.scope on the workflow span, event.principal for hooks."""
    app, plugin, principals = oidc_app(capture, idp, mode)
    assert idp.discovery_fetches == 0  # nothing is fetched at start: the first token discovers
    with BackgroundServer(app) as url:
        response = post(url, "refund", idp.token())
        again = post(url, "refund", idp.token())
    assert response.status_code == 200 and again.status_code == 200, response.text
    assert idp.discovery_fetches == (1 if mode == "discovery" else 0)
    assert response.json()["result"] == {"refunded": True}
    span = capture.spans_named("workflow refund")[0]
    assert span.status.is_ok
    assert span.attributes["enduser.id"] == "user-ada"
    assert span.attributes["enduser.scope"] == "orders:read orders:write"
    assert span.attributes["nexus.auth.method"] == "oidc"
    assert [(p.id, p.scopes, p.method) for p in principals] == [
        ("user-ada", frozenset({"orders:read", "orders:write"}), "oidc")] * 2
    assert idp.jwks_fetches == 1
    assert capture.metric_points("nexus.auth.failures") == []


def test_an_unreachable_identity_provider_is_a_503_not_a_crash(capture):
    """An issuer nobody answers for: the app starts; a token gets 503 provider_unavailable, counted; no traceback."""
    from .ports import free_port

    app = capture.app("shop")
    app.add_plugin(AuthPlugin(strategy="oidc", issuer=f"http://127.0.0.1:{free_port()}", audience=AUDIENCE))
    app.register("order", lambda inputs: {"ordered": True})
    with BackgroundServer(app) as url:
        first = post(url, "order", "a.b.c")  # malformed: turned away before any key is needed
        import jwt as pyjwt

        key = SigningKey()
        token = pyjwt.encode({"sub": "x", "exp": int(time.time()) + 60}, key.private, algorithm="RS256",
                             headers={"kid": key.kid})
        down = post(url, "order", token)
    assert first.status_code == 401
    assert down.status_code == 503, down.text
    assert down.json()["reason"] == "provider_unavailable" and "retry-after" in down.headers
    assert capture.metric_value("nexus.auth.failures", reason="provider_unavailable", workflow="order") == 1


@pytest.mark.parametrize("mode", ["discovery", "jwks_url"])
def test_bad_tokens_are_rejected_with_status_and_reason(capture, idp, mode):
    """Expired, not yet valid, wrong iss/aud, bad signature, alg none, HS256 confusion, missing scope: 401/403."""
    app, plugin, principals = oidc_app(capture, idp, mode)
    cases = rejection_cases(idp)
    t = now()
    with BackgroundServer(app) as url:
        assert post(url, "order", idp.token()).status_code == 200  # the JWKS is now cached
        assert post(url, "order", idp.token(exp=t - 5)).status_code == 200  # within the 30 s leeway
        fetched = idp.jwks_fetches
        for _label, token, workflow, status, reason in cases:
            assert_rejected(post(url, workflow, token), status, reason)
        assert idp.jwks_fetches == fetched, "no rejection above needed the key set again"
        assert_rejected(post(url, "order", idp.token(kid="no-such-key")), 401, "unknown_key")
        assert idp.jwks_fetches == fetched + 1, "an unknown kid refetches the JWKS exactly once"
        granted = post(url, "refund", idp.token(scope="orders:write"))
    assert granted.status_code == 200, granted.text
    failed = [s for s in capture.spans_named("workflow order") + capture.spans_named("workflow refund")
              if not s.status.is_ok]
    assert len(failed) == len(cases) + 1
    assert all("enduser.id" not in s.attributes for s in failed)
    scope_span = [s for s in failed if s.name == "workflow refund"]
    assert len(scope_span) == 1 and scope_span[0].attributes["error.type"].endswith("AuthorizationError")
    expected = Counter((reason, workflow) for _, _, workflow, _, reason in cases)
    expected[("unknown_key", "order")] += 1
    counted = {(p.attributes["reason"], p.attributes["workflow"]): p.value
               for p in capture.metric_points("nexus.auth.failures")}
    assert counted == dict(expected)


def test_python_channel_raises_access_errors_with_reasons(capture, idp):
    """execute_workflow raises AuthenticationError/AuthorizationError with .reason; a valid token runs."""
    app, plugin, principals = oidc_app(capture, idp, "jwks_url")
    t = now()
    with app:
        assert app.execute_workflow("order", {}, caller=Caller(bearer_token=idp.token())) == {"ordered": True}
        with pytest.raises(AuthenticationError) as expired:
            app.execute_workflow("order", {}, caller=Caller(bearer_token=idp.token(exp=t - 120)))
        with pytest.raises(AuthenticationError) as audience:
            app.execute_workflow("order", {}, caller=Caller(bearer_token=idp.token(aud="other")))
        with pytest.raises(AuthorizationError) as scope:
            app.execute_workflow("refund", {}, caller=Caller(bearer_token=idp.token(scope="orders:read")))
    assert (expired.value.reason, expired.value.status, expired.value.workflow) == ("expired", 401, "order")
    assert audience.value.reason == "bad_audience"
    assert (scope.value.reason, scope.value.status, scope.value.workflow) == ("insufficient_scope", 403, "refund")
    assert "orders:write" in str(scope.value)
    assert [p.id if p else None for p in principals] == ["user-ada", None, None, None]


def test_rotated_jwks_is_picked_up_without_restart(capture, idp):
    """After the IdP rotates keys, new-kid tokens pass at once and old-kid tokens fail as unknown_key."""
    app, plugin, principals = oidc_app(capture, idp, "discovery")
    old_token = idp.token()
    with BackgroundServer(app) as url:
        assert post(url, "order", old_token).status_code == 200
        assert idp.jwks_fetches == 1
        old_kid, new = idp.key.kid, idp.rotate()
        assert new.kid != old_kid
        new_token = idp.token()
        assert post(url, "order", new_token).status_code == 200
        assert idp.jwks_fetches == 2, "the new kid refetched the key set once"
        assert post(url, "order", new_token).status_code == 200
        assert idp.jwks_fetches == 2, "a known kid is served from the cache"
        assert_rejected(post(url, "order", old_token), 401, "unknown_key")
        assert idp.jwks_fetches == 3
    assert [p.id for p in principals if p] == ["user-ada"] * 3
    assert capture.metric_value("nexus.auth.failures", reason="unknown_key") == 1


# -- 3. API keys -----------------------------------------------------------------------
@pytest.mark.parametrize("form", ["plain", "hashed"])
def test_api_keys_pass_fail_and_are_stored_only_as_hashes(capture, form):
    """X-API-Key and Caller(api_key=...) pass with the key, fail otherwise; only sha256: hashes are kept."""
    configured = API_KEY if form == "plain" else hash_api_key(API_KEY)
    plugin = AuthPlugin(strategy="api_key", api_keys={"ci": configured})
    app = capture.app("keys")
    app.add_plugin(plugin)
    app.register("order", lambda inputs: {"ordered": True})
    stored = hash_api_key(API_KEY)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored)

    strings, stores = reachable_strings(plugin)
    assert len(stores) == 1 and stores[0].stored_forms() == [stored]
    assert not [s for s in strings if API_KEY in s], "the plain key is still reachable from the plugin"
    assert any(stored in s for s in strings)
    assert API_KEY not in repr(plugin) and API_KEY not in repr(vars(plugin))

    with BackgroundServer(app) as url:
        ok = post(url, "order", api_key=API_KEY)
        wrong = post(url, "order", api_key=WRONG_KEY)
        the_hash = post(url, "order", api_key=stored)  # the stored form is not a key
        none = post(url, "order")
    assert ok.status_code == 200, ok.text
    assert_rejected(wrong, 401, "invalid_api_key")
    assert_rejected(the_hash, 401, "invalid_api_key")
    assert_rejected(none, 401, "missing")
    span = capture.spans_named("workflow order")[0]
    assert span.attributes["enduser.id"] == "ci" and span.attributes["nexus.auth.method"] == "api_key"

    python_app = capture.app("keys-python")  # a served app is stopped with its server
    python_app.add_plugin(AuthPlugin(strategy="api_key", api_keys={"ci": configured}))
    python_app.register("order", lambda inputs: {"ordered": True})
    with python_app:
        assert python_app.execute_workflow("order", {}, caller=Caller(api_key=API_KEY)) == {"ordered": True}
        with pytest.raises(AuthenticationError) as caught:
            python_app.execute_workflow("order", {}, caller=Caller(api_key=WRONG_KEY))
    assert caught.value.reason == "invalid_api_key"
    assert capture.metric_value("nexus.auth.failures", reason="invalid_api_key") == 3


def test_cli_run_with_api_key(tmp_path):
    """`nexus-otel run --api-key`: the right key prints the result; a wrong one exits 1 with access denied."""
    env = cli_env(tmp_path / "data", GUARDED_API_KEY_HASH=hash_api_key(API_KEY))
    target = "tests.apps.guarded:app"
    ok = nexus_otel("run", target, "refund", "--input", '{"order": "A-7"}', "--api-key", API_KEY,
                    env=env, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"refunded": "A-7"}
    assert re.search(r"trace_id: [0-9a-f]{32}", ok.stderr)

    denied = nexus_otel("run", target, "refund", "--api-key", WRONG_KEY, env=env, cwd=REPO)
    assert denied.returncode == 1, (denied.stdout, denied.stderr)
    assert "access denied" in denied.stderr and "invalid_api_key" in denied.stderr
    assert denied.stdout == ""

    missing = nexus_otel("run", target, "refund", env=env, cwd=REPO)
    assert missing.returncode == 1 and "access denied (missing)" in missing.stderr

    outputs = ok.stdout + ok.stderr + denied.stdout + denied.stderr
    stored = "".join(p.read_text(errors="replace") for p in (tmp_path / "data").rglob("*") if p.is_file()
                     and p.suffix in (".jsonl", ".json", ".txt", ".log"))
    for secret in (API_KEY, WRONG_KEY):
        assert secret not in outputs and secret not in stored


# -- 4. no secret anywhere ---------------------------------------------------------------
def test_no_token_key_or_secret_reaches_spans_logs_or_error_bodies(capture, idp, caplog):
    """Every failure case above, and the successes: no token, key or secret in spans, logs, bodies or headers."""
    caplog.set_level(logging.DEBUG, logger="nexus_otel")
    caplog.set_level(logging.DEBUG, logger="uvicorn")
    t = now()
    responses, errors, secrets = [], [], {API_KEY, WRONG_KEY, HS_SECRET, OTHER_SECRET}

    def remember(token):
        if token:
            secrets.add(token)
            signature = token.rsplit(".", 1)[-1]
            if len(signature) >= 16:
                secrets.add(signature)
        return token

    # OIDC: every rejection, the unknown kid, a success, after a rotation the old token.
    app, _, _ = oidc_app(capture, idp, "discovery")
    cases = rejection_cases(idp)
    with BackgroundServer(app) as url:
        valid = remember(idp.token())
        responses.append(post(url, "order", valid))
        for _, token, workflow, _, _ in cases:
            responses.append(post(url, workflow, remember(token)))
        responses.append(post(url, "order", remember(idp.token(kid="no-such-key"))))
        idp.rotate()
        responses.append(post(url, "order", remember(idp.token())))
        responses.append(post(url, "order", valid))  # old kid now unknown
    python_app, _, _ = oidc_app(capture, idp, "jwks_url")  # a served app is stopped with its server
    cases = rejection_cases(idp)  # signed with the rotated key
    with python_app:
        for _, token, workflow, _, _ in cases:
            with pytest.raises(AccessError) as caught:
                python_app.execute_workflow(workflow, {}, caller=Caller(bearer_token=remember(token)))
            errors.append(caught.value)

    # A shared-secret JWT app: valid, wrong secret, expired, alg none.
    jwt_app = capture.app("hs")
    jwt_app.add_plugin(AuthPlugin(strategy="jwt", secret=HS_SECRET, issuer=idp.url, audience=AUDIENCE))
    jwt_app.register("order", lambda inputs: {"ordered": True})
    import jwt as pyjwt

    hs = [remember(pyjwt.encode(idp.claims(**claims), key, algorithm="HS256")) for key, claims in (
        (HS_SECRET, {}), (OTHER_SECRET, {}), (HS_SECRET, {"exp": t - 120}))]
    with BackgroundServer(jwt_app) as url:
        for token in hs + [remember(idp.unsigned_token()), remember(idp.token())]:
            responses.append(post(url, "order", token))

    # API keys: valid, wrong, the stored hash.
    key_app = capture.app("keys")
    key_app.add_plugin(AuthPlugin(strategy="api_key", api_keys={"ci": API_KEY}))
    key_app.register("order", lambda inputs: {"ordered": True})
    with BackgroundServer(key_app) as url:
        for key in (API_KEY, WRONG_KEY, hash_api_key(API_KEY)):
            responses.append(post(url, "order", api_key=key))
    key_python = capture.app("keys-python")
    key_python.add_plugin(AuthPlugin(strategy="api_key", api_keys={"ci": API_KEY}))
    key_python.register("order", lambda inputs: {"ordered": True})
    with key_python:
        with pytest.raises(AuthenticationError) as caught:
            key_python.execute_workflow("order", {}, caller=Caller(api_key=WRONG_KEY))
        errors.append(caught.value)

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 4 and statuses.count(401) + statuses.count(403) == len(responses) - 4, statuses
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    log_text = "\n".join(formatter.format(r) for r in caplog.records
                         if r.name.startswith(("nexus_otel", "uvicorn")))
    sinks = {
        "spans": span_text(capture),
        "logs": log_text,
        "bodies": "\n".join(r.text for r in responses),
        "headers": "\n".join(json.dumps(dict(r.headers)) for r in responses),
        "python errors": "\n".join(f"{e!s} {e!r} {vars(e)!r}" for e in errors),
    }
    assert len(capture.spans_named("workflow order")) >= len(responses) - 1
    assert sinks["bodies"].count('"reason"') == len(responses) - 4
    leaks = [(name, secret[:12] + "...") for name, text in sinks.items() for secret in secrets if secret in text]
    assert leaks == []
    # The search is not vacuous: the sinks hold what the calls produced.
    assert "enduser.id" in sinks["spans"] and "AuthenticationError" in sinks["spans"]
    assert "bad_signature" in sinks["bodies"] and 'error=\\"invalid_token\\"' in sinks["headers"]


# -- 5. failures counted by reason ----------------------------------------------------
def test_failures_are_counted_by_reason(capture, idp):
    """nexus.auth.failures has one point per (reason, workflow), successes are not counted."""
    app, _, _ = oidc_app(capture, idp, "jwks_url")
    t = now()
    calls = [
        ("order", None), ("order", "garbage"), ("order", idp.token(exp=t - 120)),
        ("order", idp.token(exp=t - 300)), ("order", idp.token(nbf=t + 300)),
        ("order", idp.token(iss="https://evil.example")), ("order", idp.token(aud="x")),
        ("order", idp.token(key=SigningKey(kid=idp.key.kid))), ("order", idp.unsigned_token()),
        ("order", idp.hs256_with_public_key()), ("order", idp.token(kid="nope")),
        ("order", idp.token(sub=None)), ("refund", idp.token(scope="orders:read")),
        ("refund", idp.token(scope="orders:read")),
    ]
    with app:
        for _ in range(3):
            app.execute_workflow("order", {}, caller=Caller(bearer_token=idp.token()))
        app.execute_workflow("refund", {}, caller=Caller(bearer_token=idp.token()))
        for workflow, token in calls:
            with pytest.raises(AccessError):
                app.execute_workflow(workflow, {}, caller=Caller(bearer_token=token))
    expected = {
        ("missing", "order"): 1, ("malformed", "order"): 1, ("expired", "order"): 2,
        ("not_yet_valid", "order"): 1, ("bad_issuer", "order"): 1, ("bad_audience", "order"): 1,
        ("bad_signature", "order"): 1, ("bad_algorithm", "order"): 2, ("unknown_key", "order"): 1,
        ("missing_claim", "order"): 1, ("insufficient_scope", "refund"): 2,
    }
    points = capture.metric_points("nexus.auth.failures")
    got = {(p.attributes["reason"], p.attributes["workflow"]): p.value for p in points}
    assert got == expected
    assert capture.metric_value("nexus.auth.failures") == len(calls)
    assert capture.metric_value("nexus.workflow.executions", workflow="order", status="completed") == 3


# -- attacker-chosen headers -------------------------------------------------------------------
def test_alg_header_is_not_echoed_into_www_authenticate(capture, idp):
    """An attacker-chosen alg cannot add parameters to WWW-Authenticate or turn a 401 into a 500."""
    app, _, _ = oidc_app(capture, idp, "jwks_url")

    def with_alg(alg):
        header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": idp.key.kid}).encode())
        return header + "." + b64url(json.dumps(idp.claims()).encode()) + ".c2ln"

    with BackgroundServer(app) as url:
        injected = post(url, "order", with_alg('x", error="insufficient_scope'))
        unicode = post(url, "order", with_alg("RS256\u20ac"))
    assert injected.status_code == 401
    assert injected.headers["www-authenticate"].count("error=") == 1, injected.headers["www-authenticate"]
    assert unicode.status_code == 401, unicode.text


def test_alg_that_does_not_fit_the_jwks_key_is_a_401(capture, idp):
    """alg ES256 (allowed by default) with the kid of an RSA key is an authentication failure, not a crash."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    app, _, _ = oidc_app(capture, idp, "jwks_url")
    token = pyjwt.encode(idp.claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                         headers={"kid": idp.key.kid})
    with BackgroundServer(app) as url:
        response = post(url, "order", token)
    assert response.status_code == 401, response.text
    assert capture.metric_value("nexus.auth.failures", workflow="order") == 1
