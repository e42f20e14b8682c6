"""pytest fixtures for nexus-otel, registered through the ``pytest11`` entry point.

- ``nexus_capture``: a :class:`~nexus_otel.testing.CapturedTelemetry`.
- ``nexus_app``: a fresh, started :class:`~nexus_otel.Nexus` wired to it; stopped after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .app import Nexus
from .testing import CapturedTelemetry


@pytest.fixture
def nexus_capture() -> Iterator[CapturedTelemetry]:
    capture = CapturedTelemetry()
    yield capture
    capture.shutdown()


@pytest.fixture
def nexus_app(nexus_capture: CapturedTelemetry) -> Iterator[Nexus]:
    app = nexus_capture.app("test").start()
    yield app
    app.stop()
