"""The house's layering, read from the imports of every module under mesh/ (none is run).

- A module never imports another package's private module (``mesh.proxy._main`` from
  ``mesh.cli``): packages re-export what others use from their ``__init__``.
- Packages depend on each other in one direction only: no cycle between two top-level
  packages (``mesh.proxy`` and ``mesh.controller`` once imported each other).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "mesh"


def _imports() -> list[tuple[str, str, str]]:
    """(importing file, its top-level package, an imported mesh module or name)."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
        package = module.split(".")[1] if "." in module else ""
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            found += [(str(path.relative_to(ROOT.parent)), package, name) for name in names if name.startswith("mesh.")]
    return found


def _package(name: str) -> str:
    return name.split(".")[1]


def test_no_module_imports_another_packages_private_module() -> None:
    private = sorted(
        {
            f"{where} imports {name}"
            for where, package, name in _imports()
            if _package(name) != package
            and any(part.startswith("_") and not part.startswith("__") for part in name.split(".")[2:])
        }
    )
    assert not private, "\n".join(private)


def test_packages_depend_in_one_direction() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for _, package, name in _imports():
        if package and _package(name) != package:
            edges[package].add(_package(name))
    cycles = sorted(f"{a} <-> {b}" for a in edges for b in edges[a] if a < b and a in edges.get(b, ()))
    assert not cycles, cycles
    # Longer cycles too: a depth-first walk that meets a package on its own path.
    def visit(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                return path[path.index(nxt) :] + [nxt]
            found = visit(nxt, path + [nxt])
            if found:
                return found
        return None

    for start in sorted(edges):
        cycle = visit(start, [start])
        assert cycle is None, " -> ".join(cycle or [])
