"""No import cycle inside edge/: every module's imports (top level and inside functions, since a
lazy import is still a dependency) are read with ``ast`` and the graph between edge modules is
searched for a cycle. A cycle is how image.py and dicom.py used to tangle (issue 26)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "edge"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def edge_modules(root: Path = ROOT) -> dict:
    """{module name: path} of every .py file under edge/."""
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = here.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict) -> set:
    """The edge modules ``name`` imports (``from edge.x import y`` counts edge.x.y when that is a
    module, else edge.x); a package's own __init__ is not counted for its submodules' imports
    of siblings, only what the statement names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, name, is_package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # import edge.serve.app as x -> edge.serve.app
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def find_cycle(graph: dict) -> list | None:
    """One cycle of ``graph`` ({node: set of nodes}) as [a, b, ..., a], or None (iterative DFS)."""
    state, parent = {}, {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(graph[start])))]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                continue
            if state.get(child) == 1:  # back edge: the cycle is child .. node, child
                cycle, n = [child], node
                while n != child:
                    cycle.append(n)
                    n = parent[n]
                return [child, *reversed(cycle[1:]), child]
            if not state.get(child):
                state[child], parent[child] = 1, node
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def import_graph(root: Path = ROOT) -> dict:
    modules = edge_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_edge_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["edge.preprocess"]  # the walk found the modules and their imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in edge/: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle_and_a_lazy_import(tmp_path):
    """The detector itself: a lazy (function-level) import closing a loop through three modules
    is found; the same tree without that import is clean."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from edge.b import thing\n")
    (pkg / "b.py").write_text("from .sub import c\n")
    (pkg / "sub" / "c.py").write_text("def f():\n    from ..a import g\n    return g\n")
    graph = import_graph(tmp_path)
    assert graph["edge.b"] == {"edge.sub.c"} and graph["edge.sub.c"] == {"edge.a"}
    assert find_cycle(graph) == ["edge.a", "edge.b", "edge.sub.c", "edge.a"]
    (pkg / "sub" / "c.py").write_text("def f():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path)) is None


@pytest.mark.parametrize("graph, cyclic", [({"x": {"x"}}, True), ({"x": {"y"}, "y": set()}, False),
                                           ({"x": {"y", "z"}, "y": {"z"}, "z": set()}, False)])
def test_find_cycle_on_small_graphs(graph, cyclic):
    assert (find_cycle(graph) is not None) == cyclic
