"""Codegen load layer: the spec-wide table of declared type names and protobuf-style name resolution."""

from __future__ import annotations

from collections.abc import Iterable

from codegen.model import SCALAR_TYPES


class TypeTable:
    """Qualified names of every declared message and enum, collected before any module is built.

    Resolution follows protobuf: a name is tried in the innermost scope first (the message, its outer
    messages, the package, the package's parents), then as a fully qualified
    name. A leading '.' means fully qualified.
    """

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}  # qualname -> "message" | "enum"

    def add(self, qualname: str, kind: str) -> None:
        self.kinds.setdefault(qualname, kind)

    def resolve(self, name: str, scope: str) -> str | None:
        """The qualified name `name` refers to from inside `scope` (e.g. 'IM.Login.IMLoginReq'), or None."""
        if name in SCALAR_TYPES:
            return name
        if name.startswith("."):
            target = name[1:]
            return target if target in self.kinds else None
        for prefix in _scopes(scope):
            candidate = f"{prefix}.{name}" if prefix else name
            if candidate in self.kinds:
                return candidate
        return None

    def kind(self, qualname: str) -> str | None:
        return self.kinds.get(qualname)

    def names(self) -> Iterable[str]:
        return self.kinds.keys()


def _scopes(scope: str) -> list[str]:
    parts = scope.split(".") if scope else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]
