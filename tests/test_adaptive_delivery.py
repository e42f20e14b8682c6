"""Webhook delivery adapts to each receiver: receivers as users run them get everything, without a flood.

The receivers are not tuned to the sender (``tests/plain_receivers.py``): Python's stock
``ThreadingHTTPServer`` (an accept queue of 5, a connection per request) and a pool of four
workers that answers 503 beyond them. The sender starts with a few requests in flight and
learns each receiver's limit from its answers; a ``Retry-After`` holds its destination only.
"""

from __future__ import annotations

import socket
import time

import pytest
from click.testing import CliRunner

from nexus_otel import cli
from nexus_otel.exporters.adaptive_limit import INITIAL
from nexus_otel.plugins import WebhookPlugin
from nexus_otel.testing import CapturedTelemetry

from .plain_receivers import PoolReceiver, StockReceiver
from .webhook_receiver import WebhookReceiver


def _app(tmp_path, urls, **kwargs):
    app = CapturedTelemetry("adaptive").app("adaptive")
    webhook = WebhookPlugin(urls, outbox_path=tmp_path / "outbox.sqlite", secret=None, **kwargs)
    app.add_plugin(webhook)
    app.register("ship", lambda inputs: inputs["n"])
    return app, webhook


def test_a_stock_http_server_gets_every_payload_before_stop_returns(tmp_path, caplog):
    n = 500
    with StockReceiver() as receiver:
        app, webhook = _app(tmp_path, receiver.url)
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        time.sleep(0.2)
        app.stop()  # the default deadline
        delivered = receiver.delivered()
        attempts = receiver.attempts
    assert len(delivered) == n, f"{len(delivered)} of {n} delivered before stop() returned"
    assert len(set(delivered)) == n, "a payload was delivered twice"
    assert webhook.outbox.counts() == {"pending": 0, "dead": 0}
    assert "left in" not in caplog.text
    assert len(attempts) == n, f"{len(attempts) - n} attempts failed or were repeated"


def test_a_slow_stock_http_server_gets_500_within_12_seconds(tmp_path):
    n = 500
    with StockReceiver(delay=0.05) as receiver:
        app, _ = _app(tmp_path, receiver.url)
        started = time.monotonic()
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        receiver.wait_for(n, timeout=12 - (time.monotonic() - started))
        took = time.monotonic() - started
        app.stop()
        delivered = receiver.delivered()
    assert len(set(delivered)) == len(delivered) == n, f"{len(delivered)} of {n} within {took:.1f} s"
    assert took <= 12


def test_a_receiver_that_serves_four_at_a_time_gets_few_503s(tmp_path):
    n = 1000
    with PoolReceiver(capacity=4, work=0.02) as receiver:
        app, webhook = _app(tmp_path, receiver.url)
        started = time.monotonic()
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        assert receiver.wait_for(n, timeout=60), f"{len(receiver.delivered())} of {n} delivered in 60 s"
        app.stop()
        attempts = receiver.attempts
    assert len(set(receiver.delivered())) == n
    later = [a for a in attempts if a.at - started > 2.0]
    refused = sum(a.status == 503 for a in later)
    assert later and refused / len(later) < 0.05, f"{refused} of {len(later)} attempts after 2 s got a 503"
    assert webhook.stats()["failed"] == 0


