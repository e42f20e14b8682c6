"""Shared test set-up: every test gets fresh providers through nexus_otel.testing's fixtures."""

import pytest

from nexus_otel.testing import CapturedTelemetry


@pytest.fixture
def capture():
    """In-memory span and metric capture (the same tool plugin authors use)."""
    cap = CapturedTelemetry()
    yield cap
    cap.shutdown()
