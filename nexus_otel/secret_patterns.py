"""Secrets recognised by their shape, wherever they appear in a string.

Masking by key name (:mod:`nexus_otel.redaction`) misses a secret whose key
says nothing: ``{"db_conn": "postgresql://admin:PASSWORD@db/x"}``, a card number
in a note, a GitHub token in an exception message. These patterns find such
values by what they look like. Each pattern masks its whole match, or only its
group named ``secret`` when it has one (so ``postgresql://admin:[REDACTED]@db/x``
keeps the user and host, and ``aws_secret_access_key=[REDACTED]`` keeps the name).

All patterns are joined into one compiled regular expression, so a string is
scanned once whatever the number of patterns; most strings in telemetry hold
none of them, and for those the scan is the whole cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from .errors import ConfigurationError

MASK = "[REDACTED]"
ALREADY_MASKED = frozenset({MASK, "REDACTED"})
"""Values that are masks already (``REDACTED`` is the word OpenTelemetry's URL conventions use)."""

# Each pattern starts with a literal character or a character set, and checks a boundary before it with a
# lookbehind *after* that first character: so the regular expression engine skips, at each position, every
# pattern whose first character does not fit, at the cost of one comparison.
DEFAULT_PATTERNS: Mapping[str, str] = {
    # scheme://user:PASSWORD@host: the password only (up to the last @ before the path).
    "url_password": r"://[^\s/?#@:]*:(?P<secret>[^\s/?#]+)@",
    "authorization_scheme": r"[Bb](?<![A-Za-z0-9_][Bb])(?:earer|EARER|asic|ASIC)\s+"
                            r"(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    # "token" is a common word: what follows it is taken for a token only when it has 16 characters and a digit.
    "token_scheme": r"[Tt](?<![A-Za-z0-9_][Tt])(?:oken|OKEN)\s+"
                    r"(?P<secret>(?=[A-Za-z._~+/=-]*[0-9])[A-Za-z0-9._~+/=-]{16,})",
    "jwt": r"e(?<![A-Za-z0-9_]e)yJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
    # A block cut off (by truncation) before its END line is masked to the end of the text.
    "private_key": r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)"
                   r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    "github_token": r"g(?<![A-Za-z0-9]g)(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})"
                    r"(?![A-Za-z0-9])",
    "aws_access_key_id": r"A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
    # 40 base64 characters after a name that says what they are (aws_secret_access_key=, "secret": ...).
    "aws_secret_access_key": r"[AaSs](?:(?<=[Aa])[Ww][Ss]|(?<=[Ss])(?:ecret|ECRET))[\w.-]{0,30}?"
                             r"[\"']?\s*+[:=]?\s*+[\"']?(?<![A-Za-z0-9/+])(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    "slack_token": r"x(?<![A-Za-z0-9]x)ox[abprs]-[A-Za-z0-9-]{10,}",
    "stripe_key": r"[rs](?<![A-Za-z0-9][rs])k_(?:live|test)_[A-Za-z0-9]{16,}",
    "google_api_key": r"A(?<![A-Za-z0-9]A)Iza[0-9A-Za-z_-]{35}",
    # 13 to 19 digits, in a row or in groups (the first of four) split by one kind of space or dash,
    # starting as the card networks do (2-6); Luhn-checked below.
    "card_number": r"[2-6](?<![\w.+-][2-6])[0-9]{3}(?P<sep>[ -]?)[0-9]{4,15}(?:(?P=sep)[0-9]{3,15}){0,3}(?![\w-])",
}
"""The patterns a :class:`~nexus_otel.redaction.Redactor` uses unless told otherwise, by name."""

_TRIGGERS: Mapping[str, str] = {
    "url_password": r"://[^\s/?#@]*@",
    "authorization_scheme": r"B(?:earer|EARER|asic|ASIC)|b(?:earer|EARER|asic|ASIC)",
    "token_scheme": r"ken|KEN",
    "jwt": r"yJ",
    "private_key": r"-----BEGIN",
    "github_token": r"_(?:[A-Za-z0-9]{22}|pat_)",
    "aws_access_key_id": r"A(?:KIA|SIA|BIA|CCA)",
    "aws_secret_access_key": r"w[sS]|W[sS]|cret|CRET",
    "slack_token": r"xox",
    "stripe_key": r"k_(?:live|test)_",
    "google_api_key": r"AIza",
    # 11 of its digits: 4, 4 to 6, 3 (every grouping of 13 to 19 digits the pattern allows has them).
    "card_number": "|".join(f"{first}[0-9]{{3}}[ -]?[0-9]{{4}}[0-9]{{0,2}}[ -]?[0-9]{{3}}" for first in "23456"),
}
"""For each default pattern, a cheaper one that every match of it contains. Each alternative starts with a
literal character, so that the engine skips ahead to the positions where one might begin; a string in
which no trigger is found (nearly every string) is never scanned by the full patterns."""


_SHORTEST = 13
"""No default pattern but ``url_password`` (which needs an ``@``) matches fewer characters than this."""

AWS_SECRET_BARE = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
"""An AWS secret access key without its name beside it: masked only under a key that names AWS."""


def luhn_valid(text: str) -> bool:
    """Whether the digits of ``text`` (13 to 19 of them) pass the Luhn check every card number passes."""
    digits = [ord(c) - 48 for c in text if "0" <= c <= "9"]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def card_number(value: int) -> bool:
    """Whether an integer is shaped like a card number (13 to 19 digits, first 2-6, Luhn-valid)."""
    return 10**12 <= value < 10**19 and "2" <= str(value)[0] <= "6" and luhn_valid(str(value))


