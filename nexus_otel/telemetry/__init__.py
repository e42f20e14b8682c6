"""Telemetry set-up and the span and metric contract.

The set-up is :class:`~nexus_otel.telemetry.telemetry.Telemetry` (the providers, processors and sinks) from
:class:`~nexus_otel.telemetry.config.TelemetryConfig` (the ``OTEL_*`` settings, read once); the contract
(``nexus_otel.telemetry.contract``) is the span names, attributes and metrics every part of nexus-otel speaks.

Importing ``nexus_otel.telemetry.contract`` runs this ``__init__`` first, and modules the set-up imports (the tail
sampler) need the contract: so this ``__init__`` imports nothing when it runs. ``Telemetry`` and
``TelemetryConfig`` can still be imported from here: they are loaded on first use (a module ``__getattr__``,
which runs only once this package is initialised).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers see the names; at run time __getattr__ loads them
    from .config import TelemetryConfig
    from .telemetry import Telemetry

__all__ = ["Telemetry", "TelemetryConfig"]


def __getattr__(name: str) -> Any:
    if name == "Telemetry":
        from .telemetry import Telemetry

        return Telemetry
    if name == "TelemetryConfig":
        from .config import TelemetryConfig

        return TelemetryConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
