"""Runtime stage layer: builds each command's six lifecycle stage units from its spec policy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.registry import CommandInfo, Registry
from runtime.stages.input import FieldLimits, InputStage
from runtime.stages.pack import PackStage
from runtime.stages.present import PresentStage
from runtime.stages.store import StorePolicy
from runtime.stages.transport import TransportPolicy
from runtime.stages.unpack import UnpackStage

STAGE_NAMES = ("input", "pack", "transport", "unpack", "store", "present")

__all__ = ["STAGE_NAMES", "CommandStages", "build_stages"]


@dataclass(frozen=True)
class CommandStages:
    """The stage units of one command."""

    info: CommandInfo
    input: InputStage
    pack: PackStage
    transport: TransportPolicy
    unpack: UnpackStage
    store: StorePolicy
    present: PresentStage

    @classmethod
    def build(
        cls,
        info: CommandInfo,
        *,
        legacy_key: bytes | None = None,
        field_limits: Mapping[str, FieldLimits | Mapping[str, Any]] | None = None,
        group_bit: int = 0,
    ) -> CommandStages:
        """Build from `info.stages`; unknown policy values raise ValueError naming the command. `group_bit` is
        the bit of the message's `msg_type` that marks a group message (the spec's enum bit `GROUP`)."""
        try:
            pack = PackStage(info.policy("pack"), legacy_key=legacy_key)
            input_stage = InputStage(
                info.policy("input"), info.message_class.DESCRIPTOR, field_limits, group_bit=group_bit
            )
            return cls(
                info=info,
                input=input_stage,
                pack=pack,
                transport=TransportPolicy.from_mapping(info.policy("transport")),
                unpack=UnpackStage(
                    info.policy("unpack"),
                    require_encryption=pack.encrypt,
                    input_max_bytes=input_stage.max_bytes,
                ),
                store=StorePolicy.from_mapping(info.policy("store")),
                present=PresentStage(info.policy("present")),
            )
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{info.name}: bad stage policy: {exc}") from exc


def build_stages(
    registry: Registry,
    *,
    legacy_key: bytes | None = None,
    field_limits: Mapping[str, Mapping[str, FieldLimits | Mapping[str, Any]]] | None = None,
) -> dict[int, CommandStages]:
    """Stage units for every command of `registry`, by command id. `field_limits` maps message full names to
    per-field constraints (the spec's field keys), merged with any `input.fields` table in the policy."""
    limits = field_limits or {}
    return {
        info.command_id: CommandStages.build(
            info,
            legacy_key=legacy_key,
            field_limits=limits.get(info.message_class.DESCRIPTOR.full_name),
            group_bit=_group_bit(registry, info),
        )
        for info in registry
    }


def _group_bit(registry: Registry, info: CommandInfo) -> int:
    """The `GROUP` bit the spec names on the enum of the command message's `msg_type` field (0: none)."""
    field = info.message_class.DESCRIPTOR.fields_by_name.get("msg_type")
    enum = field.enum_type if field is not None else None
    return registry.bits(enum.full_name).get("GROUP", 0) if enum is not None else 0
