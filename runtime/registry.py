"""Runtime registry layer: the table from command ids to message classes, directions and stage policies.

A generated stack (e.g. `generated.teamtalk.registry`) builds one `Registry` from its spec; the runtime finds
handlers and stage policies through it and never imports a generated module by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any

from google.protobuf.message import Message


@dataclass(frozen=True)
class CommandInfo:
    """One command of a protocol: the unit the frame header's (service id, command id) names."""

    name: str  # e.g. CID_MSG_DATA
    service_id: int
    command_id: int
    message_class: type[Message]
    direction: str  # c2s | s2c | both | s2s
    reply: str | None = None  # name of the answering command
    hosted_by: tuple[str, ...] = ()  # cluster service names
    stages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # stage -> policy mapping
    doc: str = ""

    @property
    def from_client(self) -> bool:
        return self.direction in ("c2s", "both")

    @property
    def to_client(self) -> bool:
        return self.direction in ("s2c", "both")

    def policy(self, stage: str) -> Mapping[str, Any]:
        return self.stages.get(stage, {})


class UnknownCommand(LookupError):
    """No command with that id (or name) in the registry."""


_NO_BITS: Mapping[str, int] = MappingProxyType({})


class Registry:
    """Immutable look-up tables over a protocol's commands."""

    def __init__(
        self,
        spec_name: str,
        spec_version: str,
        commands: Iterable[CommandInfo],
        services: Mapping[str, int] | None = None,
        presence: Mapping[str, Any] | None = None,
        enums: Any = None,
        command_ids: type[IntEnum] | None = None,
        enum_bits: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        self.spec_name = spec_name
        self.spec_version = spec_version
        self._by_id: dict[int, CommandInfo] = {}
        self._by_name: dict[str, CommandInfo] = {}
        self._by_message: dict[type[Message], list[CommandInfo]] = {}
        for info in commands:
            if info.command_id in self._by_id:
                raise ValueError(f"duplicate command id 0x{info.command_id:04x}")
            self._by_id[info.command_id] = info
            self._by_name[info.name] = info
            self._by_message.setdefault(info.message_class, []).append(info)
        self.services: dict[str, int] = dict(services or {})
        # The spec's presence policy as emitted (see runtime.services.presence.PresencePolicy), or None.
        self.presence: Mapping[str, Any] | None = MappingProxyType(dict(presence)) if presence else None
        self._id_view: Mapping[int, CommandInfo] = MappingProxyType(self._by_id)
        # The generated `Enums` namespace (one IntEnum per spec enum, `<Enum>Bits` for named bits) and the
        # `CommandId` enum of the stack; None for a registry built by hand. Services read them typed through
        # runtime.services.protocol.
        self.enums: Any = enums
        self.command_ids: type[IntEnum] | None = command_ids
        # Named enum bits by the enum's full name, as given; `bits` also caches look-ups by simple name.
        self.enum_bits: Mapping[str, Mapping[str, int]] = MappingProxyType(
            {name: MappingProxyType(dict(bits)) for name, bits in (enum_bits or {}).items()}
        )
        self._bits: dict[str, Mapping[str, int]] = dict(self.enum_bits)

    def derive(
        self, commands: Iterable[CommandInfo] | None = None, *, presence: Mapping[str, Any] | None = None
    ) -> Registry:
        """A copy with other commands and/or another presence policy (the rest, enums included, kept)."""
        return Registry(
            self.spec_name,
            self.spec_version,
            list(self) if commands is None else commands,
            self.services,
            presence=self.presence if presence is None else presence,
            enums=self.enums,
            command_ids=self.command_ids,
            enum_bits=self.enum_bits,
        )

    def bits(self, enum: str) -> Mapping[str, int]:
        """The named bits of an enum's values (name -> mask), by the enum's full name
        (`IM.BaseDefine.MsgType`) or, when only one enum has that simple name, by it (`MsgType`); empty if it
        names none."""
        found = self._bits.get(enum)
        if found is not None:
            return found
        matches = [bits for name, bits in self.enum_bits.items() if name.rsplit(".", 1)[-1] == enum]
        found = matches[0] if len(matches) == 1 else _NO_BITS
        self._bits[enum] = found
        return found

    def __iter__(self) -> Iterator[CommandInfo]:
        return iter(sorted(self._by_id.values(), key=lambda c: c.command_id))

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._by_id

    def by_id(self, command_id: int) -> CommandInfo:
        try:
            return self._by_id[command_id]
        except KeyError:
            raise UnknownCommand(f"unknown command id 0x{command_id:04x}") from None

    def get(self, command_id: int) -> CommandInfo | None:
        return self._by_id.get(command_id)

    @property
    def id_table(self) -> Mapping[int, CommandInfo]:
        """Read-only view: command id -> command (for hot paths that look up every frame)."""
        return self._id_view

    def by_name(self, name: str) -> CommandInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownCommand(f"unknown command {name!r}") from None

    def for_message(self, message_class: type[Message]) -> list[CommandInfo]:
        return list(self._by_message.get(message_class, ()))

    def hosted_by(self, service: str) -> list[CommandInfo]:
        return [c for c in self if service in c.hosted_by]
