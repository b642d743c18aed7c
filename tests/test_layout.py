"""The layout rules of ARCHITECTURE.md, checked on the source.

An import graph of ``appserver/`` and ``ivr/`` is built with ``ast`` from every import
statement: module level, inside functions and under ``if TYPE_CHECKING``. Then:

1. no production command (``callyard api``, ``freeswitch``, ``asterisk``, ``cdr-writer``)
   reaches ``appserver.devkit`` (dev-only code), however indirectly;
2. ``ivr/`` (the pure core) imports nothing from ``appserver/``;
3. no two modules import each other, directly or through others (no cycles).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import leftovers
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("appserver", "ivr")
PRODUCTION_COMMANDS = {
    "api": "appserver.api.command",
    "freeswitch": "appserver.freeswitch.command",
    "asterisk": "appserver.asterisk.command",
    "cdr-writer": "appserver.cdr.command",
}
DEV_ONLY = "appserver.devkit"

Graph = dict[str, set[str]]


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``packages``."""
    found = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """``name`` if it is one of ``modules``, else its nearest known package (for
    ``from pkg import attribute``); None outside the tree (third-party, stdlib)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the tree that ``module`` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..y import z
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            # from package import submodule names the submodule; else the module itself
            names += [f"{base}.{alias.name}" for alias in node.names]
    found = {_known(name, modules) for name in names}
    return {name for name in found if name is not None and name != module}


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> Graph:
    modules = module_files(root, packages)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def import_paths(graph: Graph, start: str) -> dict[str, list[str]]:
    """Every module ``start`` reaches, with one chain of imports that gets there."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        current = todo.pop()
        for imported in sorted(graph[current]):
            if imported not in paths:
                paths[imported] = [*paths[current], imported]
                todo.append(imported)
    return paths


def cycles(graph: Graph) -> list[frozenset[str]]:
    """The groups of modules that import each other (strongly connected components of more
    than one module; Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while (member := stack.pop()) != module:
                group.append(member)
            if group:
                found.append(frozenset([module, *group]))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _is_dev_only(module: str) -> bool:
    return module == DEV_ONLY or module.startswith(DEV_ONLY + ".")


# ------------------------------------------------------------------ the rules


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph()


@pytest.mark.parametrize("command", sorted(PRODUCTION_COMMANDS))
def test_production_commands_never_import_dev_only_code(graph: Graph, command: str) -> None:
    paths = import_paths(graph, PRODUCTION_COMMANDS[command])
    assert len(paths) > 10, "the graph does not follow this command's imports"
    dev = sorted(module for module in paths if _is_dev_only(module))
    assert not dev, f"callyard {command} imports dev-only code: " + "; ".join(
        " -> ".join(paths[module]) for module in dev)


def test_ivr_imports_nothing_from_appserver(graph: Graph) -> None:
    wrong = sorted(f"{module} -> {imported}" for module, imported_set in graph.items()
                   if module.split(".")[0] == "ivr"
                   for imported in imported_set if imported.split(".")[0] == "appserver")
    assert not wrong, wrong


def test_no_import_cycles(graph: Graph) -> None:
    found = [sorted(group) for group in cycles(graph)]
    assert not found, f"modules that import each other: {found}"


# Runs `callyard COMMAND` and prints, at exit, the appserver modules the process loaded.
_LOADED_AT_EXIT = """
import atexit, runpy, sys
atexit.register(lambda: print("LOADED", *sorted(m for m in sys.modules
                                                if m.startswith("appserver")), file=sys.stderr))
sys.argv = ["callyard", *sys.argv[1:]]
runpy.run_module("appserver.cli", run_name="__main__")
"""


@pytest.mark.parametrize("command", sorted(PRODUCTION_COMMANDS))
def test_a_production_command_process_loads_no_dev_only_module(
    command: str, scratch_dir: Path
) -> None:
    """The same rule at run time, where the static graph cannot look: the ``callyard``
    entry point loads commands by name. The command stops at its first check (no storage
    URL) and the process lists the modules it loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLYARD_")}
    env.update(CALLYARD_DATA_DIR=str(scratch_dir),
               CALLYARD_ASTERISK_ARI="http://user:secret@127.0.0.1:1")
    try:
        result = subprocess.run([sys.executable, "-c", _LOADED_AT_EXIT, command], env=env,
                                capture_output=True, text=True, timeout=30, cwd=ROOT)
    finally:
        leftovers.kill_all(scratch_dir)  # what an embedded server fallback would leave
    loaded = result.stderr.rpartition("LOADED")[2].split()
    assert PRODUCTION_COMMANDS[command] in loaded, result.stderr[-2000:]
    dev = [name for name in loaded if _is_dev_only(name)]
    assert not dev, f"callyard {command} loaded {dev}"


# ------------------------------------------------------------------ the graph itself


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Module level, inside a function, under TYPE_CHECKING, relative, and ``from package
    import submodule``; names from outside the tree are left out."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "import os\nimport pkg.b\n",
        "pkg/b.py": "def f():\n    from pkg import c\n",
        "pkg/c.py": "import typing\nif typing.TYPE_CHECKING:\n    from .sub.d import X\n",
        "pkg/sub/__init__.py": "from . import d\n",
        "pkg/sub/d.py": "from ..a import something\nX = 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path, ["pkg"])
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.sub.d"},
        "pkg.sub": {"pkg.sub.d"},
        "pkg.sub.d": {"pkg.a"},
    }
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"})]
    assert import_paths(graph, "pkg.a")["pkg.sub.d"] == ["pkg.a", "pkg.b", "pkg.c", "pkg.sub.d"]


def test_the_graph_follows_the_real_tree(graph: Graph) -> None:
    assert "appserver.api.services" in graph["appserver.api.command"]  # inside a function
    assert "ivr.calls" in import_paths(graph, "appserver.freeswitch.command")
    assert "appserver.devkit.embedded" in graph["appserver.devkit.dev_command"]
