"""``AuthPlugin``: the auth plugin of Kailash Nexus's plugin API, verifying callers on every channel.

Strategies:

- ``oauth2`` / ``oidc``: a bearer JWT verified against the provider's JWKS.
  ``provider="google"`` presets Google's issuer and key set; for any other
  OIDC provider give ``issuer`` (the key set is found through
  ``/.well-known/openid-configuration``) or ``issuer`` and ``jwks_url``.
- ``jwt``: a bearer JWT signed with a shared ``secret`` (HS256) or verified
  with a ``public_key`` (RS256/ES256).
- ``api_key``: the ``X-API-Key`` header (or ``Caller(api_key=...)``), checked
  against keys stored as SHA-256 hashes.

``required_scopes={"refund": ["orders:write"]}`` sets scopes per workflow;
``scopes=[...]`` for all of them. Settings may be constructor arguments or
attributes set before ``add_plugin``, as in Kailash Nexus's plugin API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .. import settings
from ..auth.api_keys import ApiKeyStore
from ..auth.jwt import ASYMMETRIC, JwtVerifier
from ..errors import ConfigurationError
from ..middlewares.auth import AuthMiddleware, api_key, bearer
from ..plugin_base import NexusPlugin

log = logging.getLogger("nexus_otel.auth")

STRATEGIES = ("oauth2", "oidc", "jwt", "api_key")
PROVIDERS: dict[str, dict[str, Any]] = {
    "google": {
        "issuer": "https://accounts.google.com",
        "jwks_url": "https://www.googleapis.com/oauth2/v3/certs",
        "algorithms": ["RS256"],
    },
}


class AuthPlugin(NexusPlugin):
    """Verifies bearer JWTs or API keys before any workflow runs."""

    name = "auth"
    version = "1.0.0"

    def __init__(self, strategy: str = "oauth2", provider: str | None = None, *, issuer: str | None = None,
                 audience: str | Iterable[str] | None = None, jwks_url: str | None = None,
                 secret: str | None = None, public_key: str | None = None,
                 algorithms: Iterable[str] | None = None, api_keys: Mapping[str, Any] | Iterable[str] | None = None,
                 required_scopes: Mapping[str, Iterable[str]] | None = None, scopes: Iterable[str] = (),
                 leeway: float = 30, channels: Iterable[str] | None = None,
                 principal_claim: str = "sub") -> None:
        self.strategy = strategy
        self.provider = provider
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.secret = secret
        self.public_key = public_key
        self.algorithms = algorithms
        self.api_keys = api_keys
        self.required_scopes = required_scopes
        self.scopes = scopes
        self.leeway = leeway
        self.channels = channels
        self.principal_claim = principal_claim
        self.middleware: AuthMiddleware | None = None

    def __repr__(self) -> str:  # never show secrets or keys
        return f"<AuthPlugin strategy={self.strategy!r} provider={self.provider!r}>"

    def setup(self, nexus_app: Any) -> None:
        strategy = settings.choice("AuthPlugin.strategy", self.strategy, STRATEGIES)
        leeway = settings.number("AuthPlugin.leeway", self.leeway, minimum=0, maximum=600)
        required = {str(w): frozenset(s) for w, s in (self.required_scopes or {}).items()}
        counter = nexus_app.telemetry.meter.create_counter(
            "nexus.auth.failures", unit="1", description="Callers turned away, by reason.")

        def count(reason: str, workflow: str) -> None:
            counter.add(1, {"reason": reason, "workflow": workflow})

        if strategy == "api_key":
            if self.api_keys is None:
                raise ConfigurationError("AuthPlugin.api_keys", None, "keys for strategy 'api_key'")
            store = ApiKeyStore(self.api_keys)
            self.api_keys = store.named_hashes()  # keep no plain key past setup
            verify, blocking = api_key(store), False
        else:
            verify, blocking = bearer(self._jwt_verifier(strategy, float(leeway))), strategy != "jwt"
        self.middleware = AuthMiddleware(
            verify, required_scopes=required, default_scopes=frozenset(self.scopes or ()),
            channels=settings.names("AuthPlugin.channels", self.channels), blocking=blocking, on_failure=count,
        )
        nexus_app.use(self.middleware)

    def _jwt_verifier(self, strategy: str, leeway: float) -> JwtVerifier:
        issuer, jwks_url, algorithms = self.issuer, self.jwks_url, self.algorithms
        if strategy in ("oauth2", "oidc"):
            if self.provider is not None:
                preset = PROVIDERS.get(str(self.provider).lower())
                if preset is None:
                    raise ConfigurationError("AuthPlugin.provider", self.provider,
                                             "one of " + ", ".join(repr(p) for p in PROVIDERS)
                                             + ", or None with issuer=/jwks_url= for any OIDC provider")
                issuer = issuer or preset["issuer"]
                jwks_url = jwks_url or preset["jwks_url"]
                algorithms = algorithms or preset["algorithms"]
            if not issuer:
                raise ConfigurationError("AuthPlugin.issuer", issuer, "the OIDC issuer URL (or provider=...)")
            algorithms = list(algorithms or ("RS256", "ES256"))
            if self.audience is None:
                log.warning("AuthPlugin: no audience set; tokens for any client of %s are accepted "
                            "(set audience= to your client id)", issuer)
            # Without jwks_url the key set is discovered from the issuer on the first token, not here:
            # the app starts without the network, and an unreachable provider is a 503, not a crash.
            return JwtVerifier(issuer=issuer, audience=self.audience, algorithms=algorithms, jwks_url=jwks_url,
                               leeway=leeway, principal_claim=self.principal_claim, method=strategy,
                               discover=not jwks_url)
        if self.secret and self.public_key:
            raise ConfigurationError("AuthPlugin.secret", "<hidden>", "a secret or a public_key, not both")
        if not (self.secret or self.public_key):
            raise ConfigurationError("AuthPlugin.secret", None, "a shared secret or a public_key for strategy 'jwt'")
        algorithms = list(algorithms or (["HS256"] if self.secret else ["RS256", "ES256"]))
        for alg in algorithms:
            if self.public_key and alg not in ASYMMETRIC:
                raise ConfigurationError("AuthPlugin.algorithms", algorithms, "asymmetric algorithms with a public key")
        return JwtVerifier(issuer=issuer, audience=self.audience, algorithms=algorithms, secret=self.secret,
                           public_key=self.public_key, leeway=leeway, principal_claim=self.principal_claim,
                           method="jwt")
