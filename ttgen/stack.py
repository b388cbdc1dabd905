"""CLI layer: loads a generated stack (`generated.<name>`) by spec name: its registry, servers and clients.

This is the one place that imports generated code by name; the runtime gets the pieces handed to it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import click

from runtime.registry import Registry


class StackNotFound(click.ClickException):
    """The generated stack of a spec is not importable (not generated yet, or a typo in `spec:`)."""


@dataclass(frozen=True)
class Stack:
    """The parts of a generated stack the CLI wires into the runtime."""

    name: str
    module: str  # e.g. "generated.teamtalk" ("" for the empty stack)
    registry: Registry
    servers: ModuleType | None
    clients: ModuleType | None

    def client_class(self) -> Any:
        """The generated typed client class (the first `*Client` class of `clients`), or None."""
        if self.clients is None:
            return None
        for name in sorted(vars(self.clients)):
            value = getattr(self.clients, name)
            own = isinstance(value, type) and value.__module__ == self.clients.__name__
            if name.endswith("Client") and own:
                return value
        return None


def stack_module_name(name: str) -> str:
    """`teamtalk` -> `generated.teamtalk`; '' stays '' (no stack)."""
    return f"generated.{name}" if name else ""


def make_importable(stack_dir: Path) -> None:
    """Let `generated.<name>` import the stack generated into `stack_dir` (`.../generated/<name>`), e.g. in a
    project made by `ttgen init`, whatever the current directory and without PYTHONPATH."""
    parent = stack_dir.resolve().parent
    if parent.name != "generated" or not (stack_dir / "registry.py").is_file():
        return
    package = sys.modules.get("generated")
    if package is not None:
        path = getattr(package, "__path__", None)
        if path is not None and str(parent) not in list(path):
            path.append(str(parent))  # a package (or namespace) already imported: extend where it looks
        return
    root = str(parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)


def load_stack(name: str, stack_dir: Path | None = None) -> Stack:
    """Import `generated.<name>` and its registry, servers and clients; '' gives an empty stack.
    `stack_dir`, where the spec's stack is generated, is made importable first."""
    if stack_dir is not None:
        make_importable(stack_dir)
    if not name:
        return Stack("", "", Registry("none", "0", []), None, None)
    module_name = stack_module_name(name)
    try:
        registry_mod = importlib.import_module(f"{module_name}.registry")
    except ModuleNotFoundError as exc:
        if exc.name and (
            module_name == exc.name
            or module_name.startswith(exc.name + ".")
            or exc.name == f"{module_name}.registry"
        ):
            where = (
                f"ttgen generate {stack_dir_hint(stack_dir)}"
                if stack_dir is not None
                else (f"ttgen generate spec/{name}")
            )
            raise StackNotFound(
                f"no generated stack '{name}' ({module_name} is not importable); run: {where}"
            ) from None
        raise
    registry = registry_mod.REGISTRY
    if not isinstance(registry, Registry):
        raise StackNotFound(f"{module_name}.registry.REGISTRY is not a runtime.registry.Registry")
    servers = importlib.import_module(f"{module_name}.servers")
    try:
        clients: ModuleType | None = importlib.import_module(f"{module_name}.clients")
    except ModuleNotFoundError:
        clients = None
    return Stack(name, module_name, registry, servers, clients)


def stack_dir_hint(stack_dir: Path) -> str:
    """The spec folder that generates into `stack_dir` (`<root>/generated/<name>` <- `<root>/spec`)."""
    root = stack_dir.parent.parent
    return str(root / "spec") if (root / "spec").is_dir() else str(root)
