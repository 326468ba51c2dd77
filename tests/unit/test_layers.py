"""DESIGN.md §5: a module imports only from layers below it; siblings stay apart."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "iacorch"

# layer of each top-level part, bottom = 0; same number = siblings that must not mix
LAYERS = {
    "errors": 0, "project": 0,
    "model": 1,
    "runbook": 2, "process": 2, "policy": 2,
    "drivers": 3, "store": 3,
    "engine": 4, "schedule": 4,
    "report": 5, "console": 5, "drift_report": 5, "triggers": 5, "workers": 5,
    "cli": 6, "server": 6,
}


def part_of(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("iacorch.")}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    relative = path.relative_to(PACKAGE).with_suffix("")
    own = relative.parts[0]
    if own == "__init__":
        return
    own_layer = LAYERS[own]
    for imported in imports(path):
        other = part_of(imported)
        if other in ("__init__", own) or imported == "iacorch":
            continue
        other_layer = LAYERS[other]
        assert other_layer < own_layer, (
            f"{relative} (layer {own}) imports {imported} (layer {other})")


def test_errors_imports_nothing_of_ours():
    assert imports(PACKAGE / "errors.py") == set()
