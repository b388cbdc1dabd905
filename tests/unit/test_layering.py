"""The dependency rule of ARCHITECTURE.md: runtime never imports codegen or ttgen; codegen never imports
runtime or generated. Checked on the import statements of every module, so a violation fails even if the
import is never executed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "runtime": {"codegen", "ttgen"},
    "codegen": {"runtime", "generated", "ttgen"},
    "generated": {"codegen", "ttgen"},
}


def imported_top_levels(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for top, line in imported_top_levels(path):
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {top}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_rule(package: str) -> None:
    assert violations(package) == []


def test_checker_sees_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import os\nfrom codegen.model import Spec\n")
    assert ("codegen", 2) in imported_top_levels(sample)
