"""Functional-test fixtures: write an inline YAML spec to a folder, generate it, import the stack by path."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from codegen.api import check_spec
from codegen.emit import emit_stack
from codegen.writer import sync_tree

_counter = itertools.count()


def write_spec(folder: Path, files: dict[str, str]) -> Path:
    """Write `files` (relative path -> YAML, dedented) under `folder`; returns the folder."""
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return folder


def import_package(folder: Path, name: str) -> types.ModuleType:
    """Import `folder` as top-level package `name` so its relative imports resolve."""
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Stack:
    """A generated, imported stack: `stack.module("registry")` imports one of its modules."""

    def __init__(self, package: types.ModuleType, root: Path) -> None:
        self.package = package
        self.root = root

    def module(self, name: str) -> types.ModuleType:
        return importlib.import_module(f"{self.package.__name__}.{name}")


@pytest.fixture
def build_stack(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Stack]]:
    """Generate a stack from inline YAML files and import it under a unique package name.

    The YAML must use protobuf packages unique to the test: protobuf's default descriptor pool is per process.
    """
    imported: list[str] = []

    def build(files: dict[str, str]) -> Stack:
        spec_dir = write_spec(tmp_path / f"spec{next(_counter)}", files)
        spec, _ = check_spec(spec_dir)
        out = tmp_path / "out" / spec.name
        sync_tree(emit_stack(spec), out)
        name = f"ttgen_functional_{spec.name}_{next(_counter)}"
        imported.append(name)
        return Stack(import_package(out, name), out)

    yield build
    for name in imported:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
