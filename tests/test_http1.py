"""The webhook client (``exporters/http1.py`` behind ``ConcurrentPoster``) against aiohttp, which it replaced.

The same posts go through both to the same real receiver: the requests it
receives must be the same (method, path, query, body, every header but
aiohttp's ``Accept-Encoding``) and so must the outcomes, for answers of every
kind, for a receiver that hangs, one that is not there, and one that closes
connections.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import aiohttp
import pytest

from nexus_otel.exporters.http1 import HttpError, Target, request_bytes
from nexus_otel.exporters.http_poster import ConcurrentPoster, Post, PostFailed, PostTimeout, Reply

from .ports import free_port
from .webhook_receiver import WebhookReceiver

HEADERS = {"content-type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": "1764590400",
           "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="}
BODY = b'{"type":"workflow.completed","workflow":"checkout","status":"completed"}'


def aiohttp_post_all(posts: list[Post], user_agent: str) -> list[Reply | Exception]:
    """What ``ConcurrentPoster`` did with aiohttp before: the reference."""
    async def main() -> list[Reply | Exception]:
        async with aiohttp.ClientSession(auto_decompress=False, headers={"user-agent": user_agent}) as session:
            async def one(post: Post) -> Reply | Exception:
                try:
                    timeout = aiohttp.ClientTimeout(total=post.timeout, connect=min(post.timeout, 2.0))
                    async with session.post(post.url, data=post.body, headers=post.headers, timeout=timeout,
                                            allow_redirects=False) as response:
                        await response.read()
                        return Reply(response.status, response.headers.get("retry-after"))
                except asyncio.TimeoutError as exc:
                    return PostTimeout(type(exc).__name__)
                except (aiohttp.ClientError, OSError, ValueError) as exc:
                    return PostFailed(f"{type(exc).__name__}: {exc}")

            return list(await asyncio.gather(*(one(p) for p in posts)))

    return asyncio.run(main())


def request_line(conn: socket.socket) -> bytes:
    """Read one request's head from a raw connection: its request line (b"" if the client closed first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\r\n", 1)[0]


def ours(posts: list[Post], user_agent: str = "nexus-otel-webhooks") -> list[Reply | Exception]:
    poster = ConcurrentPoster(per_destination=8, user_agent=user_agent)
    try:
        return poster.post_all(posts)
    finally:
        poster.close()


def outcome(reply: Reply | Exception) -> tuple:
    return (reply.status, reply.retry_after) if isinstance(reply, Reply) else (type(reply).__name__,)


def both(posts: list[Post]) -> tuple[list[tuple], list[tuple]]:
    return [outcome(r) for r in ours(posts)], [outcome(r) for r in aiohttp_post_all(posts, "nexus-otel-webhooks")]


def test_the_receiver_gets_the_same_requests():
    with WebhookReceiver() as receiver:
        url = receiver.url_for("/hook?tenant=a%20b&x=1")
        posts = [Post(url, BODY + str(i).encode(), {**HEADERS, "webhook-id": f"msg_{i}"}, 5.0) for i in range(20)]
        assert [outcome(r) for r in ours(posts)] == [(200, None)] * 20
        ours_seen = receiver.requests()
        receiver.clear()
        assert [outcome(r) for r in aiohttp_post_all(posts, "nexus-otel-webhooks")] == [(200, None)] * 20
        theirs_seen = receiver.requests()

    def shape(request) -> tuple:
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() != "accept-encoding"}
        return request.method, request.path, request.body, tuple(sorted(headers.items()))

    assert sorted(map(shape, ours_seen)) == sorted(map(shape, theirs_seen))
    assert {r.headers["host"] for r in ours_seen} == {f"127.0.0.1:{receiver.port}"}


def test_basic_credentials_in_the_url_are_sent_as_aiohttp_sends_them():
    with WebhookReceiver() as receiver:
        url = receiver.url.replace("http://", "http://user:p%40ss@")
        ours([Post(url, BODY, HEADERS, 5.0)])
        aiohttp_post_all([Post(url, BODY, HEADERS, 5.0)], "ua")
        first, second = receiver.requests()
    assert first.headers["authorization"] == second.headers["authorization"] == "Basic dXNlcjpwQHNz"


@pytest.mark.parametrize("status,retry_after", [(200, None), (201, None), (204, None), (400, None), (410, None),
                                                (429, "7"), (500, None), (503, "Wed, 21 Oct 2026 07:28:00 GMT")])
def test_every_kind_of_answer_gives_the_same_outcome(status, retry_after):
    with WebhookReceiver(status=status, retry_after=retry_after) as receiver:
        mine, reference = both([Post(receiver.url, BODY, HEADERS, 5.0) for _ in range(3)])
    assert mine == reference == [(status, retry_after)] * 3


