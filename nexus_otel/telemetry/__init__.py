"""Telemetry set-up and the span and metric contract.

The set-up is :class:`~nexus_otel.telemetry.telemetry.Telemetry` (the providers, processors and sinks) from
:class:`~nexus_otel.telemetry.config.TelemetryConfig` (the ``OTEL_*`` settings, read once); the contract
(``nexus_otel.telemetry.contract``) is the span names, attributes and metrics every part of nexus-otel speaks.

This ``__init__`` imports nothing: importing ``nexus_otel.telemetry.contract`` runs it first, and modules
the set-up itself imports (the tail sampler) need the contract, so a set-up imported here would make
every import of the contract a cycle. Import each name from its module.
"""

__all__: list[str] = []
