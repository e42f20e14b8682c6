"""Bounded waits: run a call that may not honour its own timeout, and give up on it in time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("nexus_otel")


def call_within(fn: Callable[[], Any], timeout: float, what: str) -> bool:
    """Run ``fn`` on a daemon thread and wait at most ``timeout`` seconds; true if it finished.

    For shutdown steps whose libraries block longer than asked (an exporter
    retrying a silent endpoint): the process can exit on time, and the step
    goes on in the background until it does.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported below, on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"nexus-otel-{what}", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout))
    if thread.is_alive():
        log.warning("%s did not finish within %.1f s; going on without it", what, timeout)
        return False
    if errors:
        log.error("%s failed: %s: %s", what, type(errors[0]).__name__, errors[0])
    return True
