"""Plugins are found in a folder of files and in installed packages' entry points."""

import sys
from pathlib import Path

import pytest

from nexus_otel.errors import PluginLoadError

REPO = Path(__file__).resolve().parent.parent


def test_repository_plugins_folder_loads(capture, caplog):
    """The shipped plugins/ folder loads cleanly and its plugins run: the lifecycle example logs stages 1 to 6."""
    caplog.set_level("INFO", logger="plugins")
    app = capture.app()
    result = app.load_plugins(REPO / "plugins", strict=True)
    assert result.errors == []
    assert {"lifecycle_demo", "configurable"} <= set(app.plugins.list())
    app.register("w", lambda i: 1)
    with app:
        app.execute_workflow("w")
        app.execute_workflow("w")
    stages = [r.getMessage()[:2] for r in caplog.records if r.name == "plugins.lifecycle"]
    # "1." is logged when the plugin file is first imported, which may have been by an earlier test.
    assert stages[-5:] == ["2.", "3.", "4.", "5.", "6."]


def test_module_level_plugins_list_and_factory(capture, tmp_path):
    """A file may export `plugins`, `plugin`, or `create_plugins()` for plugins needing arguments."""
    (tmp_path / "listed.py").write_text(
        "from nexus_otel import NexusPlugin\n"
        "class P(NexusPlugin):\n"
        "    def __init__(self, n): self.n = n\n"
        "    @property\n"
        "    def name(self): return f'p{self.n}'\n"
        "plugins = [P(1), P(2)]\n"
    )
    (tmp_path / "factory.py").write_text(
        "from nexus_otel import NexusPlugin\n"
        "class Q(NexusPlugin):\n"
        "    name = 'q'\n"
        "def create_plugins():\n"
        "    return [Q()]\n"
    )
    app = capture.app()
    app.load_plugins(tmp_path, strict=True)
    assert sorted(app.plugins.list()) == ["p1", "p2", "q"]


def test_plugin_needing_arguments_gets_a_clear_error(capture, tmp_path):
    """A plugin class that cannot be built without arguments is named with the fix."""
    (tmp_path / "needs.py").write_text(
        "from nexus_otel import NexusPlugin\n"
        "class Hook(NexusPlugin):\n"
        "    name = 'hook'\n"
        "    def __init__(self, url): self.url = url\n"
    )
    app = capture.app()
    with pytest.raises(PluginLoadError, match=r"needs\.py: Hook.*no arguments.*plugin = \.\.\."):
        app.load_plugins(tmp_path, strict=True)


def test_missing_folder_is_an_error(capture, tmp_path):
    """A plugins folder that does not exist is reported, not ignored."""
    with pytest.raises(PluginLoadError, match="not a directory"):
        capture.app().load_plugins(tmp_path / "nope")


@pytest.fixture
def installed_dist(tmp_path, monkeypatch):
    """A fake installed distribution declaring entry points in nexus_otel.plugins."""
    pkg = tmp_path / "acme_plugins.py"
    pkg.write_text(
        "from nexus_otel import NexusPlugin\n"
        "class Acme(NexusPlugin):\n"
        "    name = 'acme'\n"
        "    version = '3.0.0'\n"
    )
    dist = tmp_path / "acme_plugins-3.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugins\nVersion: 3.0.0\n")
    (dist / "entry_points.txt").write_text(
        "[nexus_otel.plugins]\nacme = acme_plugins:Acme\nghost = acme_plugins:Missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("acme_plugins", None)


def test_entry_point_plugins_load_and_a_broken_one_is_named(capture, installed_dist):
    """Entry points in nexus_otel.plugins register; a broken one is reported by name, others load."""
    app = capture.app()
    result = app.load_plugins(entry_points=True)
    assert app.plugins.list() == ["acme"]
    assert app.plugins.get("acme").version == "3.0.0"
    assert len(result.errors) == 1
    assert "entry point 'ghost'" in str(result.errors[0])
    with pytest.raises(PluginLoadError, match="ghost"):
        capture.app("strict").load_plugins(entry_points=True, strict=True)
