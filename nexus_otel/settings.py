"""Checking plugin settings at setup, with errors naming the setting, the value and what was expected."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigurationError, UnknownSettingError


def with_config(plugin: str, config: Mapping[str, Any] | None, **given: Any) -> dict[str, Any]:
    """The settings ``given`` as keyword arguments, each replaced by its entry in ``config`` if there is one.

    Kailash Nexus's plugin API passes some plugins a ``config`` dict instead of keywords. A key
    that is not one of the settings is an :class:`UnknownSettingError` naming it (a ``TypeError``, as an
    unknown keyword would be).
    """
    options = dict(config or {})
    unknown = sorted(set(options) - set(given))
    if unknown:
        raise UnknownSettingError(plugin, unknown, sorted(given))
    return {**given, **options}


def number(setting: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
           strictly_positive: bool = False, integer: bool = False) -> float:
    """A real number (never a bool) within bounds."""
    kind = "a whole number" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigurationError(setting, value, _expect(kind, minimum, maximum, strictly_positive))
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise ConfigurationError(setting, value, _expect(kind, minimum, maximum, strictly_positive))
    if (strictly_positive and value <= 0) or (minimum is not None and value < minimum) or (
        maximum is not None and value > maximum
    ):
        raise ConfigurationError(setting, value, _expect(kind, minimum, maximum, strictly_positive))
    return value


def choice(setting: str, value: Any, allowed: Iterable[str]) -> str:
    options = tuple(allowed)
    if not isinstance(value, str) or value.lower() not in options:
        raise ConfigurationError(setting, value, "one of " + ", ".join(repr(o) for o in options))
    return value.lower()


def names(setting: str, value: Any) -> frozenset[str] | None:
    """``None`` (meaning all) or a collection of non-empty strings."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    items = list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
    if items is None or not all(isinstance(v, str) and v for v in items):
        raise ConfigurationError(setting, value, "None or a list of names")
    return frozenset(items)


def _expect(kind: str, minimum: float | None, maximum: float | None, positive: bool) -> str:
    if positive and maximum is not None:
        return f"{kind} greater than 0 and at most {maximum}"
    if positive:
        return f"{kind} greater than 0"
    if minimum is not None and maximum is not None:
        return f"{kind} from {minimum} to {maximum}"
    if minimum is not None:
        return f"{kind} of at least {minimum}"
    return kind
