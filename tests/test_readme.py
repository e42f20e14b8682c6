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