def test_retry_after_holds_that_destination_only(tmp_path, caplog):
    n = 40
    with WebhookReceiver() as busy, WebhookReceiver() as calm:
        busy.set_status(429)
        busy.set_retry_after(2)
        app, webhook = _app(tmp_path, [busy.url, calm.url])
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        calm.wait_for_count(n, timeout=10)
        first = busy.wait_for(lambda reqs: reqs, timeout=10)[0].received_at
        time.sleep(max(0.0, first + 1.6 - time.time()))  # the state is published once a second
        held = {s.destination: s for s in webhook.exporter.destinations()}
        status = CliRunner().invoke(cli.main, ["webhooks", "status", "--outbox", str(tmp_path / "outbox.sqlite")])
        time.sleep(max(0.0, first + 2.3 - time.time()))
        busy.set_status(200)
        busy.set_retry_after(None)
        busy.wait_for(lambda reqs: sum(r.status == 200 for r in reqs) >= n, timeout=15)
        calm_done = max(r.received_at for r in calm.requests())
        app.stop()
        attempts = busy.requests()
    # Requests already in flight when the first 429 came arrive with it; after that, nothing for 2 s.
    during = [r for r in attempts if first + 0.1 < r.received_at < first + 2.0]
    assert during == [], f"{len(during)} attempts within the 2 s the receiver asked for"
    assert calm_done < first + 2.0, "the other destination waited for the held one"
    assert sorted({r.headers["webhook-id"] for r in attempts if r.status == 200}) == sorted(
        {r.headers["webhook-id"] for r in calm.requests()})
    assert "asked for a pause" in caplog.text and "Retry-After 2 s (HTTP 429)" in caplog.text
    # The hold is visible while it lasts: in the sender's state and in `nexus-otel webhooks status`.
    assert held[busy.url].held_until is not None and held[busy.url].hold_reason == "Retry-After 2 s (HTTP 429)"
    assert held[calm.url].held_until is None
    busy_line = next(line for line in status.output.splitlines() if busy.url in line)
    assert "held until" in busy_line and "Retry-After 2 s (HTTP 429)" in busy_line, status.output
    assert webhook.stats()["failed"] == 0


@pytest.fixture
def unaccepting_port():
    """A port that listens and never accepts, its accept queue full: connection attempts hang (SYNs dropped)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the queue (Linux keeps backlog + 1)
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/hook"
    for c in fillers:
        c.close()
    server.close()


def test_connect_and_answer_timeouts_are_counted_apart(tmp_path, unaccepting_port):
    with WebhookReceiver() as hanging:
        hanging.set_hang(5)
        app, webhook = _app(tmp_path, [unaccepting_port, hanging.url], connect_timeout=0.3, timeout=0.5)
        app.execute_workflow("ship", {"n": 1})
        attempts = webhook.exporter.attempts.counts
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (attempts["connect_timeout"] and attempts["answer_timeout"]):
            time.sleep(0.05)
        counts = dict(attempts)
        app.stop(timeout=1)
    assert counts["connect_timeout"] >= 1 and counts["answer_timeout"] >= 1, counts
    assert counts["delivered"] == 0


def test_max_rate_spaces_deliveries(tmp_path, caplog):
    n, rate = 60, 40.0  # more than a second's worth: the rest of a batch waits for the next, quietly
    with WebhookReceiver() as receiver:
        app, webhook = _app(tmp_path, receiver.url, max_rate=rate)
        for i in range(n):
            app.execute_workflow("ship", {"n": i})
        requests = receiver.wait_for_count(n, timeout=10)
        app.stop()
    times = sorted(r.received_at for r in requests)
    span = times[-1] - times[0]
    # n arrivals at `rate` a second take at least (n - 1) / rate (a little noise allowed), each arrives once.
    assert span >= 0.9 * (n - 1) / rate, f"{n} deliveries in {span:.2f} s at max_rate={rate}"
    assert len({r.headers["webhook-id"] for r in requests}) == n
    assert webhook.stats()["retried"] == 0 and webhook.stats()["failed"] == 0
    assert "pause" not in caplog.text and "unavailable" not in caplog.text


def test_a_burst_to_a_stock_server_grows_the_limit_and_fails_nothing(tmp_path):
    """A stock server's accept queue (5) is never overrun: no failed attempt, and the limit grew past its start.

    The sender counts an attempt when it has read the answer, after the receiver has logged it: the test
    waits for the sender's own count. The limit is sampled while the burst runs (on a loaded machine the
    answer times swing, and the queueing signal may bring it down again once the burst is over).
    """
    with StockReceiver() as receiver:
        app, webhook = _app(tmp_path, receiver.url)
        attempts = webhook.exporter.attempts.counts
        peak = 0.0
        for i in range(300):
            app.execute_workflow("ship", {"n": i})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(attempts.values()) < 300:
            peak = max([peak] + [s.limit for s in webhook.exporter.destinations()])
            time.sleep(0.002)
        counts = dict(attempts)
        (state,) = webhook.exporter.destinations()
        app.stop()
    assert counts["delivered"] == 300 and sum(counts.values()) == 300, (
        f"{len(receiver.delivered())} of 300 arrived; attempts {counts}, {state}")
    assert len(set(receiver.delivered())) == 300
    assert peak > INITIAL and state.ceiling == 128 and state.breaker == "closed", (peak, state)
