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
                         timeout=60, env={"NEXUS_OTEL_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"})
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
