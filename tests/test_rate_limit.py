"""RateLimitPlugin end to end: real HTTP servers, real concurrency, a real Redis shared by two processes.

Budgets are keyed by what was verified (the principal or API key AuthPlugin let in, a header the
deployment trusts) or else the client address, never by a credential nobody checked.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nexus_otel.caller import Caller
from nexus_otel.errors import PluginSetupError, RateLimitExceeded
from nexus_otel.plugins import AuthPlugin, RateLimitPlugin
from nexus_otel.serving import BackgroundServer

from .redis_server import RedisServer
from .served import Served, cli_env, nexus_otel

LIMIT, BURST = 600, 10                 # per minute; the burst window is BURST * 60 / LIMIT = 1 s
BURST_WINDOW = BURST * 60 / LIMIT
APP_TARGET = "tests.apps.limited:app"
API_KEYS = ("key-burst", "key-steady", "key-a", "key-b")
SERVED_KEYS = "key-cli,key-two-processes-redis,key-two-processes-memory"


@pytest.fixture(scope="module")
def redis_server():
    """A throw-away Redis on a free 127.0.0.1 port, stopped (and its directory removed) after the module."""
    with RedisServer() as server:
        yield server


@contextlib.contextmanager
def serving(capture, **settings) -> Iterator[str]:
    """An app verifying API keys and limited to 600/min, burst 10 per key, served over HTTP on a background thread."""
    app = capture.app("limited")
    app.add_plugin(AuthPlugin("api_key", api_keys=list(API_KEYS)))
    app.add_plugin(RateLimitPlugin(LIMIT, BURST, key="api_key", **settings))
    app.register("work", lambda inputs: {"ok": True})
    with BackgroundServer(app) as url:
        yield url


def simultaneous(targets: list[tuple[str, str]], timeout: float = 15.0) -> tuple[list[httpx.Response], float]:
    """POST /workflows/work to each ``(base url, api key)`` at once (one thread each, a barrier); responses, seconds."""
    n = len(targets)
    barrier = threading.Barrier(n, timeout=timeout)
    out: list[object] = [None] * n
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    with httpx.Client(limits=limits, timeout=timeout) as client:
        def send(i: int, url: str, key: str) -> None:
            try:
                barrier.wait()
                out[i] = client.post(f"{url}/workflows/work", json={}, headers={"X-API-Key": key})
            except Exception as exc:  # reported below, with the others
                out[i] = exc

        threads = [threading.Thread(target=send, args=(i, url, key), daemon=True)
                   for i, (url, key) in enumerate(targets)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout + 5)
        took = time.monotonic() - started
    failures = [r for r in out if not isinstance(r, httpx.Response)]
    assert not failures, failures[:3]
    return out, took  # type: ignore[return-value]


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in responses:
        counts[r.status_code] = counts.get(r.status_code, 0) + 1
    return counts


def test_seed_snippet_runs_as_written(capture):
    """The attribute-style set-up of Kailash Nexus's plugin API works unchanged and the plugin is listed."""
    app = capture.app("seed")
    rate_limit_plugin = RateLimitPlugin()
    rate_limit_plugin.limit = 1000  # per minute
    rate_limit_plugin.burst = 100
    app.add_plugin(rate_limit_plugin)

    assert "rate_limit" in app.plugins.list()
    assert app.plugins.get("rate_limit") is rate_limit_plugin
    assert rate_limit_plugin.middleware in app.middleware
    burst_item, minute_item = rate_limit_plugin.middleware.items
    assert (burst_item.amount, burst_item.get_expiry()) == (100, 6)  # 100 per 100 * 60 / 1000 s
    assert (minute_item.amount, minute_item.get_expiry()) == (1000, 60)


