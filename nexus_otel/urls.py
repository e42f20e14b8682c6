"""URLs as nexus-otel shows them: credentials and secret query values replaced by ``REDACTED``.

A webhook or database URL may carry a password (``https://user:PASSWORD@host/``)
or a key in its query (``?api_key=...``, a signed URL's ``sig=...``). The outbox
needs the URL whole to deliver, but nothing that shows one (a log line,
``nexus-otel webhooks dead-letters``, the ``url.query`` of an HTTP server span)
may print those parts: each goes through :func:`mask_url` or :func:`redact_query`.

Which query parameters are secret: the ones OpenTelemetry's HTTP semantic
conventions name for ``url.query`` and ``url.full`` (``AWSAccessKeyId``,
``Signature``, ``sig``, ``X-Goog-Signature``, matched case-sensitively as they
say), a few names that are secrets in a query though not elsewhere (``key``,
``code``, ``auth``), and every name the app's :class:`~nexus_otel.redaction.Redactor`
masks as an attribute key (``api_key``, ``token``, ``password``, ``secret``, its
``extra_sensitive_keys`` ...). The value becomes ``REDACTED``, the name stays, as
the conventions ask (``q=OpenTelemetry&sig=REDACTED``).

It builds on :mod:`nexus_otel.redaction` (its key list), so that module does
not import this one (the package has no import cycles).
"""

from __future__ import annotations

from urllib.parse import unquote_plus

from .redaction import Redactor

REDACTED = "REDACTED"
"""What a secret part of a URL becomes (the word OpenTelemetry's URL conventions use)."""

SEMCONV_QUERY_KEYS: frozenset[str] = frozenset({"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"})
"""Query parameters whose values the HTTP semantic conventions redact by default (matched case-sensitively)."""

QUERY_ONLY_KEYS: frozenset[str] = frozenset({"key", "code", "sig", "auth"})
"""Whole parameter names (any case) that hold secrets in a query: a Google API ``key``, an OAuth ``code``.
Not attribute keys in general: ``cache_key`` or ``status_code`` elsewhere are not secrets."""


def _redactor(redactor: Redactor | None) -> Redactor:
    """The caller's redactor (the app's: its extra keys count), else one with the default keys."""
    return redactor if redactor is not None else Redactor()


def is_secret_parameter(name: str, redactor: Redactor | None = None) -> bool:
    """Whether a query parameter's value is masked; ``name`` as it appears in the query (percent-encoded or not)."""
    if name in SEMCONV_QUERY_KEYS:
        return True
    plain = unquote_plus(name)
    return plain in SEMCONV_QUERY_KEYS or plain.lower() in QUERY_ONLY_KEYS or _redactor(redactor).is_sensitive(plain)


def redact_query(query: str, redactor: Redactor | None = None) -> str:
    """``query`` (without its ``?``) with the value of each secret parameter replaced by ``REDACTED``.

    Names, order, the other values and their encoding are kept as they were:
    ``sig=abc&page=2`` becomes ``sig=REDACTED&page=2``. Pass the app's redactor
    (its extra sensitive keys count too); without one the default keys are used.
    """
    if "=" not in query:
        return query
    redactor = _redactor(redactor)
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, sep, value = part.partition("=")
        if sep and value and value != REDACTED and is_secret_parameter(name, redactor):
            parts[i] = f"{name}={REDACTED}"
            changed = True
    return "&".join(parts) if changed else query


def mask_url(url: str, redactor: Redactor | None = None) -> str:
    """``url`` safe to log or print: its password, a lone user part (often a token) and secret query values masked.

    ``http://user:PASSWORD@host/hook?api_key=K&page=2#f`` becomes
    ``http://user:REDACTED@host/hook?api_key=REDACTED&page=2#f``; ``https://TOKEN@host/`` becomes
    ``https://REDACTED@host/``. Anything that is not a URL (``audit``, a path) comes back unchanged.
    Never raises: it runs inside logging and error paths, on whatever a user configured.
    """
    if not isinstance(url, str):
        url = str(url)
    before, hash_, fragment = url.partition("#")
    base, question, query = before.partition("?")
    scheme, sep, rest = base.partition("://")
    if sep:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            userinfo, _, host = authority.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            userinfo = f"{user}:{REDACTED}" if colon else REDACTED
            base = f"{scheme}://{userinfo}@{host}{slash}{path}"
    if not (query or fragment):
        return base + question + hash_
    if redactor is None and ("=" in query or "=" in fragment):
        redactor = _redactor(None)  # one for both parts
    # A fragment can hold parameters too (an OAuth implicit grant's #access_token=...).
    return f"{base}{question}{redact_query(query, redactor)}{hash_}{redact_query(fragment, redactor)}"
