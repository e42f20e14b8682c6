"""Webhooks against a real HTTP receiver: signed, retried, durable across restarts, never in the workflow's way."""

import base64
import statistics
import sys
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nexus_otel.errors import PluginSetupError
from nexus_otel.plugins import WebhookPlugin

from .served import cli_env, nexus_otel
from .webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"a test secret of 32 bytes length").decode()


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


def _app(capture, tmp_path, url, **kwargs):
    app = capture.app("shop")

    @app.workflow("order")
    def order(inputs):
        return {"ok": True}

    @app.workflow("boom")
    def boom(inputs):
        raise RuntimeError("card declined")

    plugin = WebhookPlugin(url, secret=SECRET, outbox_path=tmp_path / "outbox.sqlite", **kwargs)
    app.add_plugin(plugin)
    return app, plugin


def test_payloads_are_signed_per_standard_webhooks(capture, tmp_path, receiver):
    """Each payload verifies with the standardwebhooks package and carries Kailash Nexus's webhook fields and more."""
    app, plugin = _app(capture, tmp_path, receiver.url, statuses=("completed", "failed"))
    app.execute_workflow("order", {"password": "hunter2"}, session_id="s9")
    with pytest.raises(RuntimeError):
        app.execute_workflow("boom", {})
    received = receiver.wait_for_count(2, timeout=10)
    verifier = Webhook(SECRET)
    payloads = {}
    for request in received:
        payload = verifier.verify(request.body, dict(request.headers))
        assert request.headers["webhook-id"].startswith("msg_")
        payloads[payload["workflow"]] = payload
    ok, failed = payloads["order"], payloads["boom"]
    assert ok["status"] == "completed" and ok["type"] == "workflow.completed"
    assert ok["duration"] > 0 and ok["timestamp"] > 1.7e9 and ok["session_id"] == "s9"
    span = capture.span("workflow order")
    assert ok["trace_id"] == f"{span.context.trace_id:032x}"
    assert ok["workflow_id"] == span.attributes["nexus.workflow.id"]
    assert failed["status"] == "failed" and failed["error_type"] == "RuntimeError"
    assert "hunter2" not in str(received)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another secret entirely, 32 byt").decode()).verify(
            received[0].body, dict(received[0].headers))
    app.stop()
    assert plugin.stats()["delivered"] == 2


def test_a_non_ascii_session_id_arrives_as_utf8_json_whose_signature_verifies(capture, tmp_path, receiver):
    """The body is UTF-8 JSON (not escaped to ASCII), and the signature covers exactly those bytes."""
    app, _ = _app(capture, tmp_path, receiver.url)
    app.execute_workflow("order", {}, session_id="café-✓-東京")
    (request,) = receiver.wait_for_count(1, timeout=10)
    app.stop()
    assert "café-✓-東京".encode() in request.body
    payload = Webhook(SECRET).verify(request.body, dict(request.headers))
    assert payload["session_id"] == "café-✓-東京" and payload["type"] == "workflow.completed"
    assert request.headers["content-length"] == str(len(request.body))


def test_filters_by_workflow_and_status(capture, tmp_path, receiver):
    """Only the chosen workflows and statuses are sent (Kailash Nexus's default: completed only)."""
    app, _ = _app(capture, tmp_path, receiver.url, workflows=["order"])
    app.register("other", lambda i: 1)
    app.execute_workflow("other", {})
    with pytest.raises(RuntimeError):
        app.execute_workflow("boom", {})
    app.execute_workflow("order", {})
    app.stop()
    assert [p["workflow"] for p in receiver.bodies_json()] == ["order"]


