"""What a webhook sender knows about each destination now: its concurrency limit, a hold, its breaker.

The delivery worker's view of each receiver, for people: the concurrency
limit it has adapted to, a hold a ``Retry-After`` asked for, and whether its
circuit is open after failures. Shown as gauges (:mod:`.destination_metrics`)
and by ``nexus-otel webhooks status`` (:mod:`.destination_snapshots`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidDataError
from ..urls import mask_url


@dataclass(frozen=True, slots=True)
class DestinationState:
    """One destination as the sender sees it now (``destination`` is the URL as configured: mask it to show it)."""

    destination: str
    limit: int
    """Requests it may have in flight now (the adaptive limit)."""
    ceiling: int
    """The most it may ever have in flight (``max_in_flight``)."""
    in_flight: int
    held_until: float | None = None
    """``time.time()`` until which no new attempt goes to it (a ``Retry-After``), or None."""
    hold_reason: str = ""
    breaker: str = "closed"
    """``closed`` (deliveries go), ``open`` (waiting for the next probe after failures)."""
    breaker_until: float | None = None
    """``time.time()`` of the next probe while the breaker is open."""
    failures: int = 0
    """Failed attempts in the current outage."""
    max_rate: float | None = None
    """Deliveries per second at most, if set."""

    def as_dict(self) -> dict[str, Any]:
        """Its fields as JSON-ready values, the URL masked (what a status snapshot file holds)."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields["destination"] = mask_url(self.destination)
        return fields

    @classmethod
    def from_dict(cls, data: Any) -> DestinationState:
        """The state :meth:`as_dict` wrote (unknown keys, from a newer version, are ignored).

        A file is data from outside: a field of the wrong type is a ``ValueError`` naming it, not a
        ``TypeError`` later in whatever formats it.
        """
        if not isinstance(data, dict):
            raise InvalidDataError(f"a destination's state is a JSON object, not {type(data).__name__}")
        known = {name: data[name] for name in cls.__slots__ if name in data}
        missing = [name for name in _REQUIRED if name not in known]
        if missing:
            raise InvalidDataError(f"missing {', '.join(missing)}")
        for name, value in known.items():
            if not isinstance(value, _TYPES[name]) or isinstance(value, bool):
                raise InvalidDataError(f"{name}: {value!r} is not {_TYPE_NAMES[name]}")
        return cls(**known)

    def held(self, now: float) -> bool:
        """True while a ``Retry-After`` (or another hold) keeps new attempts from it."""
        return self.held_until is not None and self.held_until > now


_NUMBER_OR_NONE = (int, float, type(None))
_TYPES: dict[str, tuple[type, ...]] = {
    "destination": (str,), "limit": (int,), "ceiling": (int,), "in_flight": (int,),
    "held_until": _NUMBER_OR_NONE, "hold_reason": (str,), "breaker": (str,), "breaker_until": _NUMBER_OR_NONE,
    "failures": (int,), "max_rate": _NUMBER_OR_NONE,
}
_REQUIRED = ("destination", "limit", "ceiling", "in_flight")
_TYPE_NAMES = {name: " or ".join("null" if t is type(None) else t.__name__ for t in types)
               for name, types in _TYPES.items()}
