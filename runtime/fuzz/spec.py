"""Runtime fuzz layer: the plain-data description of messages that generated `strategies.py` files lay out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

# Field kinds besides the scalar type names.
ENUM = "enum"
MESSAGE = "message"


@dataclass(frozen=True)
class FieldSpec:
    """One field of a message as the spec declares it (computed by `codegen.emit.fuzz`, laid out as a call).

    `kind` is a scalar type name (`uint32`, `string`, ...), `enum` or `message`; `ref` names the enum or
    message (qualified). `label` is `required`, `optional`, `repeated`, `map`, `oneof` or `implicit` (a proto3
    singular field without presence). For maps, `kind`/`ref` describe the value and `map_key` the key type.
    """

    name: str
    number: int
    kind: str
    label: str
    ref: str = ""
    map_key: str = ""
    oneof: str = ""
    max_len: int | None = None
    min_len: int | None = None
    non_empty: bool = False
    min: int | float | None = None
    max: int | float | None = None
    max_items: int | None = None
    pattern: str | None = None

    @property
    def has_limits(self) -> bool:
        """Whether the spec constrains this field (so an invalid value exists)."""
        return any(
            v not in (None, False)
            for v in (
                self.max_len,
                self.min_len,
                self.non_empty,
                self.min,
                self.max,
                self.max_items,
                self.pattern,
            )
        )

    def limits(self) -> dict[str, Any]:
        """The constraints as the runtime's input stage takes them (`runtime.stages.input.FieldLimits`)."""
        out: dict[str, Any] = {}
        for key in ("max_len", "min_len", "min", "max", "max_items", "pattern"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.non_empty:
            out["non_empty"] = True
        return out


@dataclass(frozen=True)
class MessageSpec:
    """A message: its generated class, the spec's syntax and its fields in number order."""

    cls: type[Message]
    syntax: str
    fields: tuple[FieldSpec, ...]

    @property
    def full_name(self) -> str:
        return str(self.cls.DESCRIPTOR.full_name)

    def field_limits(self) -> dict[str, dict[str, Any]]:
        """Field name -> constraints, for every constrained field."""
        return {f.name: f.limits() for f in self.fields if f.has_limits}


def field_limits(messages: dict[str, MessageSpec]) -> dict[str, dict[str, dict[str, Any]]]:
    """Message full name -> field -> constraints, as `runtime.stages.build_stages(field_limits=...)` takes."""
    return {name: spec.field_limits() for name, spec in sorted(messages.items()) if spec.field_limits()}
