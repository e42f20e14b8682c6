"""The package's structure: no import cycle, no module reaching into another's private names, the public API whole."""

import ast
import importlib
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

import nexus_otel
from nexus_otel import PluginManager, errors

PACKAGE = Path(nexus_otel.__file__).parent
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public, though spelled with an underscore


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imported(module: str, node: ast.ImportFrom) -> list[tuple[str, str]]:
    """(module imported, name) for each name of ``from ... import ...`` (a submodule when the name is one)."""
    package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
    if node.level:
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, a.name) for a in node.names]


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _packages_above(name: str) -> list[str]:
    """``a.b.c`` -> ``["a", "a.b"]``: the packages Python imports (runs the ``__init__`` of) before ``a.b.c``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _with_packages(module: str, targets: Iterable[str]) -> set[str]:
    """What importing ``targets`` from ``module`` runs: each target and the packages above it, but never
    ``module`` itself nor its own packages.

    Importing ``a.b.c`` first imports the packages ``a`` and ``a.b`` (runs their ``__init__``), so a module
    importing ``a.b.c`` depends on them too: ``x.y`` importing ``a.b.c`` while ``a/b/__init__.py`` imports
    ``x.y`` is a cycle that fails at run time when ``x.y`` is imported first. ``module``'s own packages are
    the exception: Python has always started them before ``module`` runs, so importing a sibling
    (``from .d import D`` in ``a.b.c``) finds ``a.b`` in ``sys.modules`` and runs nothing of it again, and a
    package's ``__init__`` importing its own submodules is no cycle. Importing a *name* from one of its own
    packages (``from a.b import Z``, ``Z`` not a submodule) does need that ``__init__`` to have run past
    ``Z``: that import is counted (``_imported`` gives ``a.b`` as its target).
    """
    own = set(_packages_above(module))
    out: set[str] = set()
    for target in targets:
        if target in MODULES and target != module:
            out.add(target)
        out.update(p for p in _packages_above(target) if p in MODULES and p != module and p not in own)
    return out


def _imports(module: str, tree: ast.AST) -> tuple[set[str], set[str]]:
    """The package's modules ``module`` imports, with the packages above them (:func:`_with_packages`):
    (when it runs, for type checkers only)."""
    runtime: set[str] = set()
    typing_only: set[str] = set()

    def walk(node: ast.AST, into: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                walk(child, typing_only)
                continue
            if node is tree and isinstance(child, ast.FunctionDef) and child.name == "__getattr__":
                continue  # a module's __getattr__ (PEP 562) runs on a name's first use, once the module is loaded
            if isinstance(child, ast.ImportFrom):
                into.update(_with_packages(module, (t for t, _ in _imported(module, child))))
            elif isinstance(child, ast.Import):
                into.update(_with_packages(module, (a.name for a in child.names)))
            walk(child, into)

    walk(tree, runtime)
    return runtime, typing_only - runtime


def _import_graph(typing_only: bool = False) -> dict[str, set[str]]:
    """Imports between the package's modules: those that run (at the top or inside functions), or the others."""
    return {m: _imports(m, ast.parse(p.read_text()))[1 if typing_only else 0] for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_the_packages_modules():
    graph = _import_graph()
    assert len(graph) > 50 and sum(len(e) for e in graph.values()) > 100  # the walk found the package
    assert _cycles(graph) == []


def test_imports_for_type_checkers_only_are_these_annotations():
    """They never run (``from __future__ import annotations``); each is here on purpose, so a new one is seen.

    ``NexusPlugin.setup`` is annotated with the app its plugins get; middleware with the workflow it wraps;
    ``nexus_otel.telemetry`` names the set-up classes it loads on first use, for type checkers.
    """
    edges = {(m, t) for m, targets in _import_graph(typing_only=True).items() for t in targets}
    assert edges == {("nexus_otel.plugin_base", "nexus_otel.app"),
                     ("nexus_otel.execution_middleware", "nexus_otel.workflows"),
                     ("nexus_otel.telemetry", "nexus_otel.telemetry.config"),
                     ("nexus_otel.telemetry", "nexus_otel.telemetry.telemetry")}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_an_import_counts_the_packages_above_it_but_not_the_importers_own():
    """An import of ``telemetry.contract`` from ``processors`` runs ``telemetry/__init__``; from ``telemetry``, not."""
    contract = "nexus_otel.telemetry.contract"
    assert _with_packages("nexus_otel.processors.tail_sampling", [contract]) == {contract, "nexus_otel.telemetry"}
    assert _with_packages("nexus_otel.telemetry.config", [contract]) == {contract}
    assert _with_packages("nexus_otel.telemetry", [contract]) == {contract}


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines for itself: functions, classes, attributes it assigns, module-level names."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _private_reaches(module: str, source: str) -> list[str]:
    tree = ast.parse(source)
    own = _defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("nexus_otel")):
            for target, name in _imported(module, node):
                if name.startswith("_") and not name.startswith("__") and target not in MODULES:
                    found.append(f"line {node.lineno}: imports {name} from {target}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue  # its own
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super":
                continue  # a base class's hook it overrides (the SDK's, checked where it is used)
            if node.attr in NAMEDTUPLE_API or node.attr in own:
                continue  # defined in this module: its own private business
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reaches_into_another_modules_private_names():
    reaches = {m: r for m, p in MODULES.items() if (r := _private_reaches(m, p.read_text()))}
    assert reaches == {}


def test_the_private_name_check_sees_a_reach():
    module = next(iter(MODULES))
    assert _private_reaches(module, "def f(app):\n    return app._secret\n") == ["line 2: app._secret"]
    assert _private_reaches(module, "class A:\n    def f(self, other):\n        self._x = other._x\n") == []


def test_the_whole_error_tree_is_exported():
    tree = {name for name, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.NexusOtelError) and cls.__module__ == errors.__name__}
    assert len(tree) > 15
    assert tree <= set(nexus_otel.__all__)
    assert all(getattr(nexus_otel, name) is getattr(errors, name) for name in tree)


