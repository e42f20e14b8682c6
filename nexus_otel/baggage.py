"""W3C baggage the app passes on: the keys it is told to keep, redacted, bounded as the W3C spec says.

Baggage arriving with a request (``baggage: tenant=acme,user.id=42``) is read by the
app's propagators (``OTEL_PROPAGATORS``, :attr:`~nexus_otel.telemetry.telemetry.Telemetry.propagator`);
a Python caller may attach its own (``context.attach(baggage.set_baggage("tenant", "acme"))``).
Only the keys listed in ``NEXUS_OTEL_BAGGAGE_KEYS`` (or ``Nexus(baggage_keys=...)``) go further:
onto the workflow span, its record (so audit rows and webhook payloads carry them), its log
records, and the ``baggage`` header of its webhook requests. Unlisted baggage stops at the app.

Bounds (W3C Baggage, "Limits"): at most 64 members and 8,192 bytes, each member counted as it
is sent (``key=percent-encoded value``, plus a comma between members). Members past either
bound are left out, in the order the keys are listed, as the spec allows; what is kept is the
same everywhere (span, record, logs, header). Values are redacted with the app's
:class:`~nexus_otel.redaction.Redactor` before they are bounded: a sensitive key's value is
masked, secrets inside a value are masked, a long value is cut (``Redactor.max_value_length``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from opentelemetry import baggage as baggage_api
from opentelemetry.context import Context

from .redaction import Redactor

MAX_MEMBERS = 64
"""List members a baggage header carries at most (W3C Baggage, "Limits")."""
MAX_BYTES = 8192
"""Bytes a baggage header carries at most (W3C Baggage, "Limits")."""
_VALUE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%+,;\\')
"""A value's characters sent as they are: W3C baggage-octets but ``%`` (escapes) and ``+`` (which a decoder
of form encoding would read as a space)."""


def _members(values: Mapping[str, str]) -> Iterator[tuple[str, str, str]]:
    """``(key, value, member)`` for each of ``values`` that fits the W3C bounds, in the order given."""
    count = 0
    size = 0
    for key, value in values.items():
        member = f"{key}={quote(str(value), safe=_VALUE_SAFE)}"
        extra = len(member) + (1 if count else 0)
        if count >= MAX_MEMBERS or size + extra > MAX_BYTES:
            continue
        count += 1
        size += extra
        yield key, value, member


def bounded(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` without the members that would pass 64 members or 8,192 bytes (as :func:`header_value`
    counts them), in the order given."""
    # A character is at most 4 bytes of UTF-8, each sent as %XX: when even that fits, nothing need be encoded.
    if len(values) <= MAX_MEMBERS and sum(len(k) + 12 * len(str(v)) + 2 for k, v in values.items()) <= MAX_BYTES:
        return dict(values)
    return {key: value for key, value, _ in _members(values)}


def header_value(values: Mapping[str, str]) -> str | None:
    """The ``baggage`` header for ``values`` (keys already W3C tokens), or None if there is nothing to send.

    Values are percent-encoded (UTF-8). Members that would pass 64 members or 8,192 bytes are left out,
    as the W3C spec allows, in the order given.
    """
    return ",".join(member for _, _, member in _members(values)) or None


def add_under(attributes: dict[str, Any], values: Mapping[str, str] | None) -> None:
    """Add the picked ``values`` to ``attributes``, each named by its key; an attribute already there (the
    contract's, of the same name) wins."""
    if values:
        for key, value in values.items():
            attributes.setdefault(key, value)


class BaggagePicker:
    """Picks the listed keys from a context's baggage: redacted, bounded, ready for a span and a record.

    Made once per app, and only when keys are listed: with none, the app makes no picker and does
    nothing per execution.
    """

    __slots__ = ("keys", "_redactor")

    def __init__(self, keys: Sequence[str], redactor: Redactor) -> None:
        self.keys = tuple(keys)
        """The listed keys, in order (the order bounds apply in)."""
        self._redactor = redactor

    def pick(self, context: Context | None = None) -> dict[str, str] | None:
        """The listed keys present in ``context``'s baggage (the current context by default), or None."""
        entries = baggage_api.get_all(context)
        if not entries:
            return None
        found = {key: str(entries[key]) for key in self.keys if key in entries}
        if not found:
            return None
        redacted = self._redactor(found)
        return bounded({key: str(redacted[key]) for key in found if key in redacted}) or None


MAX_METRIC_COMBINATIONS = 1000
"""Distinct combinations of metric keys' values an app puts on its workflow metrics at most; later ones are
recorded as :data:`OTHER` (a client choosing baggage values must not be able to mint series without end)."""
OTHER = "_OTHER"
"""The value a metric key takes once :data:`MAX_METRIC_COMBINATIONS` is reached (as the HTTP semantic
conventions' ``_OTHER`` method)."""


class MetricBaggage:
    """The values of the metric keys (``NEXUS_OTEL_BAGGAGE_METRIC_KEYS``) an execution's metrics carry.

    :meth:`values` gives a hashable key for the execution's series (None: no metric key present, the
    plain series); :meth:`attributes` the attributes it adds. A key absent from the baggage is left out
    of the attributes. At most :data:`MAX_METRIC_COMBINATIONS` combinations of values are told apart
    (about: concurrent first sightings may pass it by a few); every later one is :data:`OTHER`.
    """

    __slots__ = ("keys", "_seen")

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)
        self._seen: set[tuple[str | None, ...]] = set()

    def values(self, baggage: Mapping[str, str] | None) -> tuple[str | None, ...] | None:
        """The metric keys' values in ``baggage`` (picked already), or None when it has none of them."""
        if not baggage:
            return None
        values = tuple(baggage.get(key) for key in self.keys)
        if values.count(None) == len(values):
            return None
        if values not in self._seen:
            if len(self._seen) >= MAX_METRIC_COMBINATIONS:
                return tuple(None if value is None else OTHER for value in values)
            self._seen.add(values)
        return values

    def attributes(self, values: tuple[str | None, ...]) -> dict[str, str]:
        """The metric attributes of ``values``: each present key, named by itself."""
        return {key: value for key, value in zip(self.keys, values) if value is not None}
