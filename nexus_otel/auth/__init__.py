"""Verifying callers: JWTs (against a JWKS, a shared secret or a public key) and hashed API keys."""

from .api_keys import ApiKeyStore, hash_api_key
from .jwt import JwtVerifier

__all__ = ["ApiKeyStore", "JwtVerifier", "hash_api_key"]
