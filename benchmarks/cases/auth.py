"""Cases (d), (d-jwt), (d-key), auth: the host with core telemetry plus ``AuthPlugin``, over the host with core
telemetry alone, both called with a fresh ``Caller`` holding the same credential every execution. Reported, no
target (the extra microseconds per execution are printed).

(d) ``strategy="oidc"`` against ``fixtures.JwksIdp`` (RS256 bearer tokens; PyJWKClient caches the key set, so the
key server must serve exactly one JWKS fetch); (d-jwt) ``strategy="jwt"`` with an HS256 shared secret; (d-key)
``strategy="api_key"`` with one stored key. Before timing one execution must carry the token's subject in
``enduser.id`` and a bad credential must be turned away, counted once in ``nexus.auth.failures``; after the rounds
that counter must still be 1."""

from __future__ import annotations

import os
from collections.abc import Callable

from fixtures import (
    AUDIENCE,
    AUXILIARY_BUDGET,
    INPUTS,
    SCOPE,
    SUBJECT,
    WORKFLOW,
    JwksIdp,
    Providers,
    claims,
    core_baseline,
    core_host,
    counted,
    metric_total,
)
from harness import Case, Side

from nexus_otel.caller import Caller
from nexus_otel.errors import AuthenticationError
from nexus_otel.plugins import AuthPlugin
from nexus_otel.telemetry import contract as c


def _forged(token: str, other: str) -> str:
    """``token``'s header and payload with ``other``'s signature: a signature that does not verify."""
    return token.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


def _auth_case(strategy: str) -> Callable[[Callable[[], float]], tuple[Side, Side]]:
    """Builds (d)'s sides for ``strategy``: "oidc" (JWKS on 127.0.0.1), "jwt" (HS256) or "api_key"."""

    def build(clock: Callable[[], float]) -> tuple[Side, Side]:
        idp = JwksIdp() if strategy == "oidc" else None
        try:
            if strategy == "oidc":
                assert idp is not None
                plugin = AuthPlugin(strategy="oidc", issuer=idp.url, audience=AUDIENCE, jwks_url=idp.jwks_url)
                token = idp.token()
                bad = _forged(token, idp.token(sub="someone-else"))

                def caller() -> Caller:
                    return Caller(bearer_token=token)

                def bad_caller() -> Caller:
                    return Caller(bearer_token=bad)
            elif strategy == "jwt":
                import jwt

                secret = os.urandom(32).hex()
                issuer = "https://idp.bench.invalid"
                plugin = AuthPlugin(strategy="jwt", secret=secret, issuer=issuer, audience=AUDIENCE)
                token = jwt.encode(claims(issuer), secret, algorithm="HS256")
                bad = jwt.encode(claims(issuer), os.urandom(32).hex(), algorithm="HS256")

                def caller() -> Caller:
                    return Caller(bearer_token=token)

                def bad_caller() -> Caller:
                    return Caller(bearer_token=bad)
            else:
                key = "bench-" + os.urandom(16).hex()
                plugin = AuthPlugin(strategy="api_key", api_keys={SUBJECT: {"key": key, "scopes": SCOPE.split()}})

                def caller() -> Caller:
                    return Caller(api_key=key)

                def bad_caller() -> Caller:
                    return Caller(api_key=key + "x")

            baseline = core_baseline(caller)
            try:
                app, providers, close_app = core_host([plugin])
            except BaseException:
                baseline.close()
                raise
        except BaseException:
            if idp is not None:
                idp.close()
            raise

        def close() -> None:
            try:
                close_app()
            finally:
                if idp is not None:
                    idp.close()

        count = [0]
        candidate = Side(f"+ auth {strategy}", counted(app.execute_workflow, caller, count), close, {
            "app": app, "providers": providers, "executions": count, "idp": idp, "strategy": strategy,
            "bad_caller": bad_caller,
        })
        return baseline, candidate

    return build


def check_auth_case(baseline: Side, candidate: Side) -> list[str]:
    """One execution is let in as the token's subject; a bad credential is turned away."""
    st = candidate.state
    providers: Providers = st["providers"]
    problems: list[str] = []
    providers.exporter.kept.clear()
    providers.exporter.keep = True
    try:
        candidate.run()
    finally:
        providers.exporter.keep = False
    workflow_spans = [s for s in providers.exporter.kept if s.name == c.WORKFLOW_SPAN.format(workflow=WORKFLOW)]
    attrs = dict(workflow_spans[0].attributes or {}) if workflow_spans else {}
    if attrs.get("enduser.id") != SUBJECT or attrs.get("nexus.auth.method") != st["strategy"]:
        problems.append(f"the workflow span does not name the caller: enduser.id={attrs.get('enduser.id')!r}, "
                        f"nexus.auth.method={attrs.get('nexus.auth.method')!r}")
    try:
        st["app"].execute_workflow(WORKFLOW, INPUTS, caller=st["bad_caller"]())
        problems.append("a bad credential was let in")
    except AuthenticationError:
        pass
    if metric_total(providers.reader, "nexus.auth.failures") != 1:
        problems.append("the rejected credential was not counted once in nexus.auth.failures")
    return problems


def final_check_auth_case(baseline: Side, candidate: Side) -> list[str]:
    """Every execution was let in (only the check's bad credential failed); the JWKS was fetched once."""
    st = candidate.state
    problems: list[str] = []
    failures = metric_total(st["providers"].reader, "nexus.auth.failures")
    if failures != 1:
        problems.append(f"nexus.auth.failures is {failures:g}, expected 1 (the check's bad credential)")
    notes = [f"{st['executions'][0]} executions let in; nexus.auth.failures {failures:g} (the check's bad credential)"]
    idp: JwksIdp | None = st["idp"]
    if idp is not None:
        if idp.fetches() != 1 or idp.counts.keys() - {"/jwks.json"}:
            problems.append(f"key server requests {idp.counts}, expected exactly 1 JWKS fetch")
        notes.append(f"key server: {idp.fetches()} JWKS fetch(es) over the check, warm-up and rounds "
                     f"(keys cached by PyJWKClient)")
    st["notes"] = notes
    return problems


CASES = [
    Case(
        key="d", title="auth, OIDC: host with AuthPlugin (RS256 bearer JWT, JWKS from 127.0.0.1, keys cached) "
                       "vs host with core telemetry (trivial workflow, 3 hooks)",
        baseline_label="core telemetry", candidate_label="+ auth oidc",
        build=_auth_case("oidc"), target=None, n=200, check=check_auth_case,
        final_check=final_check_auth_case, budget=AUXILIARY_BUDGET,
    ),
    Case(
        key="d-jwt", title="auth, variant: AuthPlugin strategy='jwt' (HS256 shared secret) vs core telemetry",
        baseline_label="core telemetry", candidate_label="+ auth jwt HS256",
        build=_auth_case("jwt"), target=None, n=200, check=check_auth_case,
        final_check=final_check_auth_case, budget=AUXILIARY_BUDGET,
    ),
    Case(
        key="d-key", title="auth, variant: AuthPlugin strategy='api_key' (one stored key) vs core telemetry",
        baseline_label="core telemetry", candidate_label="+ auth api_key",
        build=_auth_case("api_key"), target=None, n=200, check=check_auth_case,
        final_check=final_check_auth_case, budget=AUXILIARY_BUDGET,
    ),
]
