"""Golden-test fixtures: import a generated stack from a folder as a package of a chosen name."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest

# Expected trees hold generated test modules (fuzz suites): compared as files here, never collected.
collect_ignore_glob = ["*/expected/*", "*/expected/**/*"]


def import_package(folder: Path, name: str) -> types.ModuleType:
    """Import `folder` (holding `__init__.py`) as top-level package `name`; its relative imports then work."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def import_stack() -> Callable[[Path, str], types.ModuleType]:
    return import_package