def test_a_receiver_that_hangs_times_out_like_aiohttp():
    with WebhookReceiver() as receiver:
        receiver.set_hang(3.0)
        started = time.monotonic()
        mine = [outcome(r) for r in ours([Post(receiver.url, BODY, HEADERS, 0.5)])]
        took = time.monotonic() - started
        reference = [outcome(r) for r in aiohttp_post_all([Post(receiver.url, BODY, HEADERS, 0.5)], "ua")]
    assert mine == reference == [("PostTimeout",)]
    assert took < 2.5


def test_nobody_listening_fails_like_aiohttp():
    port = free_port()
    mine, reference = both([Post(f"http://127.0.0.1:{port}/hook", BODY, HEADERS, 2.0)])
    assert mine == reference == [("PostFailed",)]


def test_connections_are_kept_alive_and_replaced_when_the_receiver_closes_them():
    with WebhookReceiver() as receiver:
        poster = ConcurrentPoster(per_destination=4)
        try:
            first = poster.post_all([Post(receiver.url, BODY, HEADERS, 5.0) for _ in range(8)])
            receiver.drop_connections()  # the receiver closes its idle keep-alive connections
            time.sleep(0.2)
            second = poster.post_all([Post(receiver.url, BODY, HEADERS, 5.0) for _ in range(8)])
        finally:
            poster.close()
        assert [outcome(r) for r in first + second] == [(200, None)] * 16
        assert len({(r.headers.get("webhook-id"), r.body) for r in receiver.requests()}) == 1
        assert len(receiver.requests()) == 16


def test_a_server_that_answers_and_closes_is_not_reused():
    """``Connection: close`` (here from an HTTP/1.0 server): every answer is read, the next request reconnects."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    served = []

    def serve() -> None:
        for _ in range(3):
            conn, _ = listener.accept()
            with conn:
                served.append(request_line(conn))
                conn.sendall(b"HTTP/1.0 202 Accepted\r\nConnection: close\r\n\r\nqueued")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        poster = ConcurrentPoster(per_destination=1)
        try:
            replies = [poster.post_all([Post(f"http://127.0.0.1:{port}/h", BODY, HEADERS, 5.0)])[0] for _ in range(3)]
        finally:
            poster.close()
    finally:
        thread.join(5)
        listener.close()
    assert [outcome(r) for r in replies] == [(202, None)] * 3
    assert served == [b"POST /h HTTP/1.1"] * 3


def test_headers_cannot_smuggle_a_line_break():
    target = Target.of("http://127.0.0.1:9/hook")
    with pytest.raises(HttpError, match="line break"):
        request_bytes(target, BODY, {"webhook-id": "x\r\nx-injected: 1"}, "ua")
    replies = ours([Post("http://127.0.0.1:9/hook", BODY, {"webhook-id": "x\r\nx-injected: 1"}, 1.0)])
    assert [outcome(r) for r in replies] == [("PostFailed",)]


def test_bad_urls_are_a_failed_post_not_a_crash():
    assert [outcome(r) for r in ours([Post("ftp://127.0.0.1/x", BODY, HEADERS, 1.0)])] == [("PostFailed",)]


def test_a_kept_alive_connection_closed_under_a_request_is_retried_once_on_a_new_one():
    """The race every keep-alive client meets: the server closes an idle connection as a request goes out.

    The request is sent again on a new connection (the receiver may then see it twice, with the
    same ``webhook-id``, which is how Standard Webhooks receivers deduplicate).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    seen: list[tuple[int, bytes]] = []

    def serve() -> None:
        first, _ = listener.accept()
        seen.append((1, request_line(first)))
        first.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # keep-alive
        seen.append((1, request_line(first)))
        first.close()  # ... then closes it under the second request, without an answer
        second, _ = listener.accept()
        with second:
            seen.append((2, request_line(second)))
            second.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            request_line(second)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    poster = ConcurrentPoster(per_destination=1)
    try:
        url = f"http://127.0.0.1:{port}/h"
        replies = [poster.post_all([Post(url, BODY, HEADERS, 5.0)])[0] for _ in range(2)]
    finally:
        poster.close()
        listener.close()
        thread.join(5)
    assert [outcome(r) for r in replies] == [(200, None), (200, None)]
    assert seen == [(1, b"POST /h HTTP/1.1"), (1, b"POST /h HTTP/1.1"), (2, b"POST /h HTTP/1.1")]


def test_an_interim_100_continue_is_passed_over_for_the_final_answer():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            request_line(conn)
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        replies = ours([Post(f"http://127.0.0.1:{port}/h", BODY, HEADERS, 5.0)])
    finally:
        thread.join(5)
        listener.close()
    assert [outcome(r) for r in replies] == [(201, None)]
