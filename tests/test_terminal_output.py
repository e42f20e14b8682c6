"""What the CLI prints is inert in a terminal: escape sequences, C1 bytes and markup in data are shown, not obeyed."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner

from nexus_otel import Nexus
from nexus_otel.cli import main as cli
from nexus_otel.outbox import Outbox
from nexus_otel.serving import BackgroundServer
from nexus_otel.terminal import inert, inert_line, inert_markup
from nexus_otel.traceview import recent_traces

from .served import cli_env, nexus_otel

# A screen clear, an OSC window title ended by BEL, an OSC 8 hyperlink ended by ST, a C1 CSI (0x9b),
# a C1 OSC (0x9d), a one-character ESC sequence (ESC c: reset), a carriage return, DEL, a bidi
# override, and rich markup.
EVIL = "A\x1b[2J\x1b]0;owned\x07\x1b]8;;http://x\x1b\\link\x9b31m\x9d0;t\x9c\x1bcZ\rB\x7f\u202e[bold]C[/bold]"
ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def acting(output: bytes) -> list[str]:
    """The characters in ``output`` a terminal would act on (newline and tab aside)."""
    return ACTING.findall(output.decode("utf-8", errors="surrogateescape"))


def shown(output: bytes) -> bool:
    """True if ``output`` shows where EVIL's escape sequences were (an operator sees something was there)."""
    text = output.decode()
    return "\\x1b[2J" in text and "\\x07" in text and "\\x9b31m" in text


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A local store holding three traces from a real app served over HTTP, each carrying EVIL in data."""
    data = tmp_path / "store"
    app = Nexus("terminal", environ={"NEXUS_OTEL_DATA_DIR": str(data), "NEXUS_OTEL_TAIL_SAMPLING_RATIO": "1"})
    app.register("echo", lambda inputs: {"ok": True})

    def fail(inputs: dict) -> None:
        raise ValueError(f"bad input {EVIL}")

    app.register("fail", fail)
    with BackgroundServer(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/workflows/echo", json={"session_id": EVIL}).status_code == 200
        assert client.post("/workflows/fail", json={}).status_code == 500
        assert client.post(f"/workflows/{quote(EVIL, safe='')}", json={}).status_code == 404
    return data


def invoke(*args: str) -> bytes:
    """Run the CLI's command in-process as a user would; its stdout and stderr."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.stdout_bytes + result.stderr_bytes


def test_traces_list_and_trees_print_no_acting_characters(store):
    """`traces`, `traces ID` and `traces ID -a` show a session id, an error and a 404's path with escapes inert."""
    summaries = [s for s in recent_traces(store, include_all=True) if s.root.startswith("POST")]
    assert len(summaries) == 3, summaries
    for args in (["traces"], ["traces", "--all"]):
        output = invoke(*args, "--data-dir", str(store))
        assert not acting(output), (args, acting(output))
    trees = []
    for summary in summaries:
        for extra in ([], ["-a"]):
            output = invoke("traces", summary.trace_id, *extra, "--data-dir", str(store))
            assert summary.trace_id.encode() in output
            assert not acting(output), (summary.workflow, extra, acting(output))
            trees.append(output)
    with_attributes = b"".join(trees[1::2])
    assert shown(with_attributes)
    text = with_attributes.decode()
    assert f"session.id = {inert_line(EVIL)}" in text  # the session id, whole and visible
    assert f"url.path = /workflows/{inert_line(EVIL)}" in text  # the 404's path
    assert inert_line(f"bad input {EVIL}") in text  # the exception's message


def test_dead_letters_print_no_acting_characters(tmp_path):
    """`webhooks dead-letters` shows a dead letter whose workflow and last error hold escapes, inert."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path)
    outbox.enqueue([("msg_1", "http://127.0.0.1:9/hook", {"workflow": EVIL})])
    (message,) = outbox.lease()
    outbox.dead_letter(message.handle, f"HTTP 400: {EVIL}")
    outbox.close()
    output = invoke("webhooks", "dead-letters", "--outbox", str(path))
    assert b"msg_1" in output and b"attempts=1" in output
    assert not acting(output), acting(output)
    assert shown(output)


def test_run_prints_a_failing_workflows_message_inert(tmp_path):
    """`nexus-otel run` (a real process) prints a workflow's error message, log lines and result with escapes inert."""
    module = tmp_path / "evil_app.py"
    module.write_text(
        "import logging\n"
        "from nexus_otel import Nexus\n"
        "app = Nexus('evil')\n"
        f"EVIL = {EVIL!r}\n"
        "@app.workflow('fail')\n"
        "def fail(inputs):\n"
        "    logging.getLogger('evil').warning('about to fail: %s', EVIL)\n"
        "    raise RuntimeError(EVIL)\n"
        "@app.workflow('echo')\n"
        "def echo(inputs):\n"
        "    return {'said': EVIL}\n"
    )
    env = cli_env(tmp_path / "data", PYTHONPATH=f"{tmp_path}:{Path(__file__).resolve().parent.parent}")
    failed = nexus_otel("run", "evil_app:app", "fail", env=env, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    output = (failed.stdout + failed.stderr).encode("utf-8", errors="surrogateescape")
    assert not acting(output), acting(output)
    assert "RuntimeError: " + inert(EVIL) in failed.stderr
    assert "WARNING evil: about to fail: " + inert(EVIL) in failed.stderr
    echoed = nexus_otel("run", "evil_app:app", "echo", env=env, cwd=tmp_path)
    assert echoed.returncode == 0, echoed.stderr
    assert not acting(echoed.stdout.encode()), acting(echoed.stdout.encode())
    assert json.loads(echoed.stdout) == {"said": EVIL}  # still the same JSON, in JSON's own escapes


def test_rich_markup_and_escapes_in_data_print_as_text():
    """Data printed through rich (the demo) shows `[bold]` and escape sequences as text, never as style or control."""
    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, color_system="standard", width=400, highlight=False)
    console.print(f"value: {inert_markup(EVIL)}")
    printed = console.file.getvalue()
    assert printed == f"value: {inert_line(EVIL)}\n", printed  # verbatim: no style, no control
