"""The adaptive concurrency limit, the gate in front of each destination, Retry-After and the breaker's holds.

Driven directly (no network), with the clock passed in: what each kind of answer does to the limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

import pytest

from nexus_otel.exporters.adaptive_limit import CUT, INITIAL, AdaptiveLimit
from nexus_otel.exporters.gate import Gate, Held
from nexus_otel.exporters.retry_after import retry_after_seconds
from nexus_otel.outbox import CircuitBreaker

RTT = 0.05


def _round(limit: AdaptiveLimit, now: float, seconds: float = RTT) -> None:
    """One round trip at the limit: as many clean answers as requests in flight."""
    n = limit.allowed
    for _ in range(n):
        limit.answered(seconds, n - 1, now)


def test_slow_start_doubles_each_round_trip_up_to_the_ceiling():
    limit = AdaptiveLimit(ceiling=128)
    assert limit.allowed == INITIAL
    seen = []
    for k in range(8):
        _round(limit, k * RTT)
        seen.append(limit.allowed)
    assert seen[:4] == [8, 16, 32, 64]
    assert seen[-1] == 128, "the ceiling (max_in_flight) is the most"


def test_an_unused_limit_does_not_grow():
    limit = AdaptiveLimit(ceiling=128)
    for _ in range(100):
        limit.answered(RTT, 0, 0.0)  # one request at a time: the limit of 4 was never reached
    assert limit.allowed == INITIAL


def test_overload_cuts_once_per_round_trip():
    limit = AdaptiveLimit(ceiling=128, initial=40)
    assert limit.overloaded(now=10.0)
    assert limit.allowed == int(40 * CUT)
    # The other requests in flight when the receiver filled up: the same signal, not more cuts.
    assert not limit.overloaded(now=10.01)
    assert not limit.overloaded(now=10.04)
    assert limit.allowed == int(40 * CUT)
    assert limit.overloaded(now=11.0)
    assert limit.allowed == int(40 * CUT * CUT)


def test_growth_is_slow_near_the_last_overload_and_resumes_past_it():
    limit = AdaptiveLimit(ceiling=128, initial=5)
    limit.overloaded(now=0.0)  # a receiver that takes 4: the fifth got a 503
    answers_to_get_back = 0
    while limit.allowed < 5:
        limit.answered(RTT, limit.allowed - 1, 1.0)
        answers_to_get_back += 1
    # Additive increase alone would take about 4 answers from 3.5 to 5; near the plateau it is 8 times slower.
    assert answers_to_get_back > 20
    for _ in range(200):  # no overload at 5 and beyond: the plateau is forgotten, growth is normal again
        limit.answered(RTT, limit.allowed - 1, 2.0)
    assert limit.plateau is None and limit.allowed > 8


def test_a_queue_forming_stops_growth_and_drains():
    limit = AdaptiveLimit(ceiling=128, initial=32)
    for _ in range(32):
        limit.answered(RTT, 31, 0.0)
    grown = limit.limit
    for k in range(640):  # ten round trips' worth of answers, over half a second
        limit.answered(RTT * 4, 31, 1.0 + k / 1280)  # answers four times slower: requests queue at the receiver
    assert not limit.slow_start
    assert limit.limit < grown - 5


def test_the_usual_answer_time_follows_a_slower_receiver():
    limit = AdaptiveLimit(ceiling=128)
    limit.answered(0.001, 3, 0.0)
    for k in range(300):  # slower for good: 30 s of answers
        limit.answered(0.2, 3, 1.0 + k / 10)
    assert limit.baseline is not None and limit.baseline > 0.15


def test_a_ceiling_below_one_is_refused():
    with pytest.raises(ValueError, match="ceiling"):
        AdaptiveLimit(ceiling=0)


# -- the gate --------------------------------------------------------------------------------------
def test_the_gate_admits_up_to_the_limit_and_wakes_waiters_as_requests_end():
    async def scenario() -> list[int]:
        gate = Gate(ceiling=128)
        admitted: list[int] = []

        async def request(i: int) -> None:
            await gate.enter(None)
            admitted.append(i)

        tasks = [asyncio.ensure_future(request(i)) for i in range(10)]
        await asyncio.sleep(0.01)
        first = len(admitted)
        for _ in range(3):
            gate.done(RTT)
        await asyncio.sleep(0.01)
        second = len(admitted)
        for task in tasks:
            task.cancel()
        return [first, second]

    first, second = asyncio.run(scenario())
    assert first == INITIAL
    assert second > first


def test_a_hold_turns_away_waiting_and_new_requests():
    async def scenario() -> tuple[Held, Held]:
        gate = Gate(ceiling=4)
        for _ in range(4):
            await gate.enter(None)
        waiting = asyncio.ensure_future(gate.enter(None))
        await asyncio.sleep(0.01)
        gate.hold(2.0, "Retry-After 2 s (HTTP 429)")
        with pytest.raises(Held) as turned_away:
            await waiting
        with pytest.raises(Held) as new:
            await gate.enter(None)
        return turned_away.value, new.value

    turned_away, new = asyncio.run(scenario())
    assert new.reason == "Retry-After 2 s (HTTP 429)"
    assert 1.5 < new.until - time.time() <= 2.0


def test_a_request_whose_deadline_comes_while_it_waits_is_not_started():
    async def scenario() -> None:
        gate = Gate(ceiling=1)
        await gate.enter(None)
        with pytest.raises(Held, match="deadline"):
            await gate.enter(time.monotonic() + 0.05)

    asyncio.run(scenario())


def test_a_request_gone_from_the_queue_does_not_hold_up_those_after_it():
    async def scenario() -> None:
        gate = Gate(ceiling=1)
        await gate.enter(None)
        with pytest.raises(Held):  # waits, and its deadline comes
            await gate.enter(time.monotonic() + 0.02)
        gate.done(0.001)  # the place is free again: a new request takes it at once
        assert gate.try_enter()

    asyncio.run(scenario())


def test_a_place_is_handed_to_the_first_waiting_request():
    async def scenario() -> list[int]:
        gate = Gate(ceiling=1)
        order: list[int] = []
        await gate.enter(None)

        async def request(i: int) -> None:
            await gate.enter(None)
            order.append(i)
            await asyncio.sleep(0)
            gate.done(0.001)

        tasks = [asyncio.ensure_future(request(i)) for i in range(5)]
        await asyncio.sleep(0)
        gate.done(0.001)
        await asyncio.gather(*tasks)
        assert gate.in_flight == 0
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]


def test_max_rate_spaces_admissions():
    async def scenario() -> float:
        gate = Gate(ceiling=128, max_rate=50.0)
        started = time.monotonic()
        for _ in range(6):
            await gate.enter(None)
            gate.done(0.001)
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 5 / 50.0 * 0.9


def test_new_connections_go_at_a_bounded_pace():
    from nexus_otel.exporters.gate import CONNECT_BURST, CONNECT_SPACING

    async def scenario() -> list[float]:
        gate = Gate(ceiling=128)
        times = []
        for _ in range(CONNECT_BURST * 3):
            await gate.connect_turn()
            times.append(time.monotonic())
        return times

    times = asyncio.run(scenario())
    assert times[CONNECT_BURST - 1] - times[0] < CONNECT_SPACING  # the burst at once
    # then one per CONNECT_SPACING: n connections after the burst take at least n spacings
    n = len(times) - CONNECT_BURST
    assert times[-1] - times[CONNECT_BURST - 1] >= n * CONNECT_SPACING * 0.95


def test_a_slow_connection_is_an_overload_signal():
    gate = Gate(ceiling=128)
    gate.limit.limit = 20.0
    gate.connected(0.001)
    assert gate.limit.allowed == 20
    gate.connected(1.02)  # a SYN dropped by a full accept queue and sent again after 1 s
    assert gate.limit.allowed == int(20 * CUT)


def test_a_far_receivers_usual_connect_time_is_not_overload():
    gate = Gate(ceiling=128)
    gate.limit.limit = 20.0
    gate.connected(0.6)  # TLS across the world: a few round trips of 200 ms
    gate.connected(0.9)
    assert gate.limit.allowed == 20


def test_a_slow_rate_still_lets_one_request_of_each_batch_wait_for_its_token():
    async def scenario() -> tuple[list[object], float]:
        gate = Gate(ceiling=128, max_rate=0.9)  # a token every 1.11 s: more than RATE_WAIT
        assert gate.try_enter()  # the token now; the next is 1.11 s off
        started = time.monotonic()
        results = await asyncio.gather(gate.enter(None), gate.enter(None), return_exceptions=True)
        return results, time.monotonic() - started

    (first, second), took = asyncio.run(scenario())
    assert first is None and took >= 1.0, "the next token is one interval off: it waits for it"
    assert isinstance(second, Held), "two intervals off: held back until the next batch"


def test_a_max_rate_below_the_least_is_refused(tmp_path):
    from nexus_otel.errors import PluginSetupError
    from nexus_otel.plugins import WebhookPlugin
    from nexus_otel.testing import CapturedTelemetry

    app = CapturedTelemetry("rate").app("rate")
    with pytest.raises(PluginSetupError, match="WebhookPlugin.max_rate"):
        app.add_plugin(WebhookPlugin("http://127.0.0.1:9/hook", outbox_path=tmp_path / "o.sqlite", max_rate=0.01))


# -- Retry-After ------------------------------------------------------------------------------------
@pytest.mark.parametrize("value, seconds", [("2", 2.0), (" 120 ", 120.0), ("0", 0.0), ("-5", 0.0), ("1.5", 1.5),
                                            (None, None), ("", None), ("soon", None), ("nan", None)])
def test_retry_after_in_seconds(value, seconds):
    assert retry_after_seconds(value) == seconds


def test_retry_after_as_an_http_date():
    now = dt.datetime(2026, 12, 7, 2, 0, 0, tzinfo=dt.timezone.utc)
    assert retry_after_seconds("Mon, 07 Dec 2026 02:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Mon, 07 Dec 2026 01:00:00 GMT", now) == 0.0  # a date past: at once


# -- the breaker's holds ------------------------------------------------------------------------------
def test_a_hold_opens_only_its_destination_and_logs_its_start_and_end(caplog):
    caplog.set_level(logging.WARNING)
    breaker = CircuitBreaker(name="webhooks")
    breaker.succeeded("http://a/", 0.0)
    breaker.hold("http://a/", 102.0, "Retry-After 2 s (HTTP 429)", 100.0)
    breaker.hold("http://a/", 101.5, "Retry-After 1.5 s (HTTP 429)", 100.0)  # a second answer asking less: one hold
    assert breaker.is_open("http://a/", 101.0) and not breaker.is_open("http://b/", 101.0)
    assert breaker.open_circuits(101.0) == [("http://a/", 102.0)]
    state = breaker.state("http://a/", 101.0)
    assert state.held_until == 102.0 and state.hold_reason == "Retry-After 2 s (HTTP 429)" and state.open_until is None
    assert breaker.is_up("http://a/"), "a held destination is up: no probe needed after the hold"
    assert not breaker.is_open("http://a/", 102.5)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("asked for a pause" in line for line in lines) == 1
    assert sum("hold over" in line for line in lines) == 1
