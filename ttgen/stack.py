"""CLI layer: loads a generated stack (`generated.<name>`) by spec name: its registry, servers and clients.

This is the one place that imports generated code by name; the runtime gets the pieces handed to it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
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


def load_stack(name: str) -> Stack:
    """Import `generated.<name>` and its registry, servers and clients; '' gives an empty stack."""
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
            raise StackNotFound(
                f"no generated stack '{name}' ({module_name} is not importable); "
                f"run: ttgen generate spec/{name}"
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
