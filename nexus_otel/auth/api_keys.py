"""API keys kept only as SHA-256 hashes and compared in constant time.

``hash_api_key("...")`` gives the stored form (``sha256:<hex>``); give the
plugin that form, or plain keys, which it hashes at once and forgets. A key is
looked up by its hash; the comparison with every stored hash runs with
``hmac.compare_digest`` so timing reveals nothing about near misses.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from ..caller import Principal
from ..errors import AuthenticationError, ConfigurationError

PREFIX = "sha256:"


def hash_api_key(key: str) -> str:
    """The stored form of an API key."""
    return PREFIX + hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    """Named keys (hashed) with their scopes."""

    def __init__(self, keys: Mapping[str, Any] | Iterable[str]) -> None:
        entries: list[tuple[str, bytes, frozenset[str]]] = []
        items = keys.items() if isinstance(keys, Mapping) else ((f"key-{i + 1}", k) for i, k in enumerate(keys))
        for name, spec in items:
            scopes: Iterable[str] = ()
            if isinstance(spec, Mapping):
                scopes = spec.get("scopes", ())
                spec = spec.get("hash") or spec.get("key")
            if not isinstance(spec, str) or not spec:
                raise ConfigurationError(f"AuthPlugin.api_keys[{name!r}]", "<hidden>",
                                         "a key, or its hash_api_key() form, as a string")
            stored = spec if spec.startswith(PREFIX) else hash_api_key(spec)
            if len(stored) != len(PREFIX) + 64:
                raise ConfigurationError(f"AuthPlugin.api_keys[{name!r}]", "<hidden>", "sha256: and 64 hex digits")
            entries.append((str(name), bytes.fromhex(stored[len(PREFIX):]), frozenset(scopes)))
        if not entries:
            raise ConfigurationError("AuthPlugin.api_keys", "none", "at least one API key")
        self._entries = entries

    def verify(self, key: str) -> Principal:
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for name, stored, scopes in self._entries:  # every entry, always: constant work
            if hmac.compare_digest(digest, stored):
                found = (name, scopes)
        if found is None:
            raise AuthenticationError("invalid_api_key", "the API key is not valid")
        return Principal(found[0], found[1], "api_key")

    def named_hashes(self) -> dict[str, dict[str, Any]]:
        """``{name: {"hash": ..., "scopes": [...]}}``: the store as configuration, without a plain key."""
        return {name: {"hash": PREFIX + stored.hex(), "scopes": sorted(scopes)}
                for name, stored, scopes in self._entries}

    def stored_forms(self) -> list[str]:
        """What is kept: hashes only (for checks and audits)."""
        return [PREFIX + stored.hex() for _, stored, _ in self._entries]
