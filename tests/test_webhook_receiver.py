"""Self-test of the webhook receiver helper: real HTTP on loopback, statuses, hangs and clean shutdown."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

try:  # tests/ may or may not become a package
    from .webhook_receiver import CaseInsensitiveDict, WebhookReceiver
except ImportError:
    from webhook_receiver import CaseInsensitiveDict, WebhookReceiver

pytestmark = pytest.mark.timeout(30)


def test_records_posts_with_headers_and_body() -> None:
    """Each POST is recorded with path, case-insensitive headers, raw body and receive time."""
    with WebhookReceiver() as hook:
        assert hook.url == f"http://127.0.0.1:{hook.port}/hook"
        before = time.time()
        r = httpx.post(hook.url, json={"event": "a", "n": 1}, headers={"X-Nexus-Signature": "abc"})
        assert r.status_code == 200
        httpx.post(hook.url_for("/other"), content=b"\x00raw", headers={"content-type": "application/octet-stream"})

        first, second = hook.wait_for_count(2)
        assert (first.method, first.path, first.status) == ("POST", "/hook", 200)
        assert first.headers["x-nexus-signature"] == "abc"
        assert first.headers["X-NEXUS-SIGNATURE"] == "abc"
        assert "content-type" in first.headers
        assert before <= first.received_at <= time.time()
        assert first.json() == {"event": "a", "n": 1}
        assert second.path == "/other" and second.body == b"\x00raw"
        assert hook.bodies_json("/hook") == [{"event": "a", "n": 1}]
        assert len(hook.requests("/other")) == 1

        hook.clear()
        assert hook.requests() == []


def test_chunked_body_is_read() -> None:
    """A streamed (chunked) request body is recorded whole."""
    with WebhookReceiver() as hook:
        r = httpx.post(hook.url, content=iter([b'{"a": ', b"1}"]))
        assert r.status_code == 200
        assert hook.bodies_json() == [{"a": 1}]


def test_status_switch_sequence_and_retry_after() -> None:
    """set_status, status_sequence and Retry-After shape the answers; requests are recorded regardless."""
    with WebhookReceiver(status_sequence=[500, 429]) as hook, httpx.Client() as client:
        assert client.post(hook.url, json=1).status_code == 500
        assert client.post(hook.url, json=2).status_code == 429
        assert client.post(hook.url, json=3).status_code == 200

        hook.set_status(503)
        hook.set_retry_after(2)
        r = client.post(hook.url, json=4)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"

        hook.set_status(200)
        r = client.post(hook.url, json=5)
        assert r.status_code == 200 and "retry-after" not in r.headers

        hook.set_status_sequence([502])
        hook.set_retry_after(None)
        r = client.post(hook.url, json=6)
        assert r.status_code == 502 and "retry-after" not in r.headers

        assert [r.status for r in hook.requests()] == [500, 429, 200, 503, 200, 502]
        assert hook.bodies_json() == [1, 2, 3, 4, 5, 6]


def test_wait_for_times_out_with_a_clear_error() -> None:
    """wait_for is bounded and says what it saw."""
    with WebhookReceiver() as hook:
        with pytest.raises(TimeoutError, match="0 request"):
            hook.wait_for(lambda reqs: len(reqs) > 0, timeout=0.2)


def test_hang_does_not_block_other_requests() -> None:
    """A hanging answer times the client out, while another request is answered meanwhile."""
    with WebhookReceiver() as hook:
        hook.set_hang(5)
        results: dict[str, object] = {}

        def slow() -> None:
            """Post and record how the hung request ended."""
            try:
                results["slow"] = httpx.post(hook.url, json="slow", timeout=10).status_code
            except httpx.HTTPError as exc:
                results["slow"] = exc

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        hook.wait_for_count(1, timeout=5)

        start = time.monotonic()
        hook.set_hang(2)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(hook.url, json="times out", timeout=0.3)
        hook.set_hang(0)
        assert httpx.post(hook.url, json="fast", timeout=2).status_code == 200
        assert time.monotonic() - start < 2.5
        assert "slow" not in results  # still hanging
        assert [r.hang for r in hook.requests()] == [5.0, 2.0, 0.0]


def test_close_interrupts_a_hang() -> None:
    """close() wakes a handler hanging for a long time and returns promptly; the client sees the drop."""
    hook = WebhookReceiver(hang=30)
    outcome: list[object] = []

    def post() -> None:
        """Post to the hanging receiver and keep what happened."""
        try:
            outcome.append(httpx.post(hook.url, json={}, timeout=20).status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    t = threading.Thread(target=post, daemon=True)
    t.start()
    hook.wait_for_count(1, timeout=5)
    start = time.monotonic()
    hook.close()
    t.join(timeout=5)
    assert time.monotonic() - start < 3
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)
    with pytest.raises(httpx.ConnectError):
        httpx.post(hook.url, json={}, timeout=1)
    hook.close()  # a second close is harmless


def test_hang_is_capped_and_headers_join() -> None:
    """set_hang is bounded by max_hang; repeated headers read back joined, any case."""
    with WebhookReceiver(max_hang=0.5) as hook:
        hook.set_hang(999)
        start = time.monotonic()
        assert httpx.post(hook.url, json={}, timeout=5).status_code == 200
        assert time.monotonic() - start < 3
        assert hook.requests()[0].hang == 0.5
    headers = CaseInsensitiveDict([("X-A", "1"), ("x-a", "2")])
    assert headers["x-A"] == "1, 2" and list(headers) == ["X-A"] and len(headers) == 1
