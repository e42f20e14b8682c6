"""Masking secrets and truncating large values before they reach telemetry.

Workflow inputs are user data. Before any of it becomes a span attribute or a
log field it goes through a :class:`Redactor`: values under sensitive keys
are masked, secrets inside any string are masked by their shape (a URL's
password, a card number, a GitHub or AWS key, a JWT, a private key; see
:mod:`nexus_otel.secret_patterns`), long strings are cut, deep or huge
structures are bounded, and a user callback may change or drop anything further.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ConfigurationError
from .secret_patterns import ALREADY_MASKED, DEFAULT_PATTERNS, MASK, PatternSpec, SecretScanner, card_number, named

__all__ = ["DEFAULT_PATTERNS", "DEFAULT_SENSITIVE_KEYS", "MASK", "RedactCallback", "Redactor"]

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "token", "authorization", "bearer",
    "api_key", "apikey", "access_key", "private_key", "credential", "cookie",
    "session_key", "signature", "credit_card", "card_number", "cvv", "ssn", "pin",
    "passphrase", "passcode", "pass", "pw", "jwt", "otp", "cvc", "security_code",
)

RedactCallback = Callable[[str, Any], Any]
"""``callback(path, value) -> value``: called for every leaf value after masking;
``path`` is dotted (``user.email``). Return the value to keep, or a replacement."""

# ``key=value`` / ``"key": "value"`` pairs in free text: found from their separator. The key is read
# backwards (matched on the reversed text), so finding one costs a look at its own characters only.
_SEPARATOR = re.compile(r"=|:(?!//)")  # not the colon of a URL's scheme
_KEY_REVERSED = re.compile(r"\s*[\"']?(?P<key>[A-Za-z0-9_.-]*[A-Za-z_])")
_VALUE = re.compile(r"\s*[\"']?(?P<value>[^\s\"',;&}\]]+)")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")

# What a key says about the values under it (:meth:`Redactor.key_kind`).
KEY_PLAIN, KEY_MASKED, KEY_ALLOWED, KEY_AWS = 0, 1, 2, 3
_CONTEXT_WORDS = frozenset({"aws"})
"""A key naming AWS: a bare 40-character secret access key under it is masked (it has no name of its own)."""

_WINDOW = 1024
"""Characters scanned past a value's length limit, so a secret cut in two by truncation is still found whole."""


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

    Values are scrubbed too, whatever their key: every string (an input, an
    attribute, an exception message, a status description, the audit error
    column, a log field) has the secrets inside it masked by shape
    (:data:`DEFAULT_PATTERNS`: a URL's password, ``Bearer``/``Basic`` tokens, JWTs,
    private-key blocks, GitHub, AWS, Slack, Stripe and Google keys, Luhn-valid card
    numbers), and ``key=value`` or ``"key": "value"`` pairs whose key is sensitive.
    ``extra_patterns`` adds regular expressions (by name in a dict, or a list);
    ``patterns`` replaces the defaults. A pattern masks its whole match, or only its
    group named ``secret``. ``scrub_credentials=False`` turns value scrubbing off.

    The allow-list wins over everything else: ``allow_keys`` are keys whose values
    (and all below them) are never masked or scrubbed, only bounded
    (``allow_keys=["token_count"]``); ``allow_values`` are exact strings never
    masked, alone or inside a longer text (a published test card number).
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
        patterns: PatternSpec = DEFAULT_PATTERNS,
        extra_patterns: PatternSpec = (),
        allow_keys: Iterable[str] = (),
        allow_values: Iterable[str] = (),
    ) -> None:
        for setting, value in (
            ("max_value_length", max_value_length), ("max_items", max_items),
            ("max_depth", max_depth), ("max_attribute_length", max_attribute_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"Redactor.{setting}", value, "a whole number of at least 1")
        if callback is not None and not callable(callback):
            raise ConfigurationError("Redactor.callback", callback, "a callable(path, value)")
        for setting, given in (("allow_keys", allow_keys), ("allow_values", allow_values)):
            if isinstance(given, str) or not all(isinstance(v, str) for v in given):
                raise ConfigurationError(f"Redactor.{setting}", given, "a list of strings")
        keys = ["".join(_words(k)) for k in (*sensitive_keys, *extra_sensitive_keys)]
        self._short = frozenset(k for k in keys if 0 < len(k) <= 4)
        self._long = tuple(k for k in keys if len(k) > 4)
        self._allowed_keys = frozenset("".join(_words(k)) for k in allow_keys)
        self._kinds: dict[str, int] = {}
        self.max_value_length = max_value_length
        self.max_items = max_items
        self.max_depth = max_depth
        self.max_attribute_length = max_attribute_length
        self._callback = callback
        self.scrub_credentials = scrub_credentials
        """Scrub secrets inside values (by shape, and sensitive ``key=value`` pairs); keys are masked either way."""
        chosen = {**named(patterns, "Redactor.patterns"), **named(extra_patterns, "Redactor.extra_patterns")}
        self._scanner = SecretScanner(chosen, allow_values)
        self._scan = self._scanner.scrub
        self.patterns: dict[str, str] = self._scanner.patterns
        """The value patterns in use, by name."""

    def key_kind(self, key: str) -> int:
        """What ``key`` says about its values: plain, masked, allowed, or naming AWS (cached)."""
        known = self._kinds.get(key)
        if known is not None:
            return known
        words = _words(key)
        joined = "".join(words)
        if joined in self._allowed_keys:
            kind = KEY_ALLOWED
        elif any(w in self._short for w in words) or any(s in joined for s in self._long):
            kind = KEY_MASKED
        elif _CONTEXT_WORDS.intersection(words):
            kind = KEY_AWS
        else:
            kind = KEY_PLAIN
        if len(self._kinds) < 4096:
            self._kinds[key] = kind
        return kind

    def is_sensitive(self, key: str) -> bool:
        """Whether values under ``key`` are masked."""
        return self.key_kind(key) == KEY_MASKED

    def is_allowed(self, key: str) -> bool:
        """Whether values under ``key`` are on the allow-list (never masked or scrubbed, only bounded)."""
        return self.key_kind(key) == KEY_ALLOWED

    @property
    def has_callback(self) -> bool:
        return self._callback is not None

    def scrub_credentials_in(self, text: str) -> str:
        """``text`` with the secrets inside it masked: every value pattern (a URL's password, tokens, keys,
        card numbers...) and the values of ``key=value`` / ``"key": "value"`` pairs whose key is sensitive.
        The same object comes back when there was nothing to mask."""
        if not self.scrub_credentials or not text:
            return text
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        text = self._scan(text)
        if ("=" in text or ":" in text) and _SEPARATOR.search(text) is not None:
            text = self._mask_pairs(text)
        return text

    scrub_value = scrub_credentials_in

    def _mask_pairs(self, text: str) -> str:
        """Mask the values of sensitive ``key=value`` pairs; a pair whose key is not sensitive is passed over,
        so ``config: secret=x`` still finds ``secret=x``."""
        out: list[str] = []
        pos = 0
        reversed_text: str | None = None
        for separator in _SEPARATOR.finditer(text):
            at = separator.start()
            if at < pos or at == 0:
                continue  # inside a value masked already
            if reversed_text is None:
                reversed_text = text[::-1]
            key = _KEY_REVERSED.match(reversed_text, len(text) - at)
            if key is None or not self.is_sensitive(key["key"][::-1]):
                continue
            value = _VALUE.match(text, at + 1)
            if value is None or value["value"] in self._scanner.allow_values or any(
                    text.startswith(mask, value.start("value")) for mask in ALREADY_MASKED):
                continue
            out.append(text[pos:value.start("value")])
            out.append(MASK)
            pos = value.end("value")
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    def bound_text(self, path: str, text: str, limit: int | None = None) -> str:
        """A value under an allow-listed key: cut to ``limit`` and passed to the callback, never scrubbed."""
        text = self._scrub_cut(text, limit or self.max_attribute_length, False)
        return text if self._callback is None else self._callback(path, text)

    def scrub_aws_context(self, text: str) -> str:
        """A string under a key that names AWS: a bare 40-character secret access key in it masked too."""
        return self._scanner.scrub_bare_aws_secret(text)

    def scrub_text(self, path: str, text: str, limit: int | None = None) -> str:
        """Free text (an exception message, a status): secrets masked, cut to ``limit``, passed to the callback."""
        limit = limit or self.max_attribute_length
        text = self._scrub_cut(text, limit, self.scrub_credentials)
        if self._callback is not None:
            text = self._callback(path, text)
        return text

    def _scrub_cut(self, text: str, limit: int, scrub: bool) -> str:
        """``text`` scrubbed (when ``scrub``) and cut to ``limit``; a long text is scanned a little past the cut,
        so no secret is left half shown by it."""
        if len(text) <= limit:
            return self._scrub(text) if scrub and text else text
        head = self._scrub(text[: limit + _WINDOW]) if scrub else text
        return f"{head[:limit]}...[truncated {len(text) - limit} chars]"

    def __call__(self, value: Any) -> Any:
        return self._redact(value, "", 0, self.scrub_credentials)

    def to_attribute(self, value: Any) -> str:
        """Redacted JSON text for a span attribute or log field, bounded in size."""
        text = json.dumps(self(value), default=repr, ensure_ascii=False, sort_keys=True)
        if len(text) > self.max_attribute_length:
            cut = len(text) - self.max_attribute_length
            text = f"{text[: self.max_attribute_length]}...[truncated {cut} chars]"
        return text

    def _redact(self, value: Any, path: str, depth: int, scrub: bool) -> Any:
        cls = type(value)
        if cls is str:
            if len(value) > self.max_value_length:
                value = self._scrub_cut(value, self.max_value_length, scrub)
            elif scrub:
                value = self._scrub(value)
            return value if self._callback is None else self._callback(path, value)
        if cls is int and scrub and value >= 10**12 and card_number(value):
            value = MASK
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
                kind = self.key_kind(key_s)
                if kind == KEY_MASKED:
                    out[key_s] = MASK
                    continue
                child = (f"{path}.{key_s}" if path else key_s) if with_paths else ""
                if kind == KEY_AWS and scrub and type(item) is str:
                    seen = self.max_value_length + _WINDOW
                    item = self._scanner.scrub_bare_aws_secret(item[:seen]) + item[seen:]
                out[key_s] = self._redact(item, child, depth + 1, scrub and kind != KEY_ALLOWED)
            return out
        if isinstance(value, (list, tuple, set, frozenset)):
            if depth >= self.max_depth:
                return "[nested too deep]"
            items = list(value)
            with_paths = self._callback is not None
            out_list = [self._redact(v, f"{path}[{i}]" if with_paths else "", depth + 1, scrub)
                        for i, v in enumerate(items[: self.max_items])]
            if len(items) > self.max_items:
                out_list.append(f"[{len(items) - self.max_items} more items]")
            return out_list
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, (str, int, float)):  # subclasses (enums, ...): keep their plain value
            value = value if not isinstance(value, str) else self._scrub_cut(str(value), self.max_value_length, scrub)
        else:
            value = self._scrub_cut(repr(value), self.max_value_length, scrub)  # a repr may hold a DSN
        return value if self._callback is None else self._callback(path, value)
