"""A tiny OIDC identity provider on 127.0.0.1 for tests: discovery, a JWKS that can rotate, token minting.

``with JwksServer() as idp:`` serves ``/.well-known/openid-configuration`` and
``/jwks.json`` from a ThreadingHTTPServer on a thread, counts requests per
path, and signs tokens with RSA 2048 keys generated here. ``idp.rotate()``
switches the served key set to a fresh key (new ``kid``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "nexus-tests"
_kids = itertools.count(1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKey:
    """An RSA 2048 key pair with a key id."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or f"test-key-{next(_kids)}"
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public = self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.public))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return jwk

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class JwksServer:
    """The identity provider; ``url`` is its issuer."""

    def __init__(self) -> None:
        self.key = SigningKey()
        self.served_keys: list[SigningKey] = [self.key]
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                with owner._lock:
                    owner.counts[path] += 1
                    keys = list(owner.served_keys)
                if path == "/.well-known/openid-configuration":
                    body = {"issuer": owner.url, "jwks_uri": owner.jwks_url,
                            "id_token_signing_alg_values_supported": ["RS256"]}
                elif path == "/jwks.json":
                    body = {"keys": [k.jwk() for k in keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.jwks_url = self.url + "/jwks.json"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="jwks-server", daemon=True)

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)

    # -- keys and counts -------------------------------------------------------
    @property
    def jwks_fetches(self) -> int:
        with self._lock:
            return self.counts["/jwks.json"]

    @property
    def discovery_fetches(self) -> int:
        with self._lock:
            return self.counts["/.well-known/openid-configuration"]

    def rotate(self) -> SigningKey:
        """Serve only a fresh key from now on; return it (tokens are then signed with it)."""
        new = SigningKey()
        with self._lock:
            self.served_keys = [new]
        self.key = new
        return new

    # -- tokens ------------------------------------------------------------------
    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.url, "aud": AUDIENCE, "sub": "user-ada", "iat": now,
                                  "nbf": now, "exp": now + 600, "scope": "orders:read orders:write"}
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(self, key: SigningKey | None = None, kid: str | None = None, **claims: Any) -> str:
        """An RS256 token signed by ``key`` (the current key), with header ``kid`` (the key's)."""
        key = key or self.key
        return jwt.encode(self.claims(**claims), key.private, algorithm="RS256",
                          headers={"kid": kid or key.kid})

    def unsigned_token(self, **claims: Any) -> str:
        """``alg: none``, crafted by hand: header.payload. with an empty signature."""
        header = {"alg": "none", "typ": "JWT", "kid": self.key.kid}
        return (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(self.claims(**claims)).encode())
                + ".")

    def hs256_with_public_key(self, **claims: Any) -> str:
        """The algorithm-confusion attack: HS256 with the RSA public key PEM as the HMAC secret."""
        header = {"alg": "HS256", "typ": "JWT", "kid": self.key.kid}
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(self.claims(**claims)).encode()))
        mac = hmac.new(self.key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return signing_input + "." + b64url(mac)
