"""Loopback ports for the test servers, each parallel worker drawing from a range of its own.

``nexus_otel.serving.free_port`` gives a port that was free a moment ago; a server binds it a little later
(a Collector or Jaeger after its start-up, a ``serve`` process after its imports). Under ``-n 2`` the other
worker may take the same port in between, and the server fails with "address already in use". Here the ports
come from :data:`RANGE` (below ``free_port``'s range and the kernel's ephemeral one, the documented stack's
fixed ports left out), split into one slice per xdist worker: two workers never draw the same port. Outside
xdist a test draws from the whole range.
"""

from __future__ import annotations

import os

from nexus_otel import serving

RANGE = range(10_000, 20_000)
STACK_PORTS = frozenset({4317, 4318, 8000, 8888, 8889, 9090, 9428, 13133, 14133, 14269, 14317, 14318, 16685, 16686})
"""scripts/stack.sh's ports and its docs' app port: a test's server never takes one (tests/test_stack_docs.py)."""


def worker_slice(worker: str | None, count: str | None) -> range:
    """This worker's part of :data:`RANGE`: worker ``gwN`` of ``count`` gets the N-th of ``count`` equal slices."""
    if not worker or not count or not worker.startswith("gw"):
        return RANGE
    parts = int(count)
    index = int(worker[2:]) % parts  # a worker that replaces a crashed one (gw2, gw3, ...) takes a slice again
    size = len(RANGE) // parts
    return range(RANGE.start + index * size, RANGE.start + (index + 1) * size)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free a moment ago on ``host``, from this worker's slice (``PYTEST_XDIST_WORKER`` of
    ``PYTEST_XDIST_WORKER_COUNT``, which xdist sets in each worker), never one of :data:`STACK_PORTS`."""
    ports = worker_slice(os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT"))
    return serving.free_port(host, [port for port in ports if port not in STACK_PORTS])
