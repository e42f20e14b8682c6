"""``GET /executions``: the executions in flight now, over real HTTP servers on 127.0.0.1.

Executions block on events (in one process) or on a gate file (across the worker
processes of ``nexus-otel serve --workers 2``) while the endpoint is read, and end
when the test lets them.
"""

from __future__ import annotations

import collections
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import orjson
from prometheus_client import CollectorRegistry

from nexus_otel import NexusPlugin
from nexus_otel.plugins import AuthPlugin
from nexus_otel.serving import BackgroundServer
from nexus_otel.telemetry.worker_metrics import WorkerMetrics, encode

from .kailash_apps import blocking_workflow, import_kailash
from .ports import free_port
from .served import REPO, Served, cli_env

TIMEOUT = 10
CLOSE = {"connection": "close"}  # a new connection per request: the kernel spreads them over the workers
PASSWORD = "s3cret-Pa55word-Zq81"


class Gate(NexusPlugin):
    """Holds executions of ``hooked`` in its ``workflow_started`` hook until released."""

    name = "gate"

    def __init__(self) -> None:
        self.release = threading.Event()

    def setup(self, nexus_app):
        def started(event):
            if event.workflow_name == "hooked":
                self.release.wait(TIMEOUT)

        nexus_app.on_workflow_started(started)


def held_app(capture, *plugins):
    """``hold`` blocks on ``release`` in its own code, ``hooked`` in the gate plugin's hook."""
    app = capture.app("now")
    gate = Gate()
    app.add_plugin(gate)
    for plugin in plugins:
        app.add_plugin(plugin)
    release = threading.Event()
    app.register("hold", lambda inputs: release.wait(TIMEOUT) and {"held": True})
    app.register("hooked", lambda inputs: {"hooked": True})
    app.register("refund", lambda inputs: release.wait(TIMEOUT) and {"refunded": True})

    def open_all() -> None:
        release.set()
        gate.release.set()

    return app, open_all


def start(url, workflow, body=None, headers=None):
    """POST in a thread; returns (thread, trace id it was sent with, list the response lands in)."""
    trace_id = secrets.token_hex(16)
    out: list[httpx.Response] = []
    sent = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", **(headers or {})}

    def post():
        out.append(httpx.post(f"{url}/workflows/{workflow}", json=body or {}, headers=sent, timeout=TIMEOUT))

    thread = threading.Thread(target=post)
    thread.start()
    return thread, trace_id, out