def test_a_plugin_manager_of_something_not_an_app_says_what_it_needs():
    with pytest.raises(TypeError, match="needs a nexus_otel.Nexus app .or a PluginHost., got object"):
        PluginManager(object())


def _starts_in_constructors(tree: ast.AST) -> list[int]:
    """Lines where an ``__init__`` calls ``<something>.start()`` (a thread, a worker, a server)."""
    return [call.lineno for init in ast.walk(tree) if isinstance(init, ast.FunctionDef) and init.name == "__init__"
            for call in ast.walk(init) if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
            and call.func.attr == "start"]


def test_no_constructor_starts_a_thread():
    """Background work starts in start() (the app's lifecycle), never as an object is built."""
    found = [f"{module}:{line}" for module, path in sorted(MODULES.items())
             for line in _starts_in_constructors(ast.parse(path.read_text()))]
    assert found == []


def test_the_constructor_check_can_fail():
    bad = ast.parse("class A:\n    def __init__(self):\n        self.t = Thread()\n        self.t.start()\n")
    assert _starts_in_constructors(bad) == [4]


DOCS = [PACKAGE.parent / "README.md", *sorted((PACKAGE.parent / "docs").glob("*.md"))]
_CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)
_FROM_IMPORT = re.compile(r"^[ \t]*(from[ \t]+nexus_otel[\w.]*[ \t]+import[ \t]+(?:\([^)]*\)|[^\n]*))", re.M)


