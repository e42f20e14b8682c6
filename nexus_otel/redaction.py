"""Masking secrets and truncating large values before they reach telemetry.

Workflow inputs are user data. Before any of it becomes a span attribute or a
log field it goes through a :class:`Redactor`: values under sensitive keys
are masked, long strings are cut, deep or huge structures are bounded, and a
user callback may change or drop anything further.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote_plus

from .errors import ConfigurationError

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "token", "authorization", "bearer",
    "api_key", "apikey", "access_key", "private_key", "credential", "cookie",
    "session_key", "signature", "credit_card", "card_number", "cvv", "ssn", "pin",
    "passphrase", "passcode", "pass", "pw", "jwt", "otp", "cvc", "security_code",
)
MASK = "[REDACTED]"

RedactCallback = Callable[[str, Any], Any]
"""``callback(path, value) -> value``: called for every leaf value after masking;
``path`` is dotted (``user.email``). Return the value to keep, or a replacement."""


# Credentials inside free text (exception messages, stack traces, status descriptions, User-Agent).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/:@]+:[^\s/@]+@")
_SCHEME_TOKEN = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_PAIR = re.compile(r"""(?P<key>[A-Za-z_][A-Za-z0-9_.-]*)(?P<q>["']?)(?P<sep>\s*[:=]\s*)(?P<vq>["']?)"""
                   r"""(?P<value>[^\s"',;&}\]]+)""")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def _words(key: str) -> list[str]:
    """``X-Api-Key`` -> ``["x", "api", "key"]``; ``accessToken`` -> ``["access", "token"]``."""
    return [w for w in _SEPARATORS.split(_CAMEL.sub("_", key).lower()) if w]


class Redactor:
    """A callable that returns a redacted copy of a value (never mutates it).

    Keys match case-insensitively whatever their separators or camelCase, so
    ``X-Api-Key``, ``db_password``, ``accessToken`` and
    ``http.request.header.authorization`` are all masked by the defaults.
    A sensitive name of up to four letters (``pwd``, ``ssn``, ``pin``) must be
    a whole word of the key; longer names match anywhere in it. ``extra_sensitive_keys`` adds to the
    defaults; ``sensitive_keys`` replaces them.

    Free text (exception messages and stack traces, status descriptions, the audit
    error column, User-Agent) has credentials inside it masked too: ``Bearer``/``Basic``
    tokens, JWT-shaped strings, a URL's password, and ``key=value`` or ``"key": "value"``
    pairs whose key is sensitive. ``scrub_credentials=False`` turns that off.
    """

    def __init__(
        self,
        sensitive_keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        *,
        extra_sensitive_keys: Iterable[str] = (),
        max_value_length: int = 256,
        max_items: int = 64,
        max_depth: int = 6,
        max_attribute_length: int = 4096,
        callback: RedactCallback | None = None,
        scrub_credentials: bool = True,
    ) -> None:
        for setting, value in (
            ("max_value_length", max_value_length), ("max_items", max_items),
            ("max_depth", max_depth), ("max_attribute_length", max_attribute_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Redactor.{setting}", value, "a whole number of at least 1")
        if callback is not None and not callable(callback):
            raise ConfigurationError("Redactor.callback", callback, "a callable(path, value)")
        keys = ["".join(_words(k)) for k in (*sensitive_keys, *extra_sensitive_keys)]
        self._short = frozenset(k for k in keys if 0 < len(k) <= 4)
        self._long = tuple(k for k in keys if len(k) > 4)
        self._cache: dict[str, bool] = {}
        self.max_value_length = max_value_length
        self.max_items = max_items
        self.max_depth = max_depth
        self.max_attribute_length = max_attribute_length
        self._callback = callback
        self.scrub_credentials = scrub_credentials
        """Mask credentials found inside free text (bearer tokens, JWTs, URL passwords, ``key=value`` pairs)."""

    def is_sensitive(self, key: str) -> bool:
        """Whether values under ``key`` are masked."""
        known = self._cache.get(key)
        if known is not None:
            return known
        words = _words(key)
        joined = "".join(words)
        result = any(w in self._short for w in words) or any(s in joined for s in self._long)
        if len(self._cache) < 4096:
            self._cache[key] = result
        return result

    def scrub_query(self, query: str) -> str:
        """A URL query string with the values of sensitive parameters masked (``?api_key=...&page=2``)."""
        if "=" not in query:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, sep, value = part.partition("=")
            if sep and value and self.is_sensitive(unquote_plus(name)):
                parts[i] = f"{name}={MASK}"
                changed = True
        return "&".join(parts) if changed else query

    @property
    def has_callback(self) -> bool:
        return self._callback is not None

    def scrub_credentials_in(self, text: str) -> str:
        """``text`` with credentials inside it masked: ``Bearer <token>``, JWT-shaped strings, the password
        of a URL, and the values of ``key=value`` / ``"key": "value"`` pairs whose key is sensitive."""
        if not self.scrub_credentials or not text:
            return text
        text = _USERINFO.sub(rf"\1{MASK}@", text)
        text = _SCHEME_TOKEN.sub(rf"\1\2{MASK}", text)
        text = _JWT.sub(MASK, text)
        if "=" in text or ":" in text:
            text = self._mask_pairs(text)
        return text

    def _mask_pairs(self, text: str) -> str:
        """Mask the values of sensitive ``key=value`` pairs; a pair whose key is not sensitive is searched
        again from its value on, so ``config: secret=x`` still finds ``secret=x``."""
        out: list[str] = []
        pos = 0
        while (match := _PAIR.search(text, pos)) is not None:
            value_at = match.start("value")
            out.append(text[pos:value_at])
            if match["value"] != MASK and self.is_sensitive(match["key"]):
                out.append(MASK)
                pos = match.end("value")
            else:
                pos = value_at
        out.append(text[pos:])
        return "".join(out)

    def scrub_text(self, path: str, text: str, limit: int | None = None) -> str:
        """Free text (an exception message, a status): credentials masked, cut to ``limit``, passed to the callback."""
        text = self.scrub_credentials_in(text)
        limit = limit or self.max_attribute_length
        if len(text) > limit:
            text = f"{text[:limit]}...[truncated {len(text) - limit} chars]"
        if self._callback is not None:
            text = self._callback(path, text)
        return text

    def __call__(self, value: Any) -> Any:
        return self._redact(value, "", 0)

    def to_attribute(self, value: Any) -> str:
        """Redacted JSON text for a span attribute or log field, bounded in size."""
        text = json.dumps(self(value), default=repr, ensure_ascii=False, sort_keys=True)
        if len(text) > self.max_attribute_length:
            cut = len(text) - self.max_attribute_length
            text = f"{text[: self.max_attribute_length]}...[truncated {cut} chars]"
        return text

    def _redact(self, value: Any, path: str, depth: int) -> Any:
        cls = type(value)
        if cls is str:
            if len(value) > self.max_value_length:
                value = f"{value[: self.max_value_length]}...[truncated {len(value) - self.max_value_length} chars]"
            return value if self._callback is None else self._callback(path, value)
        if cls in (int, float, bool) or value is None:
            return value if self._callback is None else self._callback(path, value)
        if isinstance(value, dict):
            if depth >= self.max_depth:
                return "[nested too deep]"
            out: dict[str, Any] = {}
            with_paths = self._callback is not None
            for i, (key, item) in enumerate(value.items()):
                if i >= self.max_items:
                    out["..."] = f"[{len(value) - self.max_items} more keys]"
                    break
                key_s = key if type(key) is str else str(key)
                if self.is_sensitive(key_s):
                    out[key_s] = MASK
                else:
                    child = (f"{path}.{key_s}" if path else key_s) if with_paths else ""
                    out[key_s] = self._redact(item, child, depth + 1)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            if depth >= self.max_depth:
                return "[nested too deep]"
            items = list(value)
            with_paths = self._callback is not None
            out_list = [self._redact(v, f"{path}[{i}]" if with_paths else "", depth + 1)
                        for i, v in enumerate(items[: self.max_items])]
            if len(items) > self.max_items:
                out_list.append(f"[{len(items) - self.max_items} more items]")
            return out_list
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, (str, int, float)):  # subclasses (enums, ...): keep their plain value
            value = value if not isinstance(value, str) else str(value)
        else:
            value = repr(value)
        if isinstance(value, str) and len(value) > self.max_value_length:
            value = f"{value[: self.max_value_length]}...[truncated {len(value) - self.max_value_length} chars]"
        return value if self._callback is None else self._callback(path, value)