def test_fifty_simultaneous_requests_admit_exactly_the_burst(capture):
    """50 requests at once from one key: 10 pass, 40 get 429 with correct Retry-After and RateLimit-* headers."""
    key = "key-burst"
    with serving(capture) as url:
        responses, took = simultaneous([(url, key)] * 50)
        counts = statuses(responses)
        assert counts == {200: 10, 429: 40}, f"{counts} (the 50 requests took {took:.2f} s)"

        for r in responses:
            assert r.headers["ratelimit-limit"] == str(BURST)
            remaining, reset = int(r.headers["ratelimit-remaining"]), int(r.headers["ratelimit-reset"])
            assert 0 <= remaining < BURST and 0 <= reset <= BURST_WINDOW, dict(r.headers)
            if r.status_code == 200:
                assert "retry-after" not in r.headers
                continue
            retry_after = r.headers["retry-after"]
            assert retry_after.isdigit() and 1 <= int(retry_after) <= BURST_WINDOW, retry_after
            assert remaining == 0
            body = r.json()
            assert body["retry_after"] == int(retry_after) and body["workflow"] == "work"
            assert "rate limit of 10 exceeded" in body["error"] and len(body["trace_id"]) == 32
        assert min(int(r.headers["ratelimit-remaining"]) for r in responses if r.status_code == 200) == 0

        # Still over the limit right now; after waiting exactly Retry-After seconds, admitted again.
        with httpx.Client(timeout=10) as client:
            again = client.post(f"{url}/workflows/work", json={}, headers={"X-API-Key": key})
            assert again.status_code == 429
            wait = int(again.headers["retry-after"])
            time.sleep(wait)
            retried = client.post(f"{url}/workflows/work", json={}, headers={"X-API-Key": key})
            assert retried.status_code == 200, (wait, retried.text)

    rejected, admitted = 41, 11
    spans = capture.spans_named("workflow work")
    assert len(spans) == rejected + admitted
    limited = [s for s in spans if any(e.name == "rate_limited" for e in s.events)]
    assert len(limited) == rejected
    for span in limited:
        event = next(e for e in span.events if e.name == "rate_limited")
        assert event.attributes["nexus.ratelimit.key_type"] == "api_key"
        assert event.attributes["nexus.ratelimit.limit"] == BURST
        assert 1 <= event.attributes["nexus.ratelimit.retry_after"] <= BURST_WINDOW
        assert not span.status.is_ok
        assert key not in str(dict(span.attributes)) + str([dict(e.attributes or {}) for e in span.events])
    assert all(s.status.is_ok for s in spans if s not in limited)
    assert capture.metric_value("nexus.ratelimit.rejections", workflow="work", key_type="api_key") == rejected
    assert capture.metric_value("nexus.ratelimit.rejections") == rejected


def test_steady_load_is_admitted_at_the_limits_rate(capture):
    """20 requests/s for 10 s against 600/min: the admitted count is within 5% of 600 * 10 s / 60."""
    key, window, interval = "key-steady", 10.0, 0.05
    sent: list[tuple[float, int, str | None]] = []
    with serving(capture) as url, httpx.Client(timeout=5) as client:
        t0 = time.monotonic()
        for i in range(int(window / interval)):          # at most 200 requests ...
            delay = t0 + i * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            at = time.monotonic() - t0
            if at >= window:                               # ... and at most 10 s
                break
            r = client.post(f"{url}/workflows/work", json={}, headers={"X-API-Key": key})
            sent.append((at, r.status_code, r.headers.get("retry-after")))

    assert len(sent) >= 0.9 * window / interval, f"the client fell behind: {len(sent)} requests in {window} s"
    assert {status for _, status, _ in sent} == {200, 429}
    assert all(ra is not None and 1 <= int(ra) <= BURST_WINDOW for _, status, ra in sent if status == 429)

    admitted = sum(1 for _, status, _ in sent if status == 200)
    expected = LIMIT * window / 60                         # 100
    assert abs(admitted - expected) <= 0.05 * expected, (
        f"{admitted} admitted in {window} s = {admitted * 60 / window:.0f}/min; limit {LIMIT}/min")

    # The first burst window holds the initial burst; after it, the steady rate alone.
    steady = sum(1 for at, status, _ in sent if status == 200 and at >= BURST_WINDOW)
    steady_expected = LIMIT * (window - BURST_WINDOW) / 60  # 90
    assert sum(1 for at, status, _ in sent if status == 200 and at < BURST_WINDOW) == BURST
    assert abs(steady - steady_expected) <= 0.05 * steady_expected, (steady, steady_expected)
    rejected = len(sent) - admitted
    assert capture.metric_value("nexus.ratelimit.rejections", workflow="work") == rejected
    print(f"\nsteady load: {len(sent)} requests, {admitted} admitted in {window} s "
          f"({admitted * 60 / window:.0f}/min; {steady} after the first {BURST_WINDOW:.0f} s burst window)")