def _documented_imports(markdown: str) -> set[tuple[str, str]]:
    """(module, name) of each ``from nexus_otel... import name`` in the page's code blocks and inline code."""
    found: set[tuple[str, str]] = set()
    for block, inline in _CODE.findall(markdown):
        for statement in _FROM_IMPORT.findall(block or inline):
            node = ast.parse(statement.split("#")[0].strip()).body[0]
            assert isinstance(node, ast.ImportFrom) and node.module
            found.update((node.module, a.name) for a in node.names)
    return found


def test_the_docs_import_finder_reads_blocks_and_inline_code():
    page = ("Use `from nexus_otel import Nexus, TailSampling` here.\n\n```python\nimport os\n"
            "from nexus_otel.plugins import (AuthPlugin,\n    WebhookPlugin)  # two\nfrom nexus import Nexus\n```\n"
            "Not code: from nexus_otel.x import Y\n")
    assert _documented_imports(page) == {("nexus_otel", "Nexus"), ("nexus_otel", "TailSampling"),
                                         ("nexus_otel.plugins", "AuthPlugin"), ("nexus_otel.plugins", "WebhookPlugin")}


def test_every_name_the_docs_import_exists_and_is_in_its_modules_all():
    """What README.md and docs/*.md tell users to import works, and is public: in ``__all__`` where there is one."""
    documented = {(doc.name, m, n) for doc in DOCS for m, n in _documented_imports(doc.read_text())}
    assert len(documented) > 15  # the walk found the docs' imports
    problems = []
    for doc, module_name, name in sorted(documented):
        module = importlib.import_module(module_name)
        if not hasattr(module, name) and f"{module_name}.{name}" not in MODULES:
            problems.append(f"{doc}: {module_name} has no {name}")
        elif hasattr(module, "__all__") and name not in module.__all__:
            problems.append(f"{doc}: {name} is not in {module_name}.__all__")
    assert problems == []


_FRESH_IMPORTS = r'''
import importlib, importlib.machinery, json, sys, types
package_dir, names = sys.argv[1], sorted(sys.argv[2:])
failures, loaded_by = {}, {}
for name in names:
    if name in loaded_by.get(name.rpartition(".")[0], ()):
        continue  # its package's own fresh import loaded it: importing it fresh is that same import again
    for loaded in [m for m in sys.modules if m == "nexus_otel" or m.startswith("nexus_otel.")]:
        del sys.modules[loaded]
    if name != "nexus_otel":  # the package, as if its __init__ were empty: its import order hides nothing
        top = types.ModuleType("nexus_otel")
        top.__path__ = [package_dir]
        top.__spec__ = importlib.machinery.ModuleSpec("nexus_otel", None, is_package=True)
        top.__spec__.submodule_search_locations = [package_dir]
        sys.modules["nexus_otel"] = top
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failures[name] = f"{type(exc).__name__}: {exc}"
    loaded_by[name] = {m for m in sys.modules if m.startswith("nexus_otel.")}
print(json.dumps(failures))
'''


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Each module imports when it is the first of the package imported, whatever nexus_otel/__init__.py imports.

    One interpreter (one per module would cost a second each): before each module, every ``nexus_otel``
    module is dropped from ``sys.modules`` and ``nexus_otel`` itself is an empty package, so the
    top-level ``__init__``'s import order, which can hide a cycle, does not run first. A module its
    package's ``__init__`` imports is not tried again: its fresh import is the package's.
    """
    result = subprocess.run([sys.executable, "-c", _FRESH_IMPORTS, str(PACKAGE), *MODULES],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {}


def test_the_telemetry_package_still_gives_its_set_up_classes():
    """``from nexus_otel.telemetry import Telemetry, TelemetryConfig`` works, loaded on first use (no cycle)."""
    from nexus_otel.telemetry import Telemetry, TelemetryConfig, config, telemetry

    assert Telemetry is telemetry.Telemetry and TelemetryConfig is config.TelemetryConfig
    with pytest.raises(ImportError, match="cannot import name .Nothing."):
        from nexus_otel.telemetry import Nothing  # type: ignore[attr-defined]  # noqa: F401