def test_outage_then_recovery_delivers_everything_with_stable_ids(capture, tmp_path, receiver):
    """A receiver answering 503 for a while, then 200: every payload arrives; repeats keep their webhook-id."""
    receiver.set_status(503)
    app, plugin = _app(capture, tmp_path, receiver.url, backoff_base=0.02, backoff_max=0.1, max_attempts=1000)
    for i in range(10):
        app.execute_workflow("order", {"i": i})
    receiver.wait_for(lambda reqs: len(reqs) >= 3, timeout=10)
    time.sleep(0.5)  # the outage goes on: single probes back off, the other payloads wait
    during = len(receiver.requests())
    assert plugin.stats()["retried"] >= 3 and plugin.stats()["outbox_pending"] == 10
    assert during <= 0.9 / 0.05 + 2, f"{during} attempts in 0.9 s of outage: probes do not back off"
    receiver.set_status(200)
    receiver.wait_for(lambda reqs: len({r.headers["webhook-id"] for r in reqs if r.status == 200}) == 10, 15)
    requests = receiver.requests()
    by_id = {}
    for r in requests:
        by_id.setdefault(r.headers["webhook-id"], set()).add(r.body)
    assert len(by_id) == 10
    assert all(len(bodies) == 1 for bodies in by_id.values())  # a repeat is the same payload
    workflow_ids = {p["workflow_id"] for p in receiver.bodies_json()}
    assert workflow_ids == {s.attributes["nexus.workflow.id"] for s in capture.spans_named("workflow order")}
    app.stop()
    assert plugin.dead_letters() == []


def test_dead_letters_after_retry_limit_and_replay(capture, tmp_path, receiver):
    """After max_attempts a payload is dead-lettered with its error; replay() delivers it later."""
    receiver.set_status(500)
    app, plugin = _app(capture, tmp_path, receiver.url, backoff_base=0.01, backoff_max=0.02, max_attempts=3)
    app.execute_workflow("order", {})
    deadline = time.monotonic() + 10
    while not plugin.dead_letters() and time.monotonic() < deadline:
        time.sleep(0.05)
    (dead,) = plugin.dead_letters()
    assert dead.attempts == 3 and dead.last_error == "HTTP 500"
    assert len(receiver.requests()) == 3
    assert plugin.stats()["failed"] == 1
    receiver.set_status(200)
    assert plugin.replay() == 1
    receiver.wait_for(lambda reqs: any(r.status == 200 for r in reqs), timeout=10)
    app.stop()
    assert plugin.dead_letters() == []


def test_client_errors_are_not_retried(capture, tmp_path, receiver):
    """A 400 answer is final: one attempt, then a dead letter (a 429 would be retried)."""
    receiver.set_status(400)
    app, plugin = _app(capture, tmp_path, receiver.url, backoff_base=0.01)
    app.execute_workflow("order", {})
    deadline = time.monotonic() + 10
    while not plugin.dead_letters() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(receiver.requests()) == 1
    assert plugin.dead_letters()[0].last_error == "HTTP 400"
    app.stop()


def _trace_of(run):
    return next(line.split(": ")[1] for line in run.stderr.splitlines() if line.startswith("trace_id: "))


