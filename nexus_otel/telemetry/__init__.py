"""Telemetry set-up and the span and metric contract."""

from .config import TelemetryConfig
from .telemetry import Telemetry

__all__ = ["Telemetry", "TelemetryConfig"]
