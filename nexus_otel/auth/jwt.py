"""Bearer JWT verification with PyJWT: pinned algorithms, ``exp``/``nbf``/``iss``/``aud`` with leeway.

Keys come from a JWKS URL (given, or discovered from the OIDC issuer on the
first token; PyJWT's ``PyJWKClient``: the key set is cached,
an unknown ``kid`` triggers one refetch, so rotated keys are picked up without
a restart), a shared secret (HS256) or a public key (RS256/ES256). Only the
configured algorithms are accepted, which rules out ``alg: none`` and the
HMAC-with-the-RSA-public-key confusion. Every failure maps to a short reason;
no error message contains the token.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterable
from typing import Any

import jwt
from jwt import PyJWKClient

from ..caller import Principal
from ..errors import AuthenticationError, AuthUnavailableError, ConfigurationError

DISCOVERY_RETRY_SECONDS = 5.0
"""After a failed discovery, tokens are turned away with 503 for this long before the next try."""
ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SYMMETRIC = ("HS256", "HS384", "HS512")


# Most specific first; the last entry catches every other PyJWT rejection.
_DECODE_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "token has expired"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "token is not valid yet (nbf/iat)"),
    (jwt.InvalidIssuerError, "bad_issuer", "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "bad_audience", "token audience is not accepted"),
    (jwt.InvalidSignatureError, "bad_signature", "token signature does not verify"),
    (jwt.InvalidAlgorithmError, "bad_algorithm", "token algorithm is not accepted"),
    (jwt.InvalidTokenError, "invalid_token", "token is not valid"),
)


class JwtVerifier:
    """Verifies a bearer token and returns the :class:`~nexus_otel.caller.Principal` it names."""

    def __init__(self, *, issuer: str | None, audience: str | Iterable[str] | None, algorithms: Iterable[str],
                 jwks_url: str | None = None, secret: str | None = None, public_key: str | None = None,
                 leeway: float = 30.0, principal_claim: str = "sub", method: str = "jwt",
                 jwks_cache_seconds: float = 300.0, jwks_refetch_cooldown: float = 0.0,
                 http_timeout: float = 5.0, discover: bool = False) -> None:
        """``discover=True`` (with ``issuer``, no ``jwks_url``): find the key set through the issuer's
        OIDC discovery document on the first token, not at start, so an app starts without the network."""
        self.algorithms = list(algorithms)
        discovering = bool(discover and not jwks_url)
        if discovering and not issuer:
            raise ConfigurationError("AuthPlugin.issuer", issuer, "the OIDC issuer URL to discover keys from")
        sources = [s for s in (jwks_url or discovering, secret, public_key) if s]
        if len(sources) != 1:
            raise ConfigurationError("AuthPlugin.keys", f"{len(sources)} key sources",
                                     "exactly one of jwks_url, secret or public_key")
        if secret and any(a not in SYMMETRIC for a in self.algorithms):
            raise ConfigurationError("AuthPlugin.algorithms", self.algorithms, "HS256/HS384/HS512 with a secret")
        if (jwks_url or discovering or public_key) and any(a not in ASYMMETRIC for a in self.algorithms):
            raise ConfigurationError("AuthPlugin.algorithms", self.algorithms,
                                     "asymmetric algorithms (RS256, ES256, ...) with a JWKS or a public key")
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.principal_claim = principal_claim
        self.method = method
        self._key = secret or public_key
        self._jwks_options = {"cache_keys": False, "lifespan": jwks_cache_seconds,
                              "cooldown_duration": jwks_refetch_cooldown, "timeout": http_timeout}
        self._http_timeout = http_timeout
        self._jwks = PyJWKClient(jwks_url, **self._jwks_options) if jwks_url else None  # type: ignore[arg-type]
        self._discovering = discovering
        self._discovery_failed_at = 0.0
        self._lock = threading.Lock()

    def _key_set(self) -> PyJWKClient:
        """The JWKS client, discovering its URL from the issuer the first time (call under ``_lock``)."""
        if self._jwks is not None:
            return self._jwks
        if time.monotonic() - self._discovery_failed_at < DISCOVERY_RETRY_SECONDS:
            raise AuthUnavailableError("provider_unavailable", "the identity provider could not be reached")
        url = str(self.issuer).rstrip("/") + "/.well-known/openid-configuration"
        try:
            with urllib.request.urlopen(url, timeout=self._http_timeout) as response:
                jwks_uri = json.load(response).get("jwks_uri")
        except Exception:
            self._discovery_failed_at = time.monotonic()
            raise AuthUnavailableError("provider_unavailable", "the identity provider could not be reached"
                                       ) from None
        if not isinstance(jwks_uri, str) or not jwks_uri:
            self._discovery_failed_at = time.monotonic()
            raise AuthUnavailableError("provider_unavailable", "the identity provider's configuration has no jwks_uri")
        self._jwks = PyJWKClient(jwks_uri, **self._jwks_options)  # type: ignore[arg-type]
        return self._jwks

    def verify(self, token: str) -> tuple[Principal, dict[str, Any]]:
        """The principal and the verified claims, or :class:`AuthenticationError` with a reason."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthenticationError("malformed", "the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in self.algorithms:  # never echo the header: it is the caller's text
            raise AuthenticationError("bad_algorithm", "the token's algorithm is not accepted") from None
        key: Any = self._key
        if self._jwks is not None or self._discovering:
            kid = header.get("kid")
            if not kid or not isinstance(kid, str):
                raise AuthenticationError("unknown_key", "token has no key id (kid)")
            try:
                with self._lock:
                    jwk = self._key_set().get_signing_key(kid)
            except jwt.PyJWKClientConnectionError:
                raise AuthUnavailableError("jwks_unavailable", "the identity provider's keys could not be fetched"
                                           ) from None
            except jwt.PyJWKSetError:
                raise AuthUnavailableError("jwks_unavailable", "the identity provider's key set has no usable keys"
                                           ) from None
            except jwt.PyJWKClientError:
                raise AuthenticationError("unknown_key", "token signed with an unknown key") from None
            if jwk.algorithm_name and jwk.algorithm_name != alg:
                raise AuthenticationError("bad_algorithm", "the token's algorithm does not match its key")
            key = jwk.key
        options: dict[str, Any] = {
            "require": ["exp"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else []),
            "verify_aud": self.audience is not None,
        }
        try:
            claims = jwt.decode(
                token, key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options=options,  # type: ignore[arg-type]
            )
        except jwt.MissingRequiredClaimError as exc:  # exc.claim is one of ours, not the caller's text
            raise AuthenticationError("missing_claim", f"token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            reason, message = next((r, m) for cls, r, m in _DECODE_ERRORS if isinstance(exc, cls))
            raise AuthenticationError(reason, message) from None
        except (TypeError, ValueError):  # a key of another type than the algorithm needs
            raise AuthenticationError("bad_algorithm", "the token's algorithm does not match its key") from None
        subject = claims.get(self.principal_claim)
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("missing_claim", f"token lacks the {self.principal_claim!r} claim")
        return Principal(subject, scopes_of(claims), self.method), claims


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    """OAuth scopes: a space-separated ``scope`` string, or an ``scp`` list (Azure, Okta)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, (list, tuple)):
        return frozenset(str(s) for s in scp)
    if isinstance(scp, str):
        return frozenset(scp.split())
    return frozenset()
