"""The import graph keeps the layers of docs/architecture.md: a module imports only from its own
layer or below, packages import each other without cycles, and every import inside a function
says why it must be lazy."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sitefusion"

#: Bottom to top. A module may import from its own layer or any layer below it.
LAYERS: list[set[str]] = [
    {"errors", "atomic", "csvcells", "memory"},
    {"io", "normalization", "experts", "fusion", "evaluation"},
    {"config"},  # its schema calls the backbone and normalizer registries' own checks
    {"data", "rundir", "training", "federated"},
    {"methods"},
    {"reporting", "scoring", "card", "export"},
    {"workflows", "pacs"},  # pacs: the DICOM node runs the scoring batch
    {"cli"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """``sitefusion.training.loop`` -> ``training``; ``sitefusion.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, lazy)`` for every sitefusion import; ``lazy``: inside a function."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.startswith("sitefusion"):
                    found.append((child.module, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                found.extend(
                    (a.name, child.lineno, in_function)
                    for a in child.names
                    if a.name.startswith("sitefusion")
                )
            visit(child, inner)

    visit(tree, False)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    units = {
        _unit("sitefusion." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts))
        for p in MODULES
    }
    units.discard("__init__")
    assert units <= set(LAYER_OF), f"packages without a layer: {sorted(units - set(LAYER_OF))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_or_sideways(path: Path) -> None:
    me = _unit("sitefusion." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
    if me == "__init__":
        return
    for module, line, _ in _imports(path):
        other = _unit(module)
        assert LAYER_OF[other] <= LAYER_OF[me], (
            f"{path.relative_to(PACKAGE.parent)}:{line}: {me} (layer {LAYER_OF[me]}) imports "
            f"{module} (layer {LAYER_OF[other]}), a higher layer"
        )


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lazy_imports_say_why(path: Path) -> None:
    lines = path.read_text().splitlines()
    for module, line, lazy in _imports(path):
        if not lazy:
            continue
        context = " ".join(lines[max(0, line - 3) : line])
        assert "lazy" in context, (
            f"{path.relative_to(PACKAGE.parent)}:{line}: import of {module} inside a function "
            "without a '# lazy: <reason>' comment"
        )


def test_packages_import_each_other_without_cycles() -> None:
    edges: dict[str, set[str]] = {}
    for path in MODULES:
        me = _unit("sitefusion." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for module, _, _ in _imports(path):
            other = _unit(module)
            if me != "__init__" and other != me:
                edges.setdefault(me, set()).add(other)

    def reaches(node: str, target: str, seen: set[str]) -> bool:
        for nxt in edges.get(node, set()) - seen:
            if nxt == target or reaches(nxt, target, seen | {nxt}):
                return True
        return False

    cyclic = sorted(unit for unit in edges if reaches(unit, unit, set()))
    assert not cyclic, f"packages that import themselves through others: {cyclic}"