_CHECKS: Mapping[str, Callable[[str], bool]] = {"card_number": luhn_valid}
"""Default patterns whose matches are masked only when a check agrees (an ordinary long number survives)."""

PatternSpec = Mapping[str, str | re.Pattern[str]] | Iterable[str | re.Pattern[str]]
"""Patterns by name (``{"iban": r"..."}``) or as a plain sequence of regular expressions."""

_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")
_BACKREF = re.compile(r"\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)")
_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))


def named(patterns: PatternSpec, setting: str) -> dict[str, str]:
    """``patterns`` as ``{name: regex text}``, each checked on its own; a bad one names itself and the setting."""
    items = patterns.items() if isinstance(patterns, Mapping) else (
        (f"pattern_{i}", p) for i, p in enumerate([patterns] if isinstance(patterns, (str, re.Pattern)) else patterns))
    out: dict[str, str] = {}
    for name, pattern in items:
        if isinstance(pattern, re.Pattern):
            flags = "".join(letter for flag, letter in _FLAGS if pattern.flags & flag)
            text = f"(?{flags}:{pattern.pattern})" if flags else pattern.pattern
        elif isinstance(pattern, str):
            text = pattern
        else:
            raise ConfigurationError(f"{setting}[{name!r}]", pattern, "a regular expression (str or re.Pattern)")
        try:
            compiled = re.compile(text)
        except re.error as exc:
            raise ConfigurationError(f"{setting}[{name!r}]", pattern, f"a valid regular expression ({exc})") from None
        if compiled.fullmatch("") is not None:
            raise ConfigurationError(f"{setting}[{name!r}]", pattern, "a regular expression that cannot match ''")
        out[str(name)] = text
    return out


def _own_groups(text: str, i: int) -> str:
    """Group names must be unique in the joined expression: each pattern's own get its number as prefix."""
    text = _GROUP.sub(rf"(?P<_{i}_\1>", text)
    return _BACKREF.sub(rf"(?P=_{i}_\1)", text)


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def _scoped(text: str) -> str:
    """``(?i)abc`` -> ``(?i:abc)``: flags at the start of one pattern must not apply to (or break) the others."""
    flags = _GLOBAL_FLAGS.match(text)
    return f"(?{flags[1]}:{text[flags.end():]})" if flags else text


class SecretScanner:
    """Masks every match of a set of patterns in a string: a cheap pass finds the strings that may hold one,
    and one compiled expression masks them all.

    ``allow_values``: exact strings never masked, even when a pattern matches them
    (a test card number a support team must see, a public demo key).
    """

    def __init__(self, patterns: Mapping[str, str], allow_values: Iterable[str] = ()) -> None:
        self.patterns = dict(patterns)
        self.allow_values = frozenset(allow_values)
        parts: list[str] = []
        triggers: list[str] = []
        extras: list[str] = []
        self._secret: dict[str, str | None] = {}
        self._check: dict[str, Callable[[str], bool] | None] = {}
        for i, (name, text) in enumerate(self.patterns.items()):
            default = DEFAULT_PATTERNS.get(name) == text
            own = _own_groups(text if default else f"(?:{_scoped(text)})", i)
            # No group around a pattern (the engine then skips, at each position, the patterns whose first
            # character does not fit); an empty group after it closes last, so lastgroup names the pattern.
            marker = f"_{i}"
            parts.append(f"{own}(?P<{marker}>)")
            secret = f"_{i}_secret"
            self._secret[marker] = secret if f"(?P<{secret}>" in own else None
            self._check[marker] = _CHECKS.get(name) if default else None
            if default:
                triggers.append(_TRIGGERS[name])
            else:
                extras.append(own)
        self._regex = re.compile("|".join(parts)) if parts else None
        self._trigger = re.compile("|".join(triggers)) if triggers else None
        self._extra = re.compile("|".join(extras)) if extras else None
        """The patterns a user added, their own trigger (nothing cheaper is known of them)."""
        self._shortest = 0 if extras else _SHORTEST

    def __bool__(self) -> bool:
        return self._regex is not None

    def scrub(self, text: str) -> str:
        """``text`` with each secret masked; the same object when there is none."""
        size = len(text)
        if (size < self._shortest and "@" not in text) or self._regex is None:
            return text
        trigger = self._trigger
        if not (
            (trigger is not None and trigger.search(text) is not None)
            or (self._extra is not None and self._extra.search(text) is not None)
        ) or text in self.allow_values:
            return text
        return self._regex.sub(self._replace, text)

    def _replace(self, match: re.Match[str]) -> str:
        marker = match.lastgroup or ""
        secret = self._secret.get(marker)
        if secret is not None and match.start(secret) >= 0:
            start, end = match.span(secret)
        else:
            start, end = match.span()
        found = match.string[start:end]
        if found in self.allow_values or found in ALREADY_MASKED:
            return match[0]
        check = self._check.get(marker)
        if check is not None and not check(found):
            return match[0]
        return f"{match.string[match.start():start]}{MASK}{match.string[end:match.end()]}"

    def scrub_bare_aws_secret(self, text: str) -> str:
        """``text`` with any free-standing 40-character AWS secret key shape masked (for values under an AWS key)."""
        if len(text) < 40:
            return text
        return AWS_SECRET_BARE.sub(lambda m: m[0] if m[0] in self.allow_values else MASK, text)
