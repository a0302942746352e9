"""The import graph of ``src/ecgdx``: no cycles, and no module uses another module's private names.

Every module under ``src/ecgdx`` is parsed with ``ast`` (nothing is imported). An edge A -> B is
recorded for every import of an ``ecgdx`` module B in module A, wherever the import statement is:
module level or inside a function or class (lazy imports count: a cycle hidden in a function is
still a cycle), absolute or relative. ``from ecgdx.x import y`` where ``ecgdx/x/y.py`` (or
``ecgdx/x/y/``) exists imports the submodule ``ecgdx.x.y``; otherwise it imports ``ecgdx.x``.
Imports under ``if TYPE_CHECKING:`` are ignored (they never run).

Only the module named in the statement counts: Python also runs a submodule's parent packages
when it is imported (``import ecgdx.models.registry`` runs ``ecgdx/models/__init__.py`` first),
but that implicit edge is not recorded, so a package's ``__init__`` importing its submodules,
which import a sibling (``ecgdx.models.registry``), is not a cycle. A submodule importing its own
package by name (``from ecgdx.models import register_model``) is.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "ecgdx"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE


@dataclass(frozen=True)
class Use:
    """One use of another module's private name: where it is and what it names."""

    module: str
    line: int
    target: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} uses {self.target}.{self.name}"


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST):
    """Every node of the tree except those under ``if TYPE_CHECKING:`` (its else branch is kept)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` statement reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ours(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def _known(name: str) -> str:
    """The nearest module of the package that ``name`` is or lies in (``ecgdx.x.func`` -> ``ecgdx.x``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _analyse(module: str, source: str | None = None) -> tuple[set[str], list[Use]]:
    """(modules of the package that ``module`` imports, its uses of their private names).

    source: the module's text (default: its file).
    """
    if source is None:
        source = MODULES[module].read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(MODULES[module]))
    imports: set[str] = set()
    uses: list[Use] = []
    aliases: dict[str, str] = {}  # local name bound to one of our modules -> that module
    nodes = list(_nodes(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _ours(alias.name):
                    continue
                imports.add(_known(alias.name))
                if alias.asname:
                    aliases[alias.asname] = _known(alias.name)
                else:
                    aliases[alias.name.split(".")[0]] = PACKAGE
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            if not _ours(source):
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    imports.add(submodule)
                    aliases[alias.asname or alias.name] = submodule
                else:
                    imports.add(_known(source))
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        uses.append(Use(module, node.lineno, _known(source), alias.name))
    for node in nodes:
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
            continue
        target = _dotted(node.value, aliases)
        if target is not None and target != module:
            uses.append(Use(module, node.lineno, target, node.attr))
    imports.discard(module)
    return imports, uses


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """The module of the package that an expression like ``_layout`` or ``ecgdx.page.layout`` names, or None."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    if isinstance(node, ast.Attribute):
        parent = _dotted(node.value, aliases)
        if parent is not None and f"{parent}.{node.attr}" in MODULES:
            return f"{parent}.{node.attr}"
    return None


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports."""
    return {module: _analyse(module)[0] for module in MODULES}


def private_uses() -> list[Use]:
    return sorted((use for module in MODULES for use in _analyse(module)[1]), key=lambda u: (u.module, u.line, u.name))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return " <-> ".join(component) + " (" + "; ".join(edges) + ")"


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert len(MODULES) > 20
    assert "ecgdx.page.preprocessing" in graph["ecgdx.inference"]  # module level
    assert "ecgdx.batch" in graph["ecgdx.predict"]  # inside a function
    assert "ecgdx.models.seed_cnn" in graph["ecgdx.models"]  # from a package import a submodule
    assert "ecgdx.models.registry" in graph["ecgdx.models.seed_cnn"]
    assert "ecgdx.models" not in graph["ecgdx.models.seed_cnn"]  # no implicit parent-package edge


def test_relative_imports_type_checking_and_private_names_are_read():
    source = """
from typing import TYPE_CHECKING
from ..page import layout as _lay
from ..labels import LEADS
from ...ecgdx.page import gate
import ecgdx.signals.measure as m
if TYPE_CHECKING:
    from ecgdx.training import train
else:
    from ecgdx.signals.render import render_page

def f():
    from ecgdx.page.preprocessing import _analyse, decode_image
    return _lay._prepare(1), m._private, ecgdx.signals.digitize._lap, _lay.public, m.__name__
"""
    imports, uses = _analyse("ecgdx.signals.findings", source)
    assert imports == {"ecgdx.page.layout", "ecgdx.labels", "ecgdx.page.gate", "ecgdx.signals.measure",
                       "ecgdx.signals.render", "ecgdx.page.preprocessing"}
    assert sorted((u.target, u.name) for u in uses) == [
        ("ecgdx.page.layout", "_prepare"), ("ecgdx.page.preprocessing", "_analyse"), ("ecgdx.signals.measure", "_private")]


def test_cycles_finds_a_strongly_connected_component():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles in src/ecgdx:\n" + "\n".join(_describe(c, graph) for c in found)


def test_no_module_uses_another_modules_private_names():
    uses = private_uses()
    assert not uses, "private names used across modules:\n" + "\n".join(map(str, uses))
