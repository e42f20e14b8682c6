"""The test servers' ports: each parallel worker draws from a slice of its own, never a stack port."""

from __future__ import annotations

import socket

from nexus_otel.serving import free_port as serving_free_port

from .ports import RANGE, STACK_PORTS, free_port, worker_slice


def test_each_worker_has_a_slice_of_its_own_and_alone_the_whole_range():
    """gw0 and gw1 of 2 get disjoint halves; outside xdist a test draws from the whole range."""
    first, second = worker_slice("gw0", "2"), worker_slice("gw1", "2")
    assert not set(first) & set(second) and set(first) | set(second) == set(RANGE)
    assert worker_slice(None, None) == worker_slice("master", "2") == RANGE
    assert worker_slice("gw2", "2") == first and worker_slice("gw3", "2") == second, "a replacement stays in RANGE"


def test_a_port_comes_from_the_workers_slice_is_free_and_is_no_stack_port(monkeypatch):
    """free_port() under gw1 of 2: a bindable port in the upper half, never one scripts/stack.sh needs."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    ports = {free_port() for _ in range(50)}
    assert ports <= set(worker_slice("gw1", "2")) and not ports & STACK_PORTS
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_the_range_is_below_the_one_the_product_draws_from():
    """Ports from here never meet those nexus_otel.serving.free_port hands out (its range starts higher)."""
    assert all(serving_free_port() >= RANGE.stop for _ in range(50))
