"""No import circles among the `apps.*` modules (issue 13).

A circle between two modules works only as long as one side imports lazily (inside a function) or late, and
breaks the day someone moves that import to the top; it also means neither module can be understood or tested
alone. So every import counts here: module level, inside functions and methods, inside try/except. Only
`if TYPE_CHECKING:` blocks are skipped: they never run (apps.engine.textbook uses one for a type hint).

The graph is read with `ast` from the files, nothing is imported. `from apps.a import b` is an edge to the module
`apps.a.b` when that is a module or package, else to `apps.a` (a name inside it). An edge to a package also
counts as an edge to its `__init__`, which is where a package's own imports live.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, package: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import statement that can run, at any depth."""
    found: list[tuple[str, list[str], int]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = package.split(".") if is_package else package.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, [a.name for a in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, top: str = "apps") -> dict[str, dict[str, int]]:
    """{module: {imported module: line}} for the modules of the package `top` under `root`."""
    files = {_module_name(p, root): p for p in (root / top).rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for module, names, line in _imports(tree, name, path.name == "__init__.py"):
            if module != top and not module.startswith(top + "."):
                continue
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in files] or [module]
            if len(targets) < len(names):  # some names are attributes of `module` itself
                targets.append(module)
            for target in targets:
                if target in files and target != name:
                    edges.setdefault(target, line)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted, as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def connect(v: str) -> None:  # recursion depth is bounded by the number of modules (a few hundred)
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(components)


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    edges = [f"  {a} -> {b} (line {line})" for a in component for b, line in sorted(graph[a].items())
             if b in members]
    return "circle among " + ", ".join(component) + ":\n" + "\n".join(edges)


def test_no_import_circle_among_apps_modules():
    graph = import_graph(ROOT)
    assert len(graph) > 100  # the walk found the apps (a wrong root would pass vacuously)
    cycles = import_cycles(graph)
    assert cycles == [], "\n".join(_describe(c, graph) for c in cycles)


@pytest.mark.parametrize("layout, expected", [
    # a function-level import closes the circle just as well as a module-level one
    ({"apps/a/x.py": "from apps.b import y\n", "apps/b/y.py": "def f():\n    from apps.a.x import g\n"},
     [["apps.a.x", "apps.b.y"]]),
    # `from package import module`, a relative import, and an import inside try/except
    ({"apps/a/x.py": "from apps.b import y\n", "apps/b/y.py": "from . import z\n",
      "apps/b/z.py": "try:\n    import apps.a.x\nexcept ImportError:\n    pass\n"},
     [["apps.a.x", "apps.b.y", "apps.b.z"]]),
    # through a package's __init__
    ({"apps/a/__init__.py": "from apps.a.x import f\n", "apps/a/x.py": "from apps.b.y import g\n",
      "apps/b/y.py": "from apps.a import CONSTANT\n"},
     [["apps.a", "apps.a.x", "apps.b.y"]]),
    # one way only, and a TYPE_CHECKING-only import back: no circle
    ({"apps/a/x.py": "from apps.b import y\n",
      "apps/b/y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from apps.a.x import T\n"},
     []),
])
def test_the_walk_finds_circles(tmp_path, layout, expected):
    for rel, text in layout.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in {p.parent for p in tmp_path.rglob("*.py")} | {tmp_path / "apps"}:
        (package / "__init__.py").touch()
    assert import_cycles(import_graph(tmp_path)) == expected