def test_two_keys_do_not_share_a_budget(capture):
    """15 requests at once from each of two keys: each key gets its own 10."""
    with serving(capture) as url:
        responses, took = simultaneous([(url, "key-a"), (url, "key-b")] * 15)
    for name, mine in (("key-a", responses[0::2]), ("key-b", responses[1::2])):
        assert statuses(mine) == {200: 10, 429: 5}, f"{name}: {statuses(mine)} ({took:.2f} s)"
    assert capture.metric_value("nexus.ratelimit.rejections", key_type="api_key") == 10


def _serve_pair(storage: str, tmp: Path) -> list[Served]:
    """`nexus-otel serve tests.apps.limited:app` twice, started in parallel, each with its own data dir."""
    def one(i: int) -> Served:
        env = cli_env(tmp / f"data-{i}", LIMIT_STORAGE=storage, LIMIT_API_KEYS=SERVED_KEYS)
        return Served(APP_TARGET, env, tmp)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(one, i) for i in range(2)]
        servers, errors = [], []
        for f in futures:
            try:
                servers.append(f.result(timeout=60))
            except Exception as exc:
                errors.append(exc)
    if errors:
        for s in servers:
            s.stop()
        raise errors[0]
    return servers


@pytest.mark.parametrize("shared", [True, False], ids=["redis", "memory-control"])
def test_two_processes_share_one_budget_through_redis(shared, redis_server, tmp_path):
    """30 requests at once split over two served processes: 10 in total with Redis, 10 each with memory."""
    storage = redis_server.url if shared else "memory://"
    key = f"key-two-processes-{'redis' if shared else 'memory'}"
    servers = _serve_pair(storage, tmp_path)
    try:
        responses, took = simultaneous([(servers[i % 2].url, key) for i in range(30)])
        by_server = [statuses(responses[i::2]) for i in range(2)]
        pids = {r.json()["result"]["pid"] for r in responses if r.status_code == 200}
    finally:
        stopped = [s.stop() for s in servers]
    counts = statuses(responses)
    detail = f"per server {by_server}, took {took:.2f} s"
    if shared:
        assert counts == {200: 10, 429: 20}, detail
        assert redis_server.client().keys("*nexus-otel*api_key*"), "nothing was counted in Redis"
    else:  # each process counts alone: the shared-budget assertion above would fail here
        assert counts == {200: 20, 429: 10}, detail
        assert by_server == [{200: 10, 429: 5}] * 2 and len(pids) == 2, detail
    # uvicorn re-raises SIGTERM after a graceful shutdown, hence -15
    assert all(code in (0, -15) and "Traceback" not in err for code, err in stopped), stopped


BAD_SETTINGS = [
    ("limit", 0), ("limit", -5), ("limit", True), ("limit", "1000"), ("limit", 1.5),
    ("burst", 0), ("key", "ip"), ("per", "user"), ("storage", "nosuch://"),
    ("key_header", "X Tenant"), ("key_header", ""), ("key_header", 5),
]


@pytest.mark.parametrize("setting,value", BAD_SETTINGS, ids=[f"{s}={v!r}" for s, v in BAD_SETTINGS])
def test_bad_settings_fail_at_setup_naming_the_value(capture, setting, value):
    """Each bad setting raises PluginSetupError naming RateLimitPlugin.<setting>=<value!r>; nothing is kept."""
    app = capture.app("bad")
    plugin = RateLimitPlugin()
    setattr(plugin, setting, value)
    with pytest.raises(PluginSetupError) as raised:
        app.add_plugin(plugin)
    assert f"RateLimitPlugin.{setting}={value!r}" in str(raised.value)
    assert "rate_limit" not in app.plugins.list()
    assert app.middleware == []


