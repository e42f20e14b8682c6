"""The README's tour step 5 and docs/deploy.md's "from nothing to a trace in Jaeger" and "a log record
through the stack" run as written.

The texts' ``bash`` blocks are taken verbatim and run in one shell from the
repository root, against one ``scripts/stack.sh`` (our Collector, Jaeger,
VictoriaLogs and Prometheus on their documented loopback ports, the Collector
on ``deploy/otel-collector.yaml`` exactly as shipped, its timing too); each test
reads its part of the output. The only additions are where state goes
(``NEXUS_OTEL_STACK_DIR``, ``NEXUS_OTEL_DATA_DIR`` in a temporary directory), the
markers between the blocks' outputs, and the clean-up afterwards. The ports are the
documented ones: each is checked free before anything starts, and one held by something else
fails the tests at once, naming it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from .deploy_servers import REPO, require_binary

JAEGER_UI = "http://127.0.0.1:16686"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    level = heading.split(" ", 1)[0]
    following = re.search(rf"^#{{1,{len(level)}}} ", text[start + len(heading):], re.M)
    return text[start:start + len(heading) + following.start()] if following else text[start:]


def _bash_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def _run_literally(script: str, tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh shell at the repo root (its own process group), then stop what it left."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(NEXUS_OTEL_STACK_DIR=str(tmp_path / "stack"), NEXUS_OTEL_DATA_DIR=str(tmp_path / "data"))
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    # Files, not pipes: what the text starts in the background keeps its output open after the script ends.
    with open(out_file, "w") as stdout, open(err_file, "w") as stderr:
        process = subprocess.Popen(["bash", "-e", "-c", script], cwd=REPO, env=env, stdout=stdout, stderr=stderr,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        process.wait(timeout)
        out, err = out_file.read_text(), err_file.read_text()
    finally:
        subprocess.run(["bash", "scripts/stack.sh", "down"], cwd=REPO, env=env, capture_output=True, timeout=60)
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the app the text put in the background
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _stack_ports() -> list[int]:
    """The loopback ports scripts/stack.sh binds (its ``PORTS=(...)`` line, which its own check reads too)."""
    match = re.search(r"^PORTS=\(([\d ]+)\)", (REPO / "scripts" / "stack.sh").read_text(), re.M)
    assert match, "scripts/stack.sh has no PORTS=(...) line"
    return [int(port) for port in match.group(1).split()]


def _held(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` or holds it so that it cannot be bound."""
    with socket.socket() as probe:
        probe.settimeout(1)
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return True
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def require_free_ports(ports: list[int], what: str) -> None:
    """Fail at once, naming each port of ``ports`` that something else holds (``what`` needs them all)."""
    held = [port for port in sorted(set(ports)) if _held(port)]
    if held:
        pytest.fail(f"{', '.join(f'127.0.0.1:{port}' for port in held)} held by something else, and "
                    f"{what} must have {'it' if len(held) == 1 else 'them'} free (stop what listens there, "
                    "e.g. a stack left running: bash scripts/stack.sh down)", pytrace=False)


README_DEMO = "=== README tour step 5"
SECTION_1_JAEGER = "=== docs/deploy.md section 1: the traces in Jaeger"
FAILED_CHECKOUT = "=== docs/deploy.md section 3: a failed checkout"
BY_HAND = "=== docs/deploy.md: a log record by hand"
README_JAEGER = "=== README tour step 5: the service orders in Jaeger"


def _readme_step_5() -> tuple[str, str]:
    """The README tour's step 5 (its text up to the next heading) and its one bash block."""
    section = _section((REPO / "README.md").read_text(), "**5. Point it at an OTLP endpoint.**")
    section = section[:section.index("## ")] if "## " in section else section
    (block,) = _bash_blocks(section)
    return section, block


@pytest.fixture(scope="module")
def stack_docs_run(tmp_path_factory):
    """The README tour's step 5 and docs/deploy.md's blocks on one stack, in the order a reader runs them: the
    stack and the demo app of section 1, the README's ``nexus-otel demo`` as service ``orders`` (in a subshell: its
    exports stay in it), section 1's look at Jaeger, section 3's failed checkout read back from VictoriaLogs, the
    log record sent by hand, and last the README's service in Jaeger.

    One stack start for all (each start is the Collector, Jaeger, VictoriaLogs and Prometheus), and the Collector's
    tail sampler decides on the README's traces while section 1 waits for its own (10 s after a trace's first span,
    as shipped): the two waits overlap."""
    require_binary("otelcol")
    require_binary("jaeger")
    require_binary("victorialogs")
    text = (REPO / "docs" / "deploy.md").read_text()
    first = _bash_blocks(_section(text, "### Without Docker, from nothing to a trace in Jaeger"))
    assert len(first) == 2 and first[0].startswith("bash scripts/stack.sh up"), first
    (query,) = _bash_blocks(_section(text, "## 3. Log records in VictoriaLogs"))[:1]
    (by_hand,) = _bash_blocks(_section(text, "### A log record through the stack, by hand"))
    _, readme = _readme_step_5()
    # Before the clean-up stops the stack: Jaeger has the service the README names and its workflow spans. The
    # service shows with the first spans stored; the Collector may still be batching the rest, so the traces are
    # read until the workflow's span is there (or a minute has passed).
    readme_in_jaeger = (
        f"for i in $(seq 300); do curl -s {JAEGER_UI}/api/services | grep -q '\"orders\"' && break; sleep 0.2; done\n"
        f"for i in $(seq 300); do out=$(curl -s '{JAEGER_UI}/api/traces?service=orders&limit=500'); "
        f"case \"$out\" in *'\"operationName\":\"workflow checkout\"'*) break;; esac; sleep 0.2; done\n"
        f"printf '%s\\n' \"$out\"\n")
    script = "\n".join([first[0], f"echo '{README_DEMO}'", f"(\n{readme}\n)", f"echo '{SECTION_1_JAEGER}'",
                        first[1], f"echo '{FAILED_CHECKOUT}'", query, f"echo '{BY_HAND}'", by_hand,
                        f"echo '{README_JAEGER}'", readme_in_jaeger])
    app_ports = [int(port) for port in re.findall(r"--port (\d+)", script)]
    assert app_ports, "the docs' blocks serve the app on no --port"
    require_free_ports(_stack_ports() + app_ports, "the documented stack (scripts/stack.sh) and the docs' app")
    result = _run_literally(script, tmp_path_factory.mktemp("stack-docs"))
    assert result.returncode == 0, result.stderr[-3000:]
    up, rest = result.stdout.split(README_DEMO, 1)
    demo, rest = rest.split(SECTION_1_JAEGER, 1)
    jaeger, rest = rest.split(FAILED_CHECKOUT, 1)
    checkout, rest = rest.split(BY_HAND, 1)
    hand, readme_jaeger = rest.split(README_JAEGER, 1)
    return {"section 1": up + jaeger, "failed checkout": checkout, "by hand": hand, "readme demo": demo,
            "readme jaeger": readme_jaeger, "stderr": result.stderr}


