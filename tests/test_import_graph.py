"""No import cycles between the package's modules, counting imports inside functions.

The graph is built from the source with ``ast`` (nothing is imported): one node per module of ``yolo_export``
(``backends/`` at the repo root is ``yolo_export.backends``, as pyproject maps it), one edge per ``import`` /
``from ... import`` anywhere in a module — at module level, inside functions, under ``if TYPE_CHECKING``.

Rule for ``from P import name``: an edge to ``P.name`` where that is a module of the package, else to ``P``
(``name`` is then an attribute of ``P``'s ``__init__``). Executing any submodule runs its parent packages'
``__init__`` first; that is not an edge of the importing module (it holds for every module alike and ends before the
submodule runs), but reading an attribute of a package facade (``from yolo_export import YOLO``) is one.

Imports by name: in a module that calls ``importlib.import_module``, a string constant that names one of the
package's modules (not a package) in full, ``"yolo_export.cli_train"``, is an edge too (the CLI group loads its
command modules so; ``"yolo_export.backends"``, the entry-point group's name, is not a module).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = "yolo_export"


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → source file, for the package and its ``backends`` mapping."""
    mods = {}
    files = [(p, p.relative_to(root).with_suffix("").parts) for p in (root / PKG).rglob("*.py")]
    files += [(p, (PKG,) + p.relative_to(root).with_suffix("").parts) for p in (root / "backends").rglob("*.py")]
    for path, parts in files:
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    """The innermost package module that ``name`` (a module or module.attribute) lives in."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: Path, mods: dict) -> dict[str, int]:
    """The package modules ``module`` imports (anywhere in its source) → the line of the first such import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    by_name = any(isinstance(n, (ast.Attribute, ast.Name)) and "import_module" in (getattr(n, "attr", None),
                                                                                   getattr(n, "id", None))
                  for n in ast.walk(tree))
    for node in ast.walk(tree):
        targets = []
        if by_name and isinstance(node, ast.Constant) and node.value in mods and mods[node.value].name != "__init__.py":
            targets = [node.value]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        for target in targets:
            dep = _resolve(target, mods)
            if dep and dep != module:
                found.setdefault(dep, node.lineno)
    return found


def import_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    mods = package_modules(root)
    return {m: imports_of(m, p, mods) for m, p in sorted(mods.items())}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _shortest_loop(graph, comp: list[str]) -> list[str]:
    """One concrete loop inside a component, for the failure message (BFS back to the start)."""
    start, members = comp[0], set(comp)
    prev, queue = {start: None}, [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def describe(graph, comp: list[str]) -> str:
    loop = _shortest_loop(graph, comp)
    steps = [f"{a} -> {b} (line {graph[a][b]})" for a, b in zip(loop, loop[1:])]
    return f"{len(comp)} modules: {', '.join(comp)}\n  e.g. " + "\n       ".join(steps)


def test_graph_sees_the_package():
    graph = import_graph()
    assert "yolo_export.registry" in graph and "yolo_export.backends.onnx" in graph
    assert "yolo_export.errors" in graph["yolo_export.registry"]  # a module-level edge
    assert "yolo_export.data.transforms" in graph["yolo_export.engine.predictor"]


def test_cycles_are_found(tmp_path):
    """The checker itself: a loop made only of imports inside functions is a cycle."""
    pkg = tmp_path / PKG
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "backends").mkdir()
    (pkg / "__init__.py").write_text("def __getattr__(n):\n    from yolo_export.sub.b import X\n    return X\n")
    (pkg / "a.py").write_text("def f():\n    from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("from yolo_export.backends import c\nX = 1\n")
    (tmp_path / "backends" / "__init__.py").write_text("")
    (tmp_path / "backends" / "c.py").write_text("def g():\n    from ..a import f\n")
    graph = import_graph(tmp_path)
    assert graph["yolo_export.a"] == {"yolo_export.sub.b": 2}
    assert cycles(graph) == [["yolo_export.a", "yolo_export.backends.c", "yolo_export.sub.b"]]
    (tmp_path / "backends" / "c.py").write_text("from yolo_export import YOLO\n")  # the facade: a real edge
    assert cycles(import_graph(tmp_path)) == [["yolo_export", "yolo_export.backends.c", "yolo_export.sub.b"]]
    (tmp_path / "backends" / "c.py").write_text("")
    (pkg / "d.py").write_text("import importlib\nMODS = ('yolo_export.e',)\n"
                              "for m in MODS:\n    importlib.import_module(m)\n")
    (pkg / "e.py").write_text("from yolo_export.d import MODS\n")  # by name, both at module level: a cycle
    assert cycles(import_graph(tmp_path)) == [["yolo_export.d", "yolo_export.e"]]


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles between the package's modules:\n" + "\n".join(describe(graph, c) for c in found)


def test_registry_sits_low():
    """The registry (the Backend contract) reaches only the leaf modules, never the engine, AutoBackend or verify."""
    graph = import_graph()
    seen, todo = set(), ["yolo_export.registry"]
    while todo:
        for dep in graph[todo.pop()]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    allowed = {"errors", "options", "metadata", "utils", "limits", "device", "_version"}
    upward = sorted(m for m in seen if m.split(".", 1)[-1] not in allowed and not m.startswith("yolo_export.data."))
    assert not upward, f"yolo_export.registry reaches {upward}"
