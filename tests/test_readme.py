"""The README's examples run as written."""

import re
import subprocess
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)

pytest_plugins = ["pytester"]


def test_first_example_runs(tmp_path):
    """The opening example registers a workflow and a plugin, runs it, and prints from the hook."""
    out = subprocess.run([sys.executable, "-c", BLOCKS[0]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
                                          "PYTHONDONTWRITEBYTECODE": "1"})  # no __pycache__ in the checkout
    assert out.returncode == 0, out.stderr
    name, duration, trace_id = out.stdout.split()
    assert name == "greet" and float(duration) >= 0 and len(trace_id) == 32


def test_plugin_authors_test_example_passes(pytester):
    """The plugin guide's plugin and its test, as a user would paste them, pass under pytest."""
    plugin = next(b for b in BLOCKS if "class SlowWorkflowAlert" in b)
    test = next(b for b in BLOCKS if "def test_alerts_on_slow_workflows" in b)
    pytester.makepyfile(test_guide=plugin + "\n\n" + test)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_built_in_plugins_example_runs_as_written_offline(tmp_path, monkeypatch):
    """The built-in plugins snippet (OIDC auth included) sets an app up with no network: nothing is fetched at start."""
    import socket

    from nexus_otel import Nexus

    block = next(b for b in BLOCKS if "AuthPlugin(\"oidc\"" in b and "WebhookPlugin(" in b)
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def loopback_only(self, address):  # any other target is a test failure, and is never tried
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError(f"test: no network to {address}")
        return real_connect(self, address)

    real_getaddrinfo = socket.getaddrinfo

    def no_dns(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost", None):
            attempts.append(host)
            raise socket.gaierror(f"test: no DNS for {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    app = Nexus("readme", environ={"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), "OTEL_TRACES_EXPORTER": "none"})
    exec(block, {"app": app})
    names = app.plugins.list()
    app.stop(timeout=2)
    assert {"auth", "rate_limit", "webhook", "database", "caching"} <= set(names), names
    assert not attempts, f"setting up tried the network: {attempts}"


def test_tour_step_3_shows_the_demos_logs_as_written(tmp_path):
    """The tour's "see the logs" commands, run as written after the demo (the example trace id swapped for a
    real one), list the newest records, the failed checkouts with the workflow's own warning, and one trace's."""
    import os

    from nexus_otel.exporters.local_logs import read_logs

    from .served import REPO, cli_env, nexus_otel

    section = README[README.index("**3. See the logs.**"):README.index("**4. See metrics.**")]
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    env = cli_env(tmp_path / ".nexus-otel")
    env.pop("NEXUS_OTEL_DATA_DIR")  # the tour's default: .nexus-otel in the working directory
    demo = nexus_otel("demo", "--requests", "60", "--plugins-dir", str(REPO / "plugins"), env=env, cwd=tmp_path,
                      timeout=120)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    failed = next(line.trace_id for line in read_logs(tmp_path / ".nexus-otel")
                  if line.event_name == "nexus.workflow.failed"
                  and line.attributes.get("nexus.workflow.name") == "checkout")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    os.symlink(REPO / ".venv" / "bin" / "nexus-otel", tmp_path / ".venv" / "bin" / "nexus-otel")
    outputs = []
    for command in block.strip().splitlines():
        command = command.split("#", 1)[0].strip().replace("6aed8872", failed[:8])
        out = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, command + "\n" + out.stderr
        outputs.append(out.stdout.splitlines())
    newest, warnings, one_trace = outputs
    assert len(newest) == 5 and all("trace=" in line for line in newest), newest
    assert any("nexus_otel.demo" in line and "out of stock" in line for line in warnings), warnings
    assert any("nexus_otel.requests" in line and "workflow failed" in line for line in warnings), warnings
    assert all(" WARN " in line for line in warnings if "trace=" in line), warnings
    assert any("workflow started" in line for line in one_trace) and any("exception.type" in line
                                                                          for line in one_trace), one_trace
