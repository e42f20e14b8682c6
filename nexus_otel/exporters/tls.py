"""The TLS context for webhook deliveries: a CA bundle of the user's, a client certificate for mTLS.

Receivers inside a company often present a certificate a private CA signed,
and some accept only clients that present a certificate of their own (mutual
TLS). The settings are the ones users know from curl and requests:

- ``ca_file``: a PEM bundle of CA certificates, trusted *instead of* the
  system's (as ``curl --cacert`` and requests' ``verify=`` do). Without it the
  system's store is used, and OpenSSL's ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``
  variables keep working (:func:`ssl.create_default_context` reads them).
- ``client_cert``: a PEM file with the client certificate (and its key, unless
  ``client_key`` names another file); ``client_key``: the key's PEM file. The
  key must not be encrypted: there is no one to type a passphrase.

The context is built once, at setup, so a missing, unreadable or invalid file
is a :class:`~nexus_otel.errors.ConfigurationError` naming the setting and the
path then, not a failed delivery later. Verification stays as strict as the
default context makes it (certificate chain and host name).
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from ..errors import ConfigurationError


def client_context(*, ca_file: Any = None, client_cert: Any = None, client_key: Any = None,
                   owner: str = "") -> ssl.SSLContext | None:
    """The context for ``https`` connections, or None when no setting is given (the default context then applies).

    ``owner`` prefixes the setting names in errors (``WebhookPlugin`` gives ``WebhookPlugin.ca_file``).
    """
    prefix = f"{owner}." if owner else ""
    ca = _path(f"{prefix}ca_file", ca_file, "a PEM file of CA certificates")
    cert = _path(f"{prefix}client_cert", client_cert, "a PEM file with the client certificate")
    key = _path(f"{prefix}client_key", client_key, "a PEM file with the client certificate's private key")
    if key is not None and cert is None:
        raise ConfigurationError(f"{prefix}client_key", key, f"to be set together with {prefix}client_cert")
    if ca is None and cert is None:
        return None
    if ca is None:
        context = ssl.create_default_context()
    else:
        try:
            context = ssl.create_default_context(cafile=ca)
        except ssl.SSLError as exc:
            raise ConfigurationError(f"{prefix}ca_file", ca,
                                     f"a PEM file of CA certificates (OpenSSL read none: {_reason(exc)})") from None
    if cert is not None:
        try:
            # A passphrase would be asked for on the terminal: give an empty one, so an encrypted key fails here.
            context.load_cert_chain(cert, key, password=lambda: b"")
        except ssl.SSLError as exc:
            if key is not None and not _holds_private_key(key):
                raise ConfigurationError(f"{prefix}client_key", key,
                                         f"an unencrypted PEM private key ({_reason(exc)})") from None
            expected = ("a PEM client certificate matching client_key" if key is not None else
                        "a PEM file with the client certificate and its unencrypted private key "
                        "(or the key in client_key)")
            raise ConfigurationError(f"{prefix}client_cert", cert, f"{expected} ({_reason(exc)})") from None
    return context


def _path(setting: str, value: Any, expected: str) -> str | None:
    """``value`` as a path to a readable file, or None if unset; a ConfigurationError naming ``setting`` if not."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ConfigurationError(setting, value, f"a path to {expected}")
    path = os.fspath(value)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigurationError(setting, path, f"{expected} ({exc.strerror or exc})") from None
    return path


def _holds_private_key(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            text = file.read()
    except OSError:
        return False
    return b"PRIVATE KEY-----" in text and b"ENCRYPTED" not in text


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc)
