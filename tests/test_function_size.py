"""No function or method in the package is longer than 60 lines.

Every module under ``yolo_export/`` and ``backends/`` is parsed with ``ast`` (``tests/`` and ``benchmarks/`` are not
looked at). A function's length is counted strictly: from its ``def`` line (decorators not included) to the last line
of its body, **docstring, comments and blank lines inside it included**. A nested function counts towards the function
that holds it, and is measured on its own as well.

Run as a script (``python tests/test_function_size.py``) it prints every function over the limit, longest first.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("yolo_export", "backends")
MAX_LINES = 60


def _function_lengths():
    """Yield ``(length, "path:line qualified.name")`` for every function in the package's modules."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            rel = path.relative_to(ROOT).as_posix()
            yield from _walk(tree, rel, "")


def _walk(node, rel, prefix):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{child.name}"
            if not isinstance(child, ast.ClassDef):
                yield child.end_lineno - child.lineno + 1, f"{rel}:{child.lineno} {name}"
            yield from _walk(child, rel, name + ".")
        else:
            yield from _walk(child, rel, prefix)


def long_functions():
    return sorted(((n, where) for n, where in _function_lengths() if n > MAX_LINES), reverse=True)


def test_no_function_over_60_lines():
    seen = [where for _, where in _function_lengths()]
    assert len(seen) > 500 and any(w.endswith(" Trainer._setup") for w in seen)  # it really walks the package
    found = long_functions()
    assert not found, f"{len(found)} function(s) over {MAX_LINES} lines (def line to last body line):\n" + "\n".join(
        f"  {n:4d}  {where}" for n, where in found)


def test_the_counter_sees_nested_functions_and_counts_docstrings():
    src = ("class A:\n    def f(self):\n        '''doc\n\n        '''\n"
           "        def g():\n            pass\n        return g\n")
    got = sorted(_walk(ast.parse(src), "m.py", ""))
    assert got == [(2, "m.py:6 A.f.g"), (7, "m.py:2 A.f")]


if __name__ == "__main__":
    for n, where in long_functions():
        print(f"{n:4d}  {where}")
