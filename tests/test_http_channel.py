"""The HTTP channel end to end: `nexus-otel serve` as a subprocess, real OTLP export, real requests."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest

from .otlp_receivers import HTTPReceiver
from .served import Served, cli_env, nexus_otel


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The shop app served by `nexus-otel serve`, exporting by OTLP and to the local store."""
    tmp = tmp_path_factory.mktemp("served")
    with HTTPReceiver() as receiver:
        env = cli_env(
            tmp / "data",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_TRACES_EXPORTER="otlp,local",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        server = Served("tests.apps.shop:app", env, tmp)
        try:
            yield server, receiver, env, tmp
        finally:
            server.stop()


ROW = re.compile(r"^[│├└─ ]*(?P<name>\S.*?)\s+(?P<duration>\d+\.\d+) ms\s+\+\s*(?P<offset>\d+\.\d+) ms")


def _traceparent():
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def test_caller_trace_continues_through_server_workflow_and_hooks(served):
    """A request with traceparent: server span, workflow span and hook spans all land in the caller's trace."""
    server, receiver, _, _ = served
    trace_id, caller_span, header = _traceparent()
    r = httpx.post(f"{server.url}/workflows/order", json={"sku": "A1", "qty": 2},
                   headers={"traceparent": header, "baggage": "tenant=acme", "x-session-id": "sess-9"})
    assert r.status_code == 200
    assert r.json()["result"] == {"ordered": "A1", "qty": 2}
    assert r.json()["trace_id"] == trace_id
    assert r.headers["x-trace-id"] == trace_id
    assert r.headers["traceresponse"].startswith(f"00-{trace_id}-")

    # The server span ends last and may come in a later batch than the workflow's: wait for both.
    assert receiver.wait_for(lambda: len(of_trace := [s.name for s in receiver.spans() if s.trace_id == trace_id]) >= 4
                             and {"POST /workflows/{name}", "workflow order"} <= set(of_trace), 10)
    spans = {s.name: s for s in receiver.spans() if s.trace_id == trace_id}
    http_span = spans["POST /workflows/{name}"]
    workflow = spans["workflow order"]
    assert http_span.kind == 2  # SERVER
    assert http_span.parent_span_id == caller_span
    assert http_span.attributes["http.request.method"] == "POST"
    assert http_span.attributes["http.route"] == "/workflows/{name}"
    assert http_span.attributes["http.response.status_code"] == 200
    assert http_span.attributes["url.path"] == "/workflows/order"
    assert workflow.parent_span_id == http_span.span_id
    assert workflow.attributes["nexus.channel"] == "api"
    assert workflow.attributes["session.id"] == "sess-9"
    hooks = sorted(n for n, s in spans.items() if s.parent_span_id == workflow.span_id)
    assert hooks == ["hook workflow_completed audit", "hook workflow_started audit"] or len(hooks) == 3
    assert {"hook workflow_started audit", "hook workflow_completed audit"} <= set(hooks)
    assert all(s.resource["service.name"] == "shop" for s in spans.values())


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "needle"),
    [
        ("/workflows/nope", {"json": {}}, 404, "unknown workflow"),
        ("/workflows/order", {"content": b"[1, 2]"}, 400, "JSON object"),
        ("/workflows/order", {"content": b"{not json"}, 400, "not valid JSON"),
        ("/workflows/order", {"content": b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'}, 413, "over"),
        ("/workflows/explode", {"json": {}}, 500, "workflow failed"),
    ],
)
def test_errors_are_json_with_trace_id_and_server_keeps_serving(served, path, kwargs, status, needle):
    """Each bad request gets its status, a JSON body with a trace id, and the server still serves."""
    server = served[0]
    r = httpx.post(server.url + path, headers={"content-type": "application/json"}, timeout=10, **kwargs)
    assert r.status_code == status
    body = r.json()
    assert needle in body["error"]
    assert len(body["trace_id"]) == 32 and body["trace_id"] == r.headers["x-trace-id"]
    text = r.text
    assert "Traceback" not in text and 'File "' not in text and "hunter2" not in text
    if status == 500:
        assert body["error_type"] == "RuntimeError"
    ok = httpx.post(f"{server.url}/workflows/order", json={"sku": "B"})
    assert ok.status_code == 200


def test_list_workflows_health_and_wrong_method(served):
    """GET /workflows lists workflows with descriptions; /healthz answers; a wrong method is JSON 405."""
    server = served[0]
    listing = httpx.get(f"{server.url}/workflows").json()["workflows"]
    assert listing == [{"name": "explode", "description": "Always fails, with a secret in its message."},
                       {"name": "order", "description": "Place an order."}]
    health = httpx.get(f"{server.url}/healthz").json()
    assert health == {"status": "ok", "service": "shop", "started": True}
    r = httpx.get(f"{server.url}/workflows/order")
    assert r.status_code == 405 and "error" in r.json()


def test_session_id_from_body_when_no_header(served):
    """Without an X-Session-Id header, a string session_id in the body is used."""
    server, receiver, _, _ = served
    r = httpx.post(f"{server.url}/workflows/order", json={"sku": "C", "session_id": "from-body"})
    trace_id = r.json()["trace_id"]
    assert receiver.wait_for(lambda: any(s.trace_id == trace_id and s.name == "workflow order"
                                         for s in receiver.spans()), 10)
    (wf,) = [s for s in receiver.spans() if s.trace_id == trace_id and s.name == "workflow order"]
    assert wf.attributes["session.id"] == "from-body"


def test_traces_command_shows_the_served_trace_as_a_tree(served):
    """`nexus-otel traces` lists the request's trace, and shows it as a tree with every span and duration."""
    server, receiver, env, tmp = served
    trace_id, _, header = _traceparent()
    r = httpx.post(f"{server.url}/workflows/order", json={"sku": "T"}, headers={"traceparent": header})
    assert r.status_code == 200
    # The server span ends last and may come in a later batch than the workflow's: wait for both.
    assert receiver.wait_for(lambda: len(of_trace := [s.name for s in receiver.spans() if s.trace_id == trace_id]) >= 4
                             and {"POST /workflows/{name}", "workflow order"} <= set(of_trace), 10)
    exported = [s for s in receiver.spans() if s.trace_id == trace_id]

    def listed():
        out = nexus_otel("traces", "--limit", "50", env=env, cwd=tmp)
        return out.returncode == 0 and trace_id in out.stdout

    assert receiver.wait_for(listed, 10, interval=0.3)
    listing = nexus_otel("traces", "--limit", "50", env=env, cwd=tmp).stdout
    line = next(line for line in listing.splitlines() if line.startswith(trace_id))
    assert " order " in line and " ok " in line and " ms " in line

    shown = nexus_otel("traces", trace_id[:12], env=env, cwd=tmp)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {trace_id}")
    assert lines[1].split() == ["SPAN", "DURATION", "STARTED", "AFTER"]  # the columns are labelled
    tree = lines[2:]
    rows = [ROW.match(r) for r in tree]
    assert all(rows), tree
    assert sorted(m["name"] for m in rows) == sorted(s.name for s in exported)
    assert all(float(m["duration"]) > 0 for m in rows)
    assert tree[0].startswith("POST /workflows/{name}")
    assert tree[1].startswith("└─ workflow order")
    assert any(r.startswith("   ├─ hook workflow_started audit") for r in tree)


def test_sigterm_stops_the_app_cleanly(tmp_path):
    """SIGTERM: the app stops gracefully (uvicorn re-raises the signal after shutdown) and its spans are stored."""
    env = cli_env(tmp_path / "data")
    server = Served("tests.apps.shop:app", env, tmp_path)
    httpx.post(f"{server.url}/workflows/order", json={"sku": "Z"})
    code, stderr = server.stop()
    assert code in (0, -15), stderr
    assert "Traceback" not in stderr
    listing = nexus_otel("traces", env=env, cwd=tmp_path).stdout
    assert " order " in listing


def test_plugins_command_lists_plugins_with_versions(tmp_path):
    """`nexus-otel plugins` lists the app's plugins and those of --plugins-dir, with versions."""
    env = cli_env(tmp_path / "data")
    from .served import REPO

    out = nexus_otel("plugins", "tests.apps.shop:app", "--plugins-dir", str(REPO / "plugins"), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()}
    assert rows["audit"] == "1.2.0"
    assert rows["slow_workflow_alert"] == "1.0.0"
    assert "lifecycle_demo" in rows


def test_run_prints_result_and_trace_id(tmp_path):
    """`nexus-otel run` prints the result as JSON and the trace id, and the trace is stored."""
    env = cli_env(tmp_path / "data")
    out = nexus_otel("run", "tests.apps.shop:app", "order", "--input", '{"sku": "R", "qty": 3}',
                     env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"ordered": "R", "qty": 3}
    trace_line = [line for line in out.stderr.splitlines() if line.startswith("trace_id: ")]
    trace_id = trace_line[0].split(": ")[1]
    assert len(trace_id) == 32
    shown = nexus_otel("traces", trace_id, env=env, cwd=tmp_path)
    assert shown.returncode == 0
    assert "workflow order" in shown.stdout
    assert "nexus.channel" not in shown.stdout  # the tree shows names and timings, not attributes


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["run", "tests.apps.shop:app", "nope"], 2, "workflow 'nope': not registered (registered: explode, order)"),
        (["run", "tests.apps.shop:app", "order", "--input", "{bad"], 2, "--input is not valid JSON"),
        (["run", "tests.apps.shop:app", "order", "--input", "[1]"], 2, "--input must be a JSON object"),
        (["run", "tests.apps.shop:app", "explode"], 1, "workflow 'explode' failed: RuntimeError"),
        (["run", "tests.apps.nothere:app", "order"], 2, "invalid APP='tests.apps.nothere:app'"),
        (["run", "no-colon", "order"], 2, "expected MODULE:ATTRIBUTE"),
        (["traces", "ffffffffffff"], 1, "no trace 'ffffffffffff'"),
    ],
)
def test_cli_errors_are_clear_and_non_zero(tmp_path, args, code, needle):
    """Unknown workflow, bad JSON, a failing workflow, a bad app path: a clear message and a non-zero exit."""
    out = nexus_otel(*args, env=cli_env(tmp_path / "data"), cwd=tmp_path)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("http,method", [("httptools", "PURGE"), ("h11", "FROBNICATE")])
def test_unknown_method_is_recorded_as_other_not_as_a_new_series(capture, http, method):
    """A method outside the conventions' list is counted under "_OTHER" (the original kept on the span), as the
    conventions ask. (httptools' parser answers 400 itself to a token it does not know at all, before the app.)"""
    from nexus_otel.serving import BackgroundServer

    app = capture.app("methods")
    app.register("w", lambda inputs: 1)
    with BackgroundServer(app, http=http) as url:
        odd = httpx.request(method, f"{url}/workflows/w", timeout=10)
        ok = httpx.post(f"{url}/workflows/w", json={}, timeout=10)
    assert odd.status_code == 405 and odd.json()["trace_id"]
    assert ok.status_code == 200
    [span] = [s for s in capture.spans if s.attributes.get("http.request.method") == "_OTHER"]
    assert span.attributes["http.request.method_original"] == method
    assert span.name == "HTTP /workflows/{name}"
    methods = {p.attributes["http.request.method"] for p in capture.metric_points("http.server.request.duration")}
    assert methods == {"_OTHER", "POST"}