def test_deploy_docs_from_nothing_to_a_trace_in_jaeger_runs_as_written(stack_docs_run):
    """Section 1 starts the stack and the demo app and lists the operations of the traces Jaeger has."""
    out = stack_docs_run["section 1"]
    assert "Jaeger UI        http://127.0.0.1:16686" in out
    assert "VictoriaLogs     http://127.0.0.1:9428/select/vmui" in out
    # The last command lists the operations of the traces Jaeger has for the service.
    operations = set(re.findall(r'"operationName":"([^"]*)"', out))
    assert {"POST /workflows/{name}", "workflow checkout"} <= operations, out[-3000:]


def test_deploy_docs_a_failed_checkouts_log_records_are_in_victorialogs(stack_docs_run):
    """Section 3's block, with section 1's stack and app: the request log's two records and the workflow's own
    logging record, found by the trace id."""
    out = stack_docs_run["failed checkout"]
    # Section 1's curls print their answers without a newline: the record is the end of a line.
    records = {r["_msg"]: r for r in (json.loads(found) for found in re.findall(r'\{"_msg".*$', out, re.M))}
    assert set(records) == {"workflow started", "workflow failed", "checkout refused: B2 is out of stock"}, records
    record = records["checkout refused: B2 is out of stock"]
    assert (record["service.name"], record["severity_text"], record["scope.name"]) == (
        "nexus-demo", "WARN", "nexus_otel.demo"), record
    assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"]) and re.fullmatch(r"[0-9a-f]{16}", record["span_id"])
    assert len({r["trace_id"] for r in records.values()}) == 1
    failed = records["workflow failed"]
    assert failed["nexus.workflow.status"] == "failed" and failed["exception.type"].endswith("OutOfStock"), failed
    assert failed["span_id"] == record["span_id"]  # the request log names the workflow span too


def test_deploy_docs_log_record_by_hand_arrives_masked_in_victorialogs(stack_docs_run):
    """The docs' curl sends a log record to the stack's Collector; VictoriaLogs returns it by trace id, masked."""
    (line,) = [line for line in stack_docs_run["by hand"].splitlines() if line.startswith("{")]
    record = json.loads(line)
    assert re.fullmatch(r"[0-9a-f]{32}", record["trace_id"]), record
    assert record["_msg"] == "charge retried with ****", record
    assert (record["service.name"], record["scope.name"], record["severity_text"]) == ("by-hand", "docs", "WARN")
    assert "db.password" not in record, record


def test_readme_tour_step_5_sends_the_demo_to_jaeger(stack_docs_run):
    """The README's block, on the stack the README says to start, puts the demo's traces in Jaeger as ``orders``."""
    section, block = _readme_step_5()
    assert "bash scripts/stack.sh up" in section
    assert "orders" in block and "nexus-otel demo" in block
    out = stack_docs_run["readme jaeger"]
    traces = re.findall(r'"traceID":"([0-9a-f]+)"', out)
    assert traces, (f"no traces for service orders in Jaeger:\n{out[-3000:]}\n"
                    f"{stack_docs_run['readme demo'][-2000:]}\n{stack_docs_run['stderr'][-2000:]}")
    assert '"operationName":"workflow checkout"' in out


def test_a_held_port_fails_the_docs_tests_at_once_naming_it():
    """A port the documented stack needs, held by something else, fails before anything starts, naming it."""
    assert 4317 in _stack_ports() and 9090 in _stack_ports()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        held = rf"^127\.0\.0\.1:{port} held by something else, and the docs must have it free"
        with pytest.raises(pytest.fail.Exception, match=held):
            require_free_ports([port], "the docs")
    require_free_ports([port], "the docs")  # free again


def test_the_stack_script_names_a_busy_port_and_its_usage(tmp_path):
    env = {**os.environ, "NEXUS_OTEL_STACK_DIR": str(tmp_path / "stack")}
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 4317))  # the first port it checks: the Collector's OTLP/gRPC
        busy.listen()
        result = subprocess.run(["bash", "scripts/stack.sh", "up"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert "stack.sh: port 127.0.0.1:4317 is in use; the stack needs it" in result.stderr, result.stderr
    assert not (tmp_path / "stack").exists(), "nothing was started"
    usage = subprocess.run(["bash", "scripts/stack.sh", "sideways"], cwd=REPO, capture_output=True, text=True)
    assert usage.returncode == 2 and "usage: bash scripts/stack.sh up|down|status" in usage.stderr
