"""W3C baggage the app passes on: the keys it is told to keep, bounded as the W3C spec says.

Baggage arriving with a request (``baggage: tenant=acme,user.id=42``) is read by the
propagators (``OTEL_PROPAGATORS``). Only the keys listed in ``NEXUS_OTEL_BAGGAGE_KEYS``
(or ``Nexus(baggage_keys=...)``) go further: onto the workflow span, its record (so
audit rows and webhook payloads carry them), its log records, and the ``baggage``
header of its webhook requests. Unlisted baggage stops at the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

MAX_MEMBERS = 64
"""List members a baggage header carries at most (W3C Baggage, "Limits")."""
MAX_BYTES = 8192
"""Bytes a baggage header carries at most (W3C Baggage, "Limits")."""
_VALUE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%+,;\\')
"""A value's characters sent as they are: W3C baggage-octets but ``%`` (escapes) and ``+`` (which a decoder
of form encoding would read as a space)."""


def header_value(values: Mapping[str, str]) -> str | None:
    """The ``baggage`` header for ``values`` (keys already W3C tokens), or None if there is nothing to send.

    Values are percent-encoded (UTF-8). Members that would pass 64 members or 8,192 bytes are left out,
    as the W3C spec allows, in the order given.
    """
    members: list[str] = []
    size = 0
    for key, value in values.items():
        member = f"{key}={quote(str(value), safe=_VALUE_SAFE)}"
        extra = len(member) + (1 if members else 0)
        if len(members) >= MAX_MEMBERS or size + extra > MAX_BYTES:
            continue
        members.append(member)
        size += extra
    return ",".join(members) or None
