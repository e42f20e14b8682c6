"""Finding plugins: in a folder of ``*.py`` files, and in installed packages' entry points.

A plugin file offers its plugins in one of three ways, first match wins:

- a module-level ``plugins`` list (or ``plugin`` object) of instances;
- a ``create_plugins()`` function returning them;
- otherwise, every :class:`~nexus_otel.plugin_base.NexusPlugin` subclass defined in
  the file that can be built with no arguments is instantiated.

An entry point in the group ``nexus_otel.plugins`` names a plugin class, a
factory, or an instance. A source that fails becomes a
:class:`~nexus_otel.errors.PluginLoadError` naming it; the others still load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from .errors import PluginError, PluginLoadError

log = logging.getLogger("nexus_otel.discovery")


@dataclass
class Discovered:
    """What a discovery found: plugins to register, and the sources that failed."""

    plugins: list[Any] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)


def load_folder(folder: str | Path, *, strict: bool = False) -> Discovered:
    """Import each ``*.py`` in ``folder`` (not ``_*.py``) and collect its plugins."""
    path = Path(folder)
    if not path.is_dir():
        raise PluginLoadError(str(path), "not a directory")
    found = Discovered()
    for file in sorted(path.glob("*.py")):
        if file.name.startswith("_"):
            continue
        try:
            found.plugins.extend(load_file(file))
        except PluginLoadError as exc:
            if strict:
                raise
            log.error("%s", exc)
            found.errors.append(exc)
    return found


def load_file(file: str | Path) -> list[Any]:
    """Import one plugin file and return its plugin instances."""
    file = Path(file).resolve()
    digest = hashlib.sha1(str(file).encode()).hexdigest()[:10]
    module_name = f"nexus_otel_plugins_{file.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise PluginLoadError(str(file), "not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        return _plugins_of_module(module)
    except PluginLoadError:
        sys.modules.pop(module_name, None)
        raise
    except Exception as exc:
        sys.modules.pop(module_name, None)
        line = _line_in(exc, file)
        where = f"{file}:{line}" if line else str(file)
        raise PluginLoadError(where, f"{type(exc).__name__}: {exc}") from exc


def load_entry_points(group: str = "nexus_otel.plugins", *, strict: bool = False) -> Discovered:
    """Load every entry point of ``group``; each names a class, factory or instance."""
    found = Discovered()
    for ep in entry_points(group=group):
        source = f"entry point {ep.name!r} ({ep.value})"
        try:
            found.plugins.append(_instantiate(ep.load(), source))
        except Exception as exc:
            error = exc if isinstance(exc, PluginLoadError) else PluginLoadError(
                source, f"{type(exc).__name__}: {exc}",
            )
            if strict:
                raise error from exc
            log.error("%s", error)
            found.errors.append(error)
    return found


def _plugins_of_module(module: Any) -> list[Any]:
    from .plugin_base import NexusPlugin

    source = getattr(module, "__file__", module.__name__)
    if hasattr(module, "plugins"):
        return list(module.plugins)
    if hasattr(module, "plugin"):
        return [module.plugin]
    if callable(getattr(module, "create_plugins", None)):
        return list(module.create_plugins())
    found = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if obj.__module__ != module.__name__ or not issubclass(obj, NexusPlugin) or obj is NexusPlugin:
            continue
        if inspect.isabstract(obj):
            continue
        found.append(_instantiate(obj, f"{source}: {obj.__name__}"))
    return found


def _instantiate(obj: Any, source: str) -> Any:
    if not isinstance(obj, type) and not (callable(obj) and not hasattr(obj, "setup")):
        return obj
    try:
        return obj()
    except TypeError as exc:
        raise PluginLoadError(
            source, f"cannot build it with no arguments ({exc}); "
            "export a configured instance as `plugin = ...` instead",
        ) from exc


def _line_in(exc: BaseException, file: Path) -> int | None:
    if isinstance(exc, SyntaxError) and exc.lineno:
        return exc.lineno
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == file:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