def executions(url, params=None, headers=None):
    r = httpx.get(f"{url}/executions", params=params, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r


def wait_for_count(url, count, *, places=None, **kwargs):
    """The body of ``/executions`` once it lists ``count`` executions (in ``places``, if given)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        body = executions(url, **kwargs).json()
        if len(body["executions"]) == count and (
                places is None or sorted(map(str, (e["place"] for e in body["executions"]))) == sorted(places)):
            return body
        assert time.monotonic() < deadline, f"{count} executions expected, listed: {body}"
        time.sleep(0.02)


def test_lists_in_flight_executions_with_workflow_place_trace_and_elapsed_then_none(capture):
    """Three blocked executions (two in their code, one in a hook) are listed longest first, then 0 once ended."""
    app, open_all = held_app(capture)
    with BackgroundServer(app) as url:
        first = start(url, "hold", headers={"x-session-id": "sess-1"})
        wait_for_count(url, 1)
        calls = [first, start(url, "hooked"), start(url, "hold")]
        try:
            body = wait_for_count(url, 3, places=["None", "None", "hook workflow_started gate"])
            response = executions(url)
        finally:
            open_all()
            for thread, _, _ in calls:
                thread.join(TIMEOUT)
        assert all(out and out[0].status_code == 200 for _, _, out in calls)
        after = executions(url).json()
    assert after == {"executions": []}
    assert response.headers["cache-control"] == "no-store"
    listed = body["executions"]
    assert "workers" not in body and all("worker" not in e for e in listed)  # one process
    by_trace = {e["trace_id"]: e for e in listed}
    assert set(by_trace) == {trace_id for _, trace_id, _ in calls}
    held, hooked = by_trace[calls[0][1]], by_trace[calls[1][1]]
    assert (held["workflow"], held["place"], held["plugin"]) == ("hold", None, None)
    assert (hooked["workflow"], hooked["place"], hooked["plugin"]) == ("hooked", "hook workflow_started gate", "gate")
    assert held["channel"] == "api" and held["session_id"] == "sess-1"
    assert held["workflow_id"] and held["workflow_id"] != hooked["workflow_id"]
    assert datetime.fromisoformat(held["started_at"].replace("Z", "+00:00")).tzinfo is not None
    elapsed = [e["elapsed_seconds"] for e in listed]
    assert elapsed == sorted(elapsed, reverse=True) and all(s > 0 for s in elapsed)
    assert listed[0]["trace_id"] == calls[0][1]  # started first: longest running
    assert all("inputs" not in e for e in listed)


def test_inputs_only_when_asked_and_redacted(capture):
    """``?inputs=1`` adds the redacted inputs (the password masked); without it none; another value is a 400."""
    app, open_all = held_app(capture)
    with BackgroundServer(app) as url:
        thread, _, _ = start(url, "hold", {"user": "ada", "password": PASSWORD})
        try:
            wait_for_count(url, 1)
            plain = executions(url)
            asked = executions(url, params={"inputs": "1"})
            wrong = httpx.get(f"{url}/executions", params={"inputs": "yes"}, timeout=TIMEOUT)
        finally:
            open_all()
            thread.join(TIMEOUT)
    assert "inputs" not in plain.json()["executions"][0] and "ada" not in plain.text
    inputs = orjson.loads(asked.json()["executions"][0]["inputs"])
    assert inputs["user"] == "ada" and inputs["password"] == "[REDACTED]"
    assert PASSWORD not in asked.text and PASSWORD not in plain.text
    assert wrong.status_code == 400 and "'yes'" in wrong.json()["error"] and "inputs" in wrong.json()["error"]
    assert wrong.headers["cache-control"] == "no-store"


def test_behind_the_workflows_auth(capture):
    """With AuthPlugin: 401 without or with a wrong key, 403 without the scope asked for it, 200 with one, and
    only executions of workflows the caller may run."""
    keys = {name: secrets.token_urlsafe(24) for name in ("plain", "reader", "writer")}
    auth = AuthPlugin(strategy="api_key", api_keys={
        "plain": keys["plain"],
        "reader": {"key": keys["reader"], "scopes": ["ops:read"]},
        "writer": {"key": keys["writer"], "scopes": ["ops:read", "orders:write"]},
    }, required_scopes={"refund": ["orders:write"], "/executions": ["ops:read"]})
    app, open_all = held_app(capture, auth)
    with BackgroundServer(app) as url:
        calls = [start(url, "hold", headers={"x-api-key": keys["writer"]}),
                 start(url, "refund", headers={"x-api-key": keys["writer"]})]
        try:
            writer = wait_for_count(url, 2, headers={"x-api-key": keys["writer"]})
            reader = executions(url, headers={"x-api-key": keys["reader"]}).json()
            missing = httpx.get(f"{url}/executions", timeout=TIMEOUT)
            wrong = httpx.get(f"{url}/executions", headers={"x-api-key": "nxk_wrong"}, timeout=TIMEOUT)
            plain = httpx.get(f"{url}/executions", headers={"x-api-key": keys["plain"]}, timeout=TIMEOUT)
        finally:
            open_all()
            for thread, _, _ in calls:
                thread.join(TIMEOUT)
    assert (missing.status_code, missing.json()["reason"]) == (401, "missing")
    assert missing.headers["www-authenticate"].startswith("Bearer ")
    assert (wrong.status_code, wrong.json()["reason"]) == (401, "invalid_api_key")
    assert (plain.status_code, plain.json()["reason"]) == (403, "insufficient_scope")
    assert "executions" not in missing.json() and "hold" not in missing.text and "hold" not in plain.text
    assert sorted(e["workflow"] for e in writer["executions"]) == ["hold", "refund"]
    assert [e["workflow"] for e in reader["executions"]] == ["hold"]  # refund needs orders:write
    failures = capture.metric_points("nexus.auth.failures")
    assert {p.attributes["workflow"] for p in failures} == {"/executions"}


def test_a_peer_that_does_not_answer_in_time_is_left_out(tmp_path):
    """Asking the workers: a live one answers, one that never does is left out after the timeout, a dead one is
    skipped; an older worker's scrape (no question) still gets the samples."""
    class Empty:
        def collect(self):
            return []

    answering = WorkerMetrics(tmp_path, Empty())
    answering.pid, answering.socket_path, answering.file = 11, tmp_path / "11.sock", tmp_path / "11.json"
    answering.answer("executions", lambda question: [{"workflow": "w", "inputs": question.get("inputs")}])
    answering.start()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # accepts (the kernel does), never answers
    silent.bind(str(tmp_path / "12.sock"))
    silent.listen(4)
    (tmp_path / "13.sock").touch()  # a worker killed outright: nobody listens
    me = WorkerMetrics(tmp_path, Empty())
    try:
        began = time.monotonic()
        answers, unanswered = me.ask("executions", timeout=0.5, inputs=True)
        took = time.monotonic() - began
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:  # a scrape as older workers make it
            old.settimeout(5)
            old.connect(str(tmp_path / "11.sock"))
            legacy = old.recv(1 << 16)
    finally:
        answering.close()
        silent.close()
    assert answers == {11: [{"workflow": "w", "inputs": True}]}
    assert unanswered == [12]
    assert took < 2, f"asking took {took:.2f} s with a 0.5 s timeout"
    assert orjson.loads(legacy) == []  # the samples (none here), as before questions


def test_a_worker_from_before_questions_is_still_merged_into_metrics_and_left_out_of_questions(tmp_path):
    """An older worker (it sends its samples to every connection at once and reads nothing) still counts in a
    scrape's totals, and a question to it is left out, not mistaken for an answer."""
    from prometheus_client.core import CounterMetricFamily

    samples = encode([CounterMetricFamily("demo_jobs", "Jobs.", value=5)])
    older = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    older.bind(str(tmp_path / "21.sock"))
    older.listen(4)

    def serve_older() -> None:
        for _ in range(2):
            conn, _ = older.accept()
            with conn:
                conn.sendall(samples)

    thread = threading.Thread(target=serve_older, daemon=True)
    thread.start()
    me = WorkerMetrics(tmp_path, CollectorRegistry())
    try:
        merged = {s.name: s.value for family in me.collect() for s in family.samples}
        answers, unanswered = me.ask("executions", timeout=2)
    finally:
        thread.join(5)
        older.close()
    assert merged.get("demo_jobs_total") == 5
    assert answers == {} and unanswered == [21]


def test_serve_workers_lists_the_union_of_every_workers_executions(tmp_path):
    """Under ``serve --workers 2``: one request lists the blocked executions of both workers, each with its
    worker's pid, as many per worker as each one runs; 0 once they end."""
    run_dir = Path(tempfile.mkdtemp(prefix="nw-", dir="/tmp"))
    gate = tmp_path / "gate"
    served = Served("tests.apps.gated:app", cli_env(tmp_path / "data", TMPDIR=str(run_dir), GATE_FILE=str(gate)),
                    REPO, "--workers", "2")
    pool = ThreadPoolExecutor(48)
    try:
        deadline = time.monotonic() + 30
        while len(list(run_dir.glob("nexus-otel-workers-*/*.sock"))) < 2:
            assert time.monotonic() < deadline, "2 workers did not start"
            time.sleep(0.05)

        def one(_: int) -> int:
            r = httpx.post(f"{served.url}/workflows/wait", json={}, headers=CLOSE, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["result"]["pid"]

        sent, futures, body = 0, [], None
        while sent < 48:  # 16 at once; more only in the rare case the kernel gave them all to one worker
            futures += [pool.submit(one, i) for i in range(8 if sent else 16)]
            sent = len(futures)
            body = wait_for_count(served.url, sent)
            if len({e["worker"] for e in body["executions"]}) == 2:
                break
        gate.touch()
        pids = collections.Counter(f.result(timeout=30) for f in futures)
        after = executions(served.url).json()
    finally:
        gate.touch()
        pool.shutdown(wait=False, cancel_futures=True)
        code, err = served.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    assert code == 0, err
    listed = body["executions"]
    assert len(pids) == 2, f"both workers ran some: {pids}"
    assert collections.Counter(e["worker"] for e in listed) == pids  # each entry names the worker that ran it
    assert sorted(body["workers"]) == sorted(pids) and body["unanswered"] == []
    assert all(e["workflow"] == "wait" and re.fullmatch(r"[0-9a-f]{32}", e["trace_id"]) for e in listed)
    elapsed = [e["elapsed_seconds"] for e in listed]
    assert elapsed == sorted(elapsed, reverse=True)
    assert after["executions"] == [] and sorted(after["workers"]) == sorted(pids)



def test_a_kailash_nexus_app_serves_executions_too(tmp_path):
    """On a Kailash Nexus app with NexusOtel, ``/executions`` on its own server lists an HTTP execution blocked
    in a node (``node waiter``), then none."""
    from nexus_otel.kailash import NexusOtel

    kailash = import_kailash()

    release = threading.Event()
    plugin = NexusOtel(environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                "OTEL_LOGS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    kailash_app = kailash.Nexus(api_port=free_port(), enable_durability=False)
    kailash_app.add_plugin(plugin)
    kailash_app.register("slow", blocking_workflow(kailash, release, TIMEOUT))
    try:
        with BackgroundServer(kailash_app.fastapi_app) as url:
            trace_id = secrets.token_hex(16)
            thread = threading.Thread(target=lambda: httpx.post(
                f"{url}/workflows/slow/execute", json={"inputs": {"waiter": {"x": 1}}}, timeout=TIMEOUT,
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}))
            thread.start()
            try:
                body = wait_for_count(url, 1, places=["node waiter"])  # listed as it starts, then in its node
                response = executions(url)
            finally:
                release.set()
                thread.join(TIMEOUT)
            after = executions(url).json()
    finally:
        release.set()
        plugin.on_shutdown()
    (entry,) = body["executions"]
    assert (entry["workflow"], entry["place"], entry["channel"], entry["trace_id"]) == (
        "slow", "node waiter", "api", trace_id)
    assert response.headers["cache-control"] == "no-store"
    assert after == {"executions": []}


def test_five_blocked_executions_two_in_a_hook_one_in_a_kailash_node_then_none(tmp_path):
    """Over HTTP on a Kailash Nexus app: five executions blocked (two in a plugin's hook, one in a Kailash node,
    two in their own code, on the app's Python channel): /executions lists all five with their workflow, place
    and trace id, then none once they end."""
    from nexus_otel.kailash import NexusOtel

    kailash = import_kailash()

    release = threading.Event()
    gate = Gate()
    plugin = NexusOtel([gate], environ={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
                                        "OTEL_LOGS_EXPORTER": "none", "NEXUS_OTEL_DATA_DIR": str(tmp_path)})
    kailash_app = kailash.Nexus(api_port=free_port(), enable_durability=False)
    kailash_app.add_plugin(plugin)
    kailash_app.register("slow", blocking_workflow(kailash, release, TIMEOUT))
    app = plugin.app  # the nexus-otel app behind the Kailash Nexus one: its Python channel too
    app.register("hooked", lambda inputs: {"hooked": True})
    app.register("hold", lambda inputs: release.wait(TIMEOUT) and {"held": True})
    threads, sent = [], {}
    try:
        with BackgroundServer(kailash_app.fastapi_app) as url:
            trace_id = secrets.token_hex(16)
            threads.append(threading.Thread(target=lambda: httpx.post(
                f"{url}/workflows/slow/execute", json={"inputs": {"waiter": {"x": 1}}}, timeout=TIMEOUT,
                headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})))
            sent[trace_id] = ("slow", "node waiter")
            for workflow in ("hooked", "hooked", "hold", "hold"):
                context_trace = secrets.token_hex(16)

                def run(workflow=workflow, context_trace=context_trace) -> None:
                    from opentelemetry import context, trace
                    parent = trace.SpanContext(int(context_trace, 16), int(secrets.token_hex(8), 16), True,
                                               trace.TraceFlags(1))
                    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
                    try:
                        app.execute_workflow(workflow, {})
                    finally:
                        context.detach(token)

                threads.append(threading.Thread(target=run))
                sent[context_trace] = (workflow, "hook workflow_started gate" if workflow == "hooked" else "None")
            for thread in threads:
                thread.start()
            try:
                body = wait_for_count(url, 5, places=[place for _, place in sent.values()])
            finally:
                release.set()
                gate.release.set()
                for thread in threads:
                    thread.join(TIMEOUT)
            after = executions(url).json()
    finally:
        release.set()
        gate.release.set()
        plugin.on_shutdown()
    listed = {e["trace_id"]: (e["workflow"], str(e["place"])) for e in body["executions"]}
    assert listed == sent
    assert after == {"executions": []}
