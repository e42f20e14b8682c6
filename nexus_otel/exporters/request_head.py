"""The bytes of a webhook request's head, written as RFC 9110 and RFC 9112 say: checked once where users configure it.

The webhook client (:mod:`.http1`) writes its requests by hand, for CPU's sake
(``benchmarks/http_clients.py``). What goes into a head is checked here, in
two places:

- **At setup**, everything a user configures: the URL (:func:`check_url`,
  :meth:`Target.of`) and the static extra headers (:func:`check_headers`).
  A URL's path and query are percent-encoded as httpx (and the WHATWG URL
  standard browsers follow) does: what may not stand in a request target is
  encoded as UTF-8 ``%XX``, existing ``%XX`` escapes are kept, ``.`` and ``..``
  segments are resolved; ASCII control characters anywhere in a URL are refused
  (a space is encoded, a NUL or a line break is a mistake). An internationalised
  host name becomes its IDNA 2008 ASCII form (the ``idna`` package, with the
  UTS #46 mapping browsers apply: ``Bücher.example`` is ``xn--bcher-kva.example``)
  for both ``Host`` and connecting; an IPv6 literal stays bracketed in ``Host``.
  The result (every :class:`Target`, however made, as it is made), and every
  configured header, then has to pass h11's own checks (the HTTP/1.1 library
  of httpcore and uvicorn: token header names, no CR, LF or NUL in values, no
  leading or trailing whitespace, a visible-ASCII target).
  A refused one is a :class:`~nexus_otel.errors.ConfigurationError` naming the
  setting, showing a URL with its credentials masked and a header by its name
  only (its value may be a secret).
- **Per request**, in :func:`request_bytes`, only the caller's headers: every
  name is a token (the names sent with every request by a set lookup, others
  by a pattern), every value is printable and unpadded (a value with a tab in
  it by the full pattern), the head is ASCII: a small part of what
  ``request_bytes`` costs (``benchmarks/RESULTS.md``). Values that vary per
  request (``webhook-id``, from the workflow id; timestamps, signatures) can
  neither smuggle a header in nor break the head: a request whose head fails is
  an :class:`HttpError` for that request alone (nothing is sent).

Where h11 is more lenient than RFC 9110 (it lets control characters other
than NUL, CR, LF and TAB through in a value), the stricter rule applies here:
``field-vchar`` is ``VCHAR / obs-text``. Values are ASCII only (obs-text bytes
have no defined character set; h11 and httpx refuse non-ASCII ``str`` values too).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import h11
import idna

from ..errors import ConfigurationError, InvalidDataError
from ..urls import mask_url


class HttpError(Exception):
    """The request could not be sent or its answer not read (refused, reset, closed early, bad response).

    Defined here, the lowest of the client's modules, so that a head that cannot be written is one too;
    :mod:`.http1` raises and exports it.
    """


# The WHATWG URL standard's percent-encode sets, as httpx uses them: what a path and a query may keep.
_CONTROL = frozenset({chr(c) for c in range(0x20)} | {"\x7f"})
_QUERY_SAFE = "".join(sorted({chr(c) for c in range(0x21, 0x7f)} - set('"#<>')))
_PATH_SAFE = "".join(sorted(set(_QUERY_SAFE) - set("?`{}")))
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=%]+")
"""An ASCII host name (RFC 3986's reg-name): anything else cannot be looked up."""
_IPV4_LIKE = re.compile(r"[0-9]+(?:\.[0-9]+)*\.?")

_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
"""RFC 9110 ``token``: a header name."""
_VALUE = r"(?:[!-~]+(?:[ \t]+[!-~]+)*)?"
"""RFC 9110 ``field-value`` in ASCII: visible characters, inner spaces and tabs, nothing at either end."""
_FIELD_VALUE = re.compile(_VALUE)
_KNOWN_TOKENS = frozenset({"host", "accept", "user-agent", "authorization", "proxy-authorization", "content-type",
                           "webhook-id", "webhook-timestamp", "webhook-signature"})
"""Names sent with every request, known to be tokens: a set lookup spares them the pattern."""

CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
"""Headers only the client writes: where the request goes (from the URL) and how long its body is."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go: the connection's endpoint and the request line's pieces.

    ``host`` is the ASCII form to connect to (IDNA for an internationalised name, an IPv6 address
    without brackets); ``host_header`` is what ``Host`` says (brackets kept, the port unless it is
    the scheme's default); ``path`` is the percent-encoded path and query; ``authorization`` is
    ``Basic ...`` from the URL's credentials, if it has any.
    """

    scheme: str
    host: str
    port: int
    host_header: str
    path: str
    authorization: str | None

    def __post_init__(self) -> None:
        """Every target is one h11 would write, however made (:meth:`of`, or ``dataclasses.replace`` for a
        proxy's absolute form): checked once here, so :func:`request_bytes` checks only the caller's headers."""
        fields = [("Host", self.host_header)] + ([("Authorization", self.authorization)] if self.authorization else [])
        try:
            h11.Request(method="POST", target=self.path, headers=fields)
        except (h11.LocalProtocolError, UnicodeError) as exc:
            raise InvalidDataError(f"h11 refuses its request head: {exc}") from None
        if not all(_FIELD_VALUE.fullmatch(value) for _, value in fields):  # RFC 9110: no control characters
            raise InvalidDataError("its Host or Authorization holds a control character")

    @classmethod
    def of(cls, url: str) -> Target:
        """The target of ``url``; :class:`HttpError` (the URL shown masked) if it cannot be requested."""
        try:
            return _target(url)
        except ValueError as exc:  # the error is logged and stored: the URL is masked
            raise HttpError(f"not a usable http(s) URL ({exc}): {mask_url(url)!r}") from None


def _target(url: str) -> Target:
    """:meth:`Target.of`'s work; ValueError says what is wrong (never showing the URL)."""
    if not isinstance(url, str):
        raise InvalidDataError("not a string")
    control = next((c for c in url if c in _CONTROL), None)
    if control is not None:
        raise InvalidDataError(f"it holds the control character {control!r}")
    try:
        parts = urlsplit(url)
        given_port = parts.port
    except ValueError:  # its message may show the credentials
        raise InvalidDataError("a bad port, an unclosed [ or a host name that is not one") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidDataError("the scheme is not http or https")
    if not parts.hostname:
        raise InvalidDataError("no host")
    host, bracketed = _host(parts.hostname)
    default_port = 443 if parts.scheme == "https" else 80
    port = given_port or default_port
    explicit = port != default_port
    host_header = (f"[{host}]" if bracketed else host) + (f":{port}" if explicit else "")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    path = quote(_without_dot_segments(parts.path) or "/", safe=_PATH_SAFE)
    if parts.query or "?" in url.partition("#")[0]:  # "?" before the fragment can only start the query
        path += "?" + quote(parts.query, safe=_QUERY_SAFE)
    return Target(parts.scheme, host, port, host_header, path, authorization)  # checked by h11's rules as made


def _host(hostname: str) -> tuple[str, bool]:
    """The ASCII host to connect to and send, and whether it is an IPv6 literal (bracketed in ``Host``)."""
    if ":" in hostname:
        try:
            ipaddress.IPv6Address(unquote(hostname))
        except ValueError:
            raise InvalidDataError("not an IPv6 address in brackets") from None
        return hostname, True
    if not hostname.isascii():
        try:  # UTS #46 maps first (case, width, compatibility forms), as browsers do
            return idna.encode(hostname, uts46=True).decode("ascii"), False
        except idna.IDNAError as exc:
            raise InvalidDataError(f"not a valid internationalised host name: {exc}") from None
    if _IPV4_LIKE.fullmatch(hostname) and hostname.strip(".").count(".") == 3:
        try:
            ipaddress.IPv4Address(hostname.rstrip("."))
        except ValueError:
            raise InvalidDataError("not a valid IPv4 address") from None
    elif not _REG_NAME.fullmatch(hostname):
        raise InvalidDataError("the host name holds characters a host name cannot")
    return hostname, False


def _without_dot_segments(path: str) -> str:
    """``path`` with its ``.`` and ``..`` segments resolved (RFC 3986 section 5.2.4, as httpx and curl do)."""
    if "." not in path:
        return path
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if kept and kept != [""]:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    return "/".join(kept)


def check_url(setting: str, url: Any) -> Target:
    """``url``'s :class:`Target`, or a :class:`ConfigurationError` naming ``setting`` (credentials masked)."""
    try:
        return _target(url)
    except ValueError as exc:
        shown = mask_url(url) if isinstance(url, str) else url
        raise ConfigurationError(setting, shown, f"an http:// or https:// URL ({exc})") from None


def check_headers(setting: str, headers: Any, *, reserved: Collection[str] = ()) -> dict[str, str]:
    """Extra headers a user configured, checked by h11's rules and RFC 9110's; a copy, in their order.

    Refused (:class:`ConfigurationError` naming ``setting``, showing a header by its name only):
    a name that is not a token, a value with a line break, a control character, a non-ASCII
    character or whitespace at either end, a name given twice (names are case-insensitive), the
    client's own headers (:data:`CLIENT_HEADERS`: ``Host`` comes from the URL, the length from the
    body) and the ``reserved`` names (lower case) the caller writes itself.
    """
    if headers is None:
        return {}
    if not isinstance(headers, Mapping):
        raise ConfigurationError(setting, type(headers).__name__, "a mapping of header names to values")
    checked: dict[str, str] = {}
    seen: set[str] = set()
    for name, value in headers.items():
        shown = f"{name}: <value hidden>"  # a value may be a secret (Authorization, an API key)
        lower = name.lower() if isinstance(name, str) else ""
        if lower in CLIENT_HEADERS or lower in reserved:  # before h11's checks: h11 has rules of its own for these
            owned = sorted(CLIENT_HEADERS | set(reserved))
            raise ConfigurationError(setting, shown, f"a header other than {', '.join(owned)} "
                                     "(nexus-otel writes those itself)")
        if not isinstance(name, str) or not _h11_accepts(name, ""):
            raise ConfigurationError(setting, name, "header names made of RFC 9110 token characters "
                                     "(letters, digits and !#$%&'*+-.^_`|~)")
        if not isinstance(value, str) or not (_h11_accepts(name, value) and _FIELD_VALUE.fullmatch(value)):
            raise ConfigurationError(setting, shown, "a header value of visible ASCII characters with inner "
                                     "spaces or tabs only: no line break, control character, or leading or "
                                     "trailing whitespace")
        if lower in seen:
            raise ConfigurationError(setting, shown, "each header name once (names are case-insensitive)")
        seen.add(lower)
        checked[name] = value
    return checked


def _h11_accepts(name: str, value: str) -> bool:
    """Whether h11 would write the header ``name: value`` in a request."""
    try:
        h11.Request(method="POST", target="/", headers=[("Host", "h"), (name, value)])
    except (h11.LocalProtocolError, UnicodeError):
        return False
    return True


def request_bytes(target: Target, body: bytes, headers: Mapping[str, str], user_agent: str) -> bytes:
    """The whole request: request line, headers, ``Content-Length``, body (a caller's header wins over a default).

    The head is ``Host``, ``Accept``, ``User-Agent``, ``Authorization`` (from the URL's credentials),
    then the caller's headers in their order, then ``Content-Length``: the bytes h11 writes for the
    same headers (``tests/test_request_head.py`` compares them). A caller's ``Host``,
    ``Content-Length`` or ``Transfer-Encoding`` is left out. :class:`HttpError`, naming the header
    but not showing its value, if the head would not be valid HTTP/1.1. The target was checked as
    it was made; the caller's headers and ``user_agent`` are checked here.
    """
    defaults = {"host": target.host_header, "accept": "*/*", "user-agent": user_agent}
    if target.authorization:
        defaults["authorization"] = target.authorization
    if not ((user_agent.isprintable() and user_agent.strip(" ") == user_agent) or _FIELD_VALUE.fullmatch(user_agent)):
        raise HttpError(_fault("user-agent", user_agent))
    mine = []
    for name, value in headers.items():
        # A token name; a printable, unpadded value (the common case, valid), else the full pattern (inner tabs).
        if ((name not in _KNOWN_TOKENS and _TOKEN.fullmatch(name) is None)
                or not ((value.isprintable() and value.strip(" ") == value) or _FIELD_VALUE.fullmatch(value))):
            raise HttpError(_fault(name, value))
        lower = name.lower()
        if lower in CLIENT_HEADERS:
            continue
        if lower in defaults:
            defaults[lower] = value  # the caller's, in the default's place
            continue
        mine.append(f"{name}: {value}")
    lines = [f"POST {target.path} HTTP/1.1", *[f"{name}: {value}" for name, value in defaults.items()], *mine,
             f"content-length: {len(body)}"]
    head = "\r\n".join(lines)
    # No CR, LF or control character but in separators (checked above); non-ASCII anywhere is refused here.
    if not head.isascii():
        culprit = next((name for name, value in headers.items() if not (name + value).isascii()), None)
        raise HttpError(f"the header {culprit!r} holds a non-ASCII character" if culprit is not None
                        else "the user agent holds a non-ASCII character")
    return head.encode("ascii") + b"\r\n\r\n" + body


def _fault(name: str, value: str) -> str:
    """Why :func:`request_bytes` refused a header, naming it but never showing its value (it may be a secret)."""
    if _TOKEN.fullmatch(name) is None:
        return f"the header name {name!r} is not an RFC 9110 token"
    if "\r" in value or "\n" in value:
        return f"the value of header {name!r} holds a line break"
    return f"the value of header {name!r} holds a control character, or whitespace at either end"
