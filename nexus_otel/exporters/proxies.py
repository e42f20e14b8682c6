"""Which forward proxy, if any, a webhook's destination goes through: the proxy's endpoint and credentials.

Corporate networks send outbound HTTP through a proxy, and every client users
know (curl, requests, httpx, aiohttp with ``trust_env``) reads it from the same
variables: ``HTTP_PROXY`` for ``http://`` destinations, ``HTTPS_PROXY`` for
``https://`` ones (reached through a ``CONNECT`` tunnel), ``ALL_PROXY`` for
either, and ``NO_PROXY`` for the hosts that go direct. The variables are read
by the standard library's own rules (:func:`urllib.request.getproxies_environment`:
the lowercase spelling wins, ``HTTP_PROXY`` is ignored under CGI; and
:func:`urllib.request.proxy_bypass_environment` for ``NO_PROXY``), not by new
ones; ``docs/records.md`` lists where those rules and httpx's differ.

The ``proxy`` setting: ``None`` (the default) reads the environment once, when
the routes are built; a proxy URL sends every destination through that proxy
(``NO_PROXY`` does not apply, as with httpx's ``proxy=``); ``False`` never uses
a proxy, whatever the environment says. Proxy URLs are ``http://`` (a URL
without a scheme is taken as ``http://``, as curl and httpx take it);
credentials in one (``http://user:password@proxy:3128``) become the
``Proxy-Authorization: Basic`` header. A proxy URL that cannot work is a
:class:`~nexus_otel.errors.ConfigurationError` naming the setting or the
variable, its credentials masked.
"""

from __future__ import annotations

import base64
import os
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import ConfigurationError
from ..urls import mask_url

EXPECTED = ("an http:// proxy URL (http://[user:password@]host[:port]), None (the environment's HTTP_PROXY, "
            "HTTPS_PROXY, ALL_PROXY and NO_PROXY) or False (no proxy)")


@dataclass(frozen=True, slots=True)
class Proxy:
    """A forward proxy: where to connect, what to send as ``Proxy-Authorization``, how to name it in messages."""

    host: str
    port: int
    authorization: str | None
    """``Basic ...`` from the credentials in the proxy URL, or None."""
    shown: str
    """The proxy URL with its credentials masked."""

    @classmethod
    def of(cls, url: str, setting: str) -> Proxy:
        """The proxy at ``url``; a :class:`ConfigurationError` naming ``setting`` if it cannot be one."""
        full = url.strip()
        if "://" not in full:
            full = "http://" + full
        shown = mask_url(full)
        try:
            parts = urlsplit(full)
            port = parts.port
        except ValueError:  # a port that is not a number, an unclosed [IPv6 literal
            raise ConfigurationError(setting, mask_url(url), EXPECTED) from None
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise ConfigurationError(setting, mask_url(url), EXPECTED)
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = "Basic " + base64.b64encode(pair).decode("ascii")
        return cls(parts.hostname, port or 80, authorization, shown)


class ProxyRoutes:
    """Which proxy each destination goes through, decided from the ``proxy`` setting (see the module's docstring).

    ``setting`` names the setting in errors (``WebhookPlugin.proxy``). Build it
    once, at setup: the environment is read then, never per request.
    """

    def __init__(self, proxy: Any = None, *, setting: str = "proxy") -> None:
        self._fixed: Proxy | None = None
        self._by_scheme: dict[str, Proxy] = {}
        self._environment: dict[str, str] = {}
        if proxy is False:
            return
        if isinstance(proxy, str):
            self._fixed = Proxy.of(proxy, setting)
            return
        if proxy is not None:
            raise ConfigurationError(setting, mask_url(proxy) if isinstance(proxy, str) else proxy, EXPECTED)
        self._environment = urllib.request.getproxies_environment()
        for scheme in ("http", "https", "all"):
            if self._environment.get(scheme):
                self._by_scheme[scheme] = Proxy.of(self._environment[scheme], _variable(scheme))

    @property
    def any(self) -> bool:
        """Whether any destination could go through a proxy."""
        return self._fixed is not None or bool(self._by_scheme)

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy a request to ``scheme://host:port`` goes through, or None to go direct."""
        if self._fixed is not None or not self._by_scheme:
            return self._fixed
        proxy = self._by_scheme.get(scheme) or self._by_scheme.get("all")
        if proxy is None:
            return None
        # NO_PROXY entries may name a port (host:port): urllib compares the host with and without it.
        # An IPv6 literal is asked both bracketed ([::1]:8080, [::1]) and bare (::1), as users write it either way.
        asked = (f"[{host}]:{port}", host) if ":" in host else (f"{host}:{port}",)
        for address in asked:
            # (public in urllib.request, though typeshed does not list it)
            if urllib.request.proxy_bypass_environment(address, self._environment):  # type: ignore[attr-defined]
                return None
        return proxy

    def __repr__(self) -> str:
        if self._fixed is not None:
            return f"ProxyRoutes({self._fixed.shown!r})"
        shown = {scheme: proxy.shown for scheme, proxy in self._by_scheme.items()}
        return f"ProxyRoutes(environment={shown}, no_proxy={self._environment.get('no')!r})"


def _variable(scheme: str) -> str:
    """The variable a scheme's proxy came from, as the user spelled it (the lowercase one wins, as urllib says)."""
    lower = f"{scheme}_proxy"
    return lower if os.environ.get(lower) else lower.upper()