def test_python_channel_raises_rate_limit_exceeded_with_retry_after(capture):
    """Over the limit in Python: RateLimitExceeded with .retry_after; after that long, admitted again."""
    app = capture.app("py")
    app.add_plugin(AuthPlugin("api_key", api_keys=["key-python", "another-key"]))
    plugin = RateLimitPlugin()
    plugin.limit, plugin.burst, plugin.key = 60, 2, "api_key"  # a 2 s burst window
    app.add_plugin(plugin)
    app.register("work", lambda inputs: {"ok": True})
    caller = Caller(api_key="key-python")

    assert app.execute_workflow("work", caller=caller) == {"ok": True}
    assert app.execute_workflow("work", caller=Caller(api_key="key-python")) == {"ok": True}
    with pytest.raises(RateLimitExceeded) as raised:
        app.execute_workflow("work", caller=Caller(api_key="key-python"))
    exc = raised.value
    assert isinstance(exc.retry_after, int) and 1 <= exc.retry_after <= 2
    assert (exc.limit, exc.remaining, exc.workflow) == (2, 0, "work")
    assert app.execute_workflow("work", caller=Caller(api_key="another-key")) == {"ok": True}
    time.sleep(exc.retry_after)
    assert app.execute_workflow("work", caller=Caller(api_key="key-python")) == {"ok": True}
    assert capture.metric_value("nexus.ratelimit.rejections", workflow="work") == 1


def test_cli_runs_share_a_budget_through_redis(redis_server, tmp_path):
    """`nexus-otel run --api-key K` twice with Redis storage and burst 1: the second run is turned away."""
    env = cli_env(tmp_path / "data", LIMIT_STORAGE=redis_server.url, LIMIT_PER_MINUTE="6", LIMIT_BURST="1",
                  LIMIT_API_KEYS=SERVED_KEYS)
    args = ("run", APP_TARGET, "work", "--api-key", "key-cli")  # burst 1 per 10 s
    first = nexus_otel(*args, env=env, cwd=tmp_path)
    assert first.returncode == 0 and '"pid"' in first.stdout, first.stderr
    second = nexus_otel(*args, env=env, cwd=tmp_path)
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert "rate limit of 1 exceeded; retry in" in second.stderr, second.stderr
    retry = int(second.stderr.split("retry in ")[1].split()[0])
    assert 1 <= retry <= 10
    assert "key-cli" not in second.stderr + second.stdout


@pytest.mark.parametrize(("limit", "burst", "window"), [(600, 15, 1), (120, 5, 2), (1000, 100, 6), (600, 10, 1)])
def test_burst_is_never_exceeded_whatever_the_ratio(limit, burst, window):
    """The burst window admits exactly `burst` at once even when burst*60/limit is not whole seconds."""
    from nexus_otel.middlewares.rate_limit import limit_items

    burst_item, minute_item = limit_items(limit, burst)
    assert (burst_item.amount, burst_item.multiples) == (burst, window)
    assert minute_item.amount == limit


def test_burst_below_one_seconds_worth_is_raised_with_a_warning(capture, caplog):
    """burst=7 with limit=1000/min (17 a second) is raised to 17 at once, and setup says so."""
    import logging

    from nexus_otel.middlewares.rate_limit import limit_items

    burst_item, _ = limit_items(1000, 7)
    assert (burst_item.amount, burst_item.multiples) == (17, 1)
    with caplog.at_level(logging.WARNING, logger="nexus_otel.ratelimit"):
        capture.app().add_plugin(RateLimitPlugin(1000, 7))
    assert "burst=7" in caplog.text and "bursts of 17" in caplog.text


def test_unreachable_redis_fails_at_setup(capture):
    """A Redis storage that does not answer is a setup error naming the setting, not a 500 per request."""
    from nexus_otel.errors import PluginSetupError
    from nexus_otel.plugins import RateLimitPlugin

    with pytest.raises(PluginSetupError, match=r"RateLimitPlugin.storage='redis://127.0.0.1:1'"):
        capture.app().add_plugin(RateLimitPlugin(600, 10, storage="redis://127.0.0.1:1"))


