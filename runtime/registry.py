"""Runtime registry layer: the table from command ids to message classes, directions and stage policies.

A generated stack (e.g. `generated.teamtalk.registry`) builds one `Registry` from its spec; the runtime finds
handlers and stage policies through it and never imports a generated module by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
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


class Registry:
    """Immutable look-up tables over a protocol's commands."""

    def __init__(
        self,
        spec_name: str,
        spec_version: str,
        commands: Iterable[CommandInfo],
        services: Mapping[str, int] | None = None,
        presence: Mapping[str, Any] | None = None,
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
