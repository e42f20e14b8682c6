"""Background threads run from the app's start (or its first execution) to its stop, and never from a constructor."""

from __future__ import annotations

import base64
import threading
import time

import pytest

from nexus_otel import Nexus
from nexus_otel.plugins import RequestLoggerPlugin, WebhookPlugin

from .webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes length").decode()


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


def _ours() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("nexus-otel-") and t.is_alive()}


def _app(tmp_path, receiver_url: str) -> Nexus:
    app = Nexus("lifecycle", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_TRACES_EXPORTER": "none",
                                      "OTEL_METRICS_EXPORTER": "console", "OTEL_METRIC_EXPORT_INTERVAL": "60000"})
    app.register("greet", lambda inputs: "hi")
    app.add_plugin(WebhookPlugin(receiver_url, secret=SECRET))
    app.add_plugin(RequestLoggerPlugin())
    return app


def _gone(names: set[str], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while names & _ours() and time.monotonic() < deadline:
        time.sleep(0.02)
    return not names & _ours()


WORKERS = {"nexus-otel-webhooks", "nexus-otel-request-log", "nexus-otel-metrics-console"}


@pytest.fixture(autouse=True)
def _no_threads_left_by_others():
    assert _gone(WORKERS), f"threads of an earlier test still run: {WORKERS & _ours()}"


def test_constructing_an_app_and_adding_plugins_starts_no_thread(tmp_path, receiver):
    """Nexus(), its telemetry (a metrics push) and plugins with workers: no thread until start()."""
    app = _app(tmp_path, receiver.url)
    try:
        assert not WORKERS & _ours()
        app.start()
        assert WORKERS <= _ours()
    finally:
        app.stop()
    assert _gone(WORKERS), _ours()


def test_an_app_never_started_starts_its_workers_at_its_first_execution(tmp_path, receiver):
    """A script that executes without start() (Kailash Nexus's plugin API allows it) still delivers its records."""
    app = _app(tmp_path, receiver.url)
    try:
        assert not WORKERS & _ours()
        app.execute_workflow("greet", {})
        assert WORKERS <= _ours()
        receiver.wait_for(lambda reqs: len(reqs) == 1, timeout=20)
    finally:
        app.stop()
    assert _gone(WORKERS), _ours()
    assert app.records.errors == {}


def test_a_plugin_added_to_a_started_app_starts_at_once(tmp_path, receiver):
    app = Nexus("late", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path), "OTEL_TRACES_EXPORTER": "none",
                                 "OTEL_METRICS_EXPORTER": "none"})
    app.register("greet", lambda inputs: "hi")
    app.start()
    try:
        assert "nexus-otel-webhooks" not in _ours()
        app.add_plugin(WebhookPlugin(receiver.url, secret=SECRET))
        assert "nexus-otel-webhooks" in _ours()
        app.execute_workflow("greet", {})
        receiver.wait_for(lambda reqs: len(reqs) == 1, timeout=20)
    finally:
        app.stop()
    assert _gone({"nexus-otel-webhooks"}), _ours()


def test_a_stopped_app_that_never_ran_stops_within_its_deadline(tmp_path, receiver):
    """stop() of an app whose workers never started returns at once (nothing to join, nothing lost)."""
    app = _app(tmp_path, receiver.url)
    started = time.monotonic()
    app.stop(timeout=5)
    assert time.monotonic() - started < 3
    assert not WORKERS & _ours()
