"""Webhooks are delivered many at a time, within a per-destination limit, each exactly once.

A receiver that answers slowly no longer caps delivery at one payload per
answer time: the worker keeps up to ``max_in_flight`` requests in flight per
destination over pooled keep-alive connections. The figures here are relative
to the receiver's own delay, never absolute times.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from nexus_otel.exporters.http_poster import ConcurrentPoster, Post, PostFailed, PostTimeout, Reply
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.testing import CapturedTelemetry

from .faults import closed_port_url
from .webhook_receiver import WebhookReceiver

HANG = 0.2  # seconds the receiver takes to answer each request


def _max_in_flight(requests) -> int:
    """The most requests the receiver was holding at once (each is held from arrival for its hang)."""
    edges = sorted([(r.received_at, 1) for r in requests] + [(r.received_at + r.hang, -1) for r in requests],
                   key=lambda e: (e[0], e[1]))
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


def _app_with_webhook(tmp_path, url: str, **kwargs):
    app = CapturedTelemetry("concurrency").app("concurrency")
    webhook = WebhookPlugin(url, outbox_path=tmp_path / "outbox.sqlite", **kwargs)
    app.add_plugin(webhook)
    app.register("ship", lambda inputs: inputs["n"])
    return app, webhook


def test_a_slow_receiver_gets_many_payloads_at_once_each_exactly_once(tmp_path):
    n = 100
    with WebhookReceiver() as receiver:
        receiver.set_hang(HANG)
        app, _ = _app_with_webhook(tmp_path, receiver.url)
        started = time.monotonic()
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        receiver.wait_for(lambda reqs: len(reqs) >= n, timeout=60)
        took = time.monotonic() - started
        app.stop()
    ids = [r.headers["webhook-id"] for r in receiver.requests()]
    assert len(ids) == len(set(ids)) == n
    # One at a time this takes n * HANG (20 s); in flight together, a few rounds of HANG.
    assert took < n * HANG / 5, f"{n} payloads to a receiver answering in {HANG} s took {took:.1f} s"
    assert _max_in_flight(receiver.requests()) >= 10


def test_the_per_destination_limit_holds(tmp_path):
    with WebhookReceiver() as receiver:
        receiver.set_hang(HANG)
        app, _ = _app_with_webhook(tmp_path, receiver.url, max_in_flight=4)
        for i in range(24):
            app.execute_workflow("ship", {"n": i})
        receiver.wait_for(lambda reqs: len(reqs) >= 24, timeout=60)
        app.stop()
    most = _max_in_flight(receiver.requests())
    assert 2 <= most <= 4, most


def test_max_in_flight_is_checked(tmp_path):
    from nexus_otel.errors import PluginSetupError

    app = CapturedTelemetry("bad").app("bad")
    with pytest.raises(PluginSetupError, match="WebhookPlugin.max_in_flight=0: expected a whole number from 1"):
        app.add_plugin(WebhookPlugin("http://127.0.0.1:9/hook", outbox_path=tmp_path / "o.sqlite", max_in_flight=0))


def test_the_poster_returns_each_posts_answer_in_order():
    with WebhookReceiver() as ok, WebhookReceiver(status=503) as down:
        down.set_retry_after(7)
        ok.set_hang(0.0)
        slow = WebhookReceiver()
        with slow:
            slow.set_hang(2.0)
            poster = ConcurrentPoster(per_destination=8)
            try:
                replies = poster.post_all([
                    Post(ok.url, b"{}", {"content-type": "application/json"}, 5.0),
                    Post(down.url, b"{}", {}, 5.0),
                    Post(closed_port_url(), b"{}", {}, 5.0),
                    Post(slow.url, b"{}", {}, 0.3),
                ])
            finally:
                poster.close()
    assert replies[0] == Reply(200, None)
    assert replies[1] == Reply(503, "7")
    assert isinstance(replies[2], PostFailed)
    assert isinstance(replies[3], PostTimeout)
    assert ok.requests()[0].body == b"{}"


def test_a_drain_ends_at_its_deadline_and_leaves_what_never_started_unspent(tmp_path):
    with WebhookReceiver() as receiver:
        app, webhook = _app_with_webhook(tmp_path, receiver.url, max_in_flight=2)
        app.execute_workflow("ship", {"n": -1})
        receiver.wait_for(lambda reqs: len(reqs) == 1, timeout=10)  # the destination is known to be up
        receiver.set_hang(5.0)
        for i in range(20):
            app.execute_workflow("ship", {"n": i})
        started = time.monotonic()
        app.stop(timeout=2.0)
        took = time.monotonic() - started
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        attempts = [row[0] for row in db.execute("SELECT attempts FROM outbox WHERE state = 'pending'")]
    # The worker's share of stop() is half the timeout; requests queued behind the two in flight
    # are not started once it has passed, so stop() is not held up by them.
    assert took < 2.0 + 1.0, f"stop(timeout=2) took {took:.1f} s"
    assert len(receiver.requests()) <= 1 + 2 * 2  # at most two rounds of two started
    assert len(attempts) == 20 and attempts.count(0) >= 15, attempts