def _post_each(url: str, headers: list[dict[str, str]]) -> list[int]:
    """POST /workflows/work once per headers dict, one after another; the statuses."""
    with httpx.Client(base_url=url, timeout=10) as client:
        return [client.post("/workflows/work", json={}, headers=h).status_code for h in headers]


def test_rotating_unverified_api_keys_share_the_clients_budget(capture):
    """Without AuthPlugin, a new X-API-Key per request against limit=60, burst=5: 5 of 20 admitted, keyed by client."""
    app = capture.app("open")
    app.add_plugin(RateLimitPlugin(limit=60, burst=5))
    app.register("work", lambda inputs: {"ok": True})
    with BackgroundServer(app) as url:
        codes = _post_each(url, [{"X-API-Key": f"rotated-{i}"} for i in range(20)])
    assert Counter(codes) == {200: 5, 429: 15}, codes
    assert capture.metric_value("nexus.ratelimit.rejections", key_type="client") == 15


def test_verified_api_keys_get_budgets_of_their_own(capture):
    """With AuthPlugin first, two verified keys from one address get 5 each; an unknown key is refused, not counted."""
    app = capture.app("verified")
    app.add_plugin(AuthPlugin("api_key", api_keys={"alice": "key-alice", "bob": "key-bob"}))
    app.add_plugin(RateLimitPlugin(limit=60, burst=5))
    app.register("work", lambda inputs: {"ok": True})
    with BackgroundServer(app) as url:
        codes = _post_each(url, [{"X-API-Key": k} for k in ("key-alice", "key-bob", "key-mallory") * 8])
    by_key = {k: Counter(codes[i::3]) for i, k in enumerate(("alice", "bob", "mallory"))}
    assert by_key == {"alice": {200: 5, 429: 3}, "bob": {200: 5, 429: 3}, "mallory": {401: 8}}, by_key
    assert capture.metric_value("nexus.ratelimit.rejections", key_type="principal") == 6


def test_a_trusted_header_selects_the_budget(capture):
    """key_header="X-Tenant": each tenant has its own 5; requests without it share the client's 5."""
    app = capture.app("tenants")
    app.add_plugin(RateLimitPlugin(limit=60, burst=5, key_header="X-Tenant"))
    app.register("work", lambda inputs: {"ok": True})
    with BackgroundServer(app) as url:
        codes = _post_each(url, [{"x-tenant": "a"}, {"X-Tenant": "b"}, {"X-API-Key": "unverified"}] * 7)
    by_tenant = [Counter(codes[i::3]) for i in range(3)]
    assert by_tenant == [{200: 5, 429: 2}] * 3, by_tenant
    assert capture.metric_value("nexus.ratelimit.rejections", key_type="header") == 4
    assert capture.metric_value("nexus.ratelimit.rejections", key_type="client") == 2


@pytest.mark.parametrize("trusted", [False, True], ids=["default", "forwarded-allow-ips"])
def test_x_forwarded_for_is_believed_only_from_named_proxies(trusted, tmp_path):
    """`serve`: three X-Forwarded-For addresses sent from loopback share its budget of 2 by default, and each
    has its own with --forwarded-allow-ips 127.0.0.1."""
    env = cli_env(tmp_path / "data", LIMIT_STORAGE="memory://", LIMIT_PER_MINUTE="60", LIMIT_BURST="2")
    server = Served(APP_TARGET, env, tmp_path, *(["--forwarded-allow-ips", "127.0.0.1"] if trusted else []))
    try:
        codes = _post_each(server.url, [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(1, 4)])
    finally:
        code, err = server.stop()
    assert code in (0, -15) and "Traceback" not in err, err
    assert codes == ([200, 200, 200] if trusted else [200, 200, 429]), codes


def test_a_bad_forwarded_allow_ips_fails_naming_it(tmp_path):
    """`serve --forwarded-allow-ips 127.0.0.300` exits 2 naming the setting and the value, before serving."""
    out = nexus_otel("serve", APP_TARGET, "--port", "0", "--forwarded-allow-ips", "127.0.0.300",
                     env=cli_env(tmp_path / "data", LIMIT_STORAGE="memory://"), cwd=tmp_path)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "forwarded_allow_ips='127.0.0.300'" in out.stderr and "serving" not in out.stderr, out.stderr