def test_queued_payloads_survive_a_restart(tmp_path, receiver):
    """Process 1 runs during an outage and exits; process 2 starts after recovery and delivers process 1's payload."""
    receiver.set_status(503)
    env = cli_env(tmp_path / "data", TEST_WEBHOOK_URL=receiver.url, TEST_WEBHOOK_SECRET=SECRET)
    first = nexus_otel("run", "tests.apps.notify:app", "ship", "--input", '{"order": "first"}', env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    first_trace = _trace_of(first)
    assert receiver.requests() and all(r.status == 503 for r in receiver.requests())
    assert not any(r.status == 200 for r in receiver.requests())
    receiver.set_status(200)
    second = nexus_otel("run", "tests.apps.notify:app", "ship", "--input", '{"order": "second"}', env=env,
                        cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    wanted = {first_trace, _trace_of(second)}
    ok = receiver.wait_for(
        lambda reqs: wanted <= {r.json()["trace_id"] for r in reqs if r.status == 200}, timeout=15)
    for request in ok:
        assert Webhook(SECRET).verify(request.body, dict(request.headers))["workflow"] == "ship"


def test_hanging_receiver_does_not_slow_workflows(capture, tmp_path):
    """Median workflow latency with a receiver that hangs stays within 5% of one that answers at once."""
    with WebhookReceiver() as healthy, WebhookReceiver(hang=30) as hanging:
        apps = {}
        for label, url in (("healthy", healthy.url), ("hanging", hanging.url)):
            app = capture.app(label)

            @app.workflow("work")
            def work(inputs):
                end = time.perf_counter() + 0.004
                while time.perf_counter() < end:
                    pass
                return 1

            app.add_plugin(WebhookPlugin(url, outbox_path=tmp_path / f"{label}.sqlite", timeout=30))
            apps[label] = app
        times = {"healthy": [], "hanging": []}
        switch = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # GIL hand-offs well below the workflow's 4 ms, so threads add no jitter
        try:
            for _ in range(150):  # interleaved one by one: drift hits both alike
                for label, app in apps.items():
                    start = time.perf_counter()
                    app.execute_workflow("work", {})
                    times[label].append(time.perf_counter() - start)
                    # The healthy side's delivery (a POST, on its worker) would otherwise land in the
                    # next measured execution, the hanging side's: let it finish outside the clocks.
                    time.sleep(0.01)
        finally:
            sys.setswitchinterval(switch)
        ratio = statistics.median(times["hanging"]) / statistics.median(times["healthy"])
        print(f"median latency ratio hanging/healthy: {ratio:.3f}")
        assert ratio <= 1.05
        assert hanging.requests()  # the hanging receiver was really being called
        hanging.close()
        for app in apps.values():
            app.stop()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"webhook_url": "ftp://x"}, "WebhookPlugin.webhook_url='ftp://x'"),
        ({"webhook_url": []}, "WebhookPlugin.webhook_url=[]"),
        ({"statuses": ["done"]}, "WebhookPlugin.statuses='done'"),
        ({"max_attempts": 0}, "WebhookPlugin.max_attempts=0"),
        ({"secret": "not base64!!"}, "WebhookPlugin.secret='<hidden>'"),
    ],
)
def test_bad_webhook_settings_fail_at_setup(capture, tmp_path, kwargs, needle):
    """Bad URL, status, attempts or secret: an error naming the setting (never echoing the secret)."""
    kwargs.setdefault("webhook_url", "http://127.0.0.1:9/hook")
    url = kwargs.pop("webhook_url")
    with pytest.raises(PluginSetupError) as info:
        capture.app().add_plugin(WebhookPlugin(url, outbox_path=tmp_path / "o.sqlite", **kwargs))
    assert needle in str(info.value)
    assert "not base64" not in str(info.value)


def test_seed_style_construction_works(capture, tmp_path, receiver):
    """WebhookPlugin(url) as in Kailash Nexus's plugin API: unsigned but delivered, with its payload fields."""
    app = capture.app()
    app.register("w", lambda i: 1)
    plugin = WebhookPlugin(receiver.url)
    plugin.outbox_path = tmp_path / "seed.sqlite"
    app.add_plugin(plugin)
    app.execute_workflow("w", {})
    (request,) = receiver.wait_for_count(1, timeout=10)
    body = request.json()
    assert {"workflow", "status", "duration", "timestamp"} <= set(body)
    assert "webhook-signature" not in request.headers and request.headers["webhook-id"]
    app.stop()



def test_cli_lists_and_replays_dead_letters(capture, tmp_path, receiver):
    """`nexus-otel webhooks dead-letters` lists a given-up payload; `replay --all` queues it again."""
    receiver.set_status(404)
    app, plugin = _app(capture, tmp_path, receiver.url, backoff_base=0.01)
    app.execute_workflow("order", {})
    deadline = time.monotonic() + 10
    while not plugin.dead_letters() and time.monotonic() < deadline:
        time.sleep(0.05)
    app.stop()
    env = cli_env(tmp_path / "data")
    outbox = str(tmp_path / "outbox.sqlite")
    listed = nexus_otel("webhooks", "dead-letters", "--outbox", outbox, env=env, cwd=tmp_path)
    assert listed.returncode == 0 and "order" in listed.stdout and "HTTP 404" in listed.stdout
    status = nexus_otel("webhooks", "status", "--outbox", outbox, env=env, cwd=tmp_path)
    assert status.stdout.strip() == "pending 0  dead 1"
    replayed = nexus_otel("webhooks", "replay", "--all", "--outbox", outbox, env=env, cwd=tmp_path)
    assert replayed.stdout.strip() == "queued 1 for delivery"
    status = nexus_otel("webhooks", "status", "--outbox", outbox, env=env, cwd=tmp_path)
    assert status.stdout.strip().startswith("pending 1  dead 0  oldest ")  # the oldest pending one's age
    missing = nexus_otel("webhooks", "replay", "--outbox", outbox, env=env, cwd=tmp_path)
    assert missing.returncode == 2 and "--all" in missing.stderr
