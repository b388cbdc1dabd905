"""Runtime fuzz layer: the parts of a generated stack the fuzz suites use (registry, servers, strategies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from runtime.framing import DEFAULT_MAX_FRAME_BYTES
from runtime.fuzz.spec import MessageSpec
from runtime.fuzz.strategies import StrategyRegistry
from runtime.registry import CommandInfo, Registry
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums


@dataclass(frozen=True)
class FuzzStack:
    """A generated stack as modules handed in (the runtime never imports a stack by name)."""

    registry: Registry
    servers: ModuleType | None
    strategies: ModuleType
    frame: dict[str, Any] = field(default_factory=dict)  # the spec's `frame:` (registry module's FRAME)

    @classmethod
    def from_modules(
        cls, registry: ModuleType, servers: ModuleType | None, strategies: ModuleType
    ) -> FuzzStack:
        """From the stack's `registry`, `servers` and `strategies` modules."""
        return cls(registry.REGISTRY, servers, strategies, dict(getattr(registry, "FRAME", {}) or {}))

    @property
    def max_frame_bytes(self) -> int:
        """The spec's frame-length limit (the runtime's default when the spec sets none)."""
        return int(self.frame.get("max_frame_bytes") or DEFAULT_MAX_FRAME_BYTES)

    @property
    def enums(self) -> type[Enums]:
        """The spec's enums and named bits (the chat suites speak TeamTalk's: runtime.services.protocol)."""
        return enums_of(self.registry)

    @property
    def name(self) -> str:
        return self.registry.spec_name

    @property
    def messages(self) -> dict[str, MessageSpec]:
        table: dict[str, MessageSpec] = self.strategies.MESSAGES
        return table

    @property
    def strats(self) -> StrategyRegistry:
        reg: StrategyRegistry = self.strategies.STRATEGIES
        return reg

    @property
    def field_limits(self) -> dict[str, dict[str, dict[str, Any]]]:
        limits: dict[str, dict[str, dict[str, Any]]] = self.strategies.FIELD_LIMITS
        return limits

    def command(self, name: str) -> CommandInfo:
        return self.registry.by_name(name)

    def message_of(self, name: str) -> str:
        """Qualified message name of a command."""
        return str(self.command(name).message_class.DESCRIPTOR.full_name)

    def login_commands(self) -> list[CommandInfo]:
        """Client commands allowed before authentication that expect a reply (login candidates)."""
        return [
            c
            for c in self.registry
            if c.from_client and c.hosted_by and c.reply and not c.policy("input").get("require_auth", True)
        ]
