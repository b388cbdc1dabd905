"""Codegen validate layer: TT3xx numbers and ids (field numbers, enum values, reserved ranges, ids)."""

from __future__ import annotations

import itertools

from codegen.checks.names import all_enums, all_messages
from codegen.diagnostics import Diagnostics
from codegen.model import Command, Loc, ProtoService, Spec, loc_at

FIELD_MAX = (1 << 29) - 1
PROTOBUF_RESERVED = (19000, 19999)
INT32 = (-(1 << 31), (1 << 31) - 1)


def _in(ranges: tuple[tuple[int, int], ...], n: int) -> bool:
    return any(lo <= n <= hi for lo, hi in ranges)


def check_field_numbers_unique(spec: Spec, diags: Diagnostics) -> None:
    """TT301: two fields of one message share a number."""
    for m in all_messages(spec):
        seen: dict[int, str] = {}
        for f in m.fields:
            if f.number in seen:
                diags.error(
                    "TT301",
                    f"field '{f.name}' reuses number {f.number} of field '{seen[f.number]}'",
                    loc_at(f, "number"),
                )
            seen.setdefault(f.number, f.name)


def check_field_numbers_reserved(spec: Spec, diags: Diagnostics) -> None:
    """TT302: a field uses a number its message reserves."""
    for m in all_messages(spec):
        for f in m.fields:
            if _in(m.reserved.numbers, f.number):
                diags.error("TT302", f"field '{f.name}' uses reserved number {f.number}", loc_at(f, "number"))


def check_field_number_range(spec: Spec, diags: Diagnostics) -> None:
    """TT303: field number outside 1..2^29-1. TT304: inside protobuf's own 19000..19999."""
    for m in all_messages(spec):
        for f in m.fields:
            if not 1 <= f.number <= FIELD_MAX:
                diags.error(
                    "TT303", f"field number {f.number} is out of range 1..{FIELD_MAX}", loc_at(f, "number")
                )
            elif PROTOBUF_RESERVED[0] <= f.number <= PROTOBUF_RESERVED[1]:
                diags.error(
                    "TT304",
                    f"field number {f.number} is in 19000..19999, reserved by protobuf",
                    loc_at(f, "number"),
                )


def check_enum_values(spec: Spec, diags: Diagnostics) -> None:
    """TT305: enum value outside int32. TT311: uses a reserved number. TT312: enum without values."""
    for e, _ in all_enums(spec):
        if not e.values:
            diags.error("TT312", f"enum '{e.name}' has no values", e.loc)
        for v in e.values:
            if not INT32[0] <= v.value <= INT32[1]:
                diags.error("TT305", f"enum value {v.name} = {v.value} is outside int32", v.loc)
            elif _in(e.reserved.numbers, v.value):
                diags.error("TT311", f"enum value {v.name} uses reserved number {v.value}", v.loc)


def check_reserved_ranges(spec: Spec, diags: Diagnostics) -> None:
    """TT306: reserved ranges overlap each other or leave the valid number range."""
    targets = [(m.name, m.reserved, 1, FIELD_MAX) for m in all_messages(spec)]
    targets += [(e.name, e.reserved, INT32[0], INT32[1]) for e, _ in all_enums(spec)]
    for name, reserved, low, high in targets:
        ranges = sorted(reserved.numbers)
        for lo, hi in ranges:
            if lo < low or hi > high:
                diags.error(
                    "TT306", f"reserved range {lo}-{hi} of '{name}' is outside {low}..{high}", reserved.loc
                )
        for (lo1, hi1), (lo2, hi2) in itertools.pairwise(ranges):
            if lo2 <= hi1:
                diags.error(
                    "TT306", f"reserved ranges {lo1}-{hi1} and {lo2}-{hi2} of '{name}' overlap", reserved.loc
                )


def _plugin_of(spec: Spec) -> dict[str, str | None]:
    return {c.name: mod.plugin for mod in spec.modules for c in mod.commands}


def check_command_ids_unique(spec: Spec, diags: Diagnostics) -> None:
    """TT307: two commands share an id (TT701 instead when a plugin reuses a base id)."""
    plugin = _plugin_of(spec)
    seen: dict[int, Command] = {}
    for c in spec.commands().values():
        first = seen.setdefault(c.id, c)
        if first is c:
            continue
        code = "TT701" if plugin[c.name] and not plugin[first.name] else "TT307"
        who = f"plugin '{plugin[c.name]}' command" if code == "TT701" else "command"
        diags.error(
            code,
            f"{who} '{c.name}' reuses id 0x{c.id:04x} of command '{first.name}'",
            loc_at(c, "id"),
            hint=f"'{first.name}' is declared at {first.loc}",
        )


def check_service_ids_unique(spec: Spec, diags: Diagnostics) -> None:
    """TT308: two protocol services with different names share an id (TT701: a plugin reuses a base id)."""
    seen: dict[int, tuple[ProtoService, str | None]] = {}
    for mod in spec.modules:
        svc = mod.service
        if svc is None:
            continue
        if svc.id not in seen:
            seen[svc.id] = (svc, mod.plugin)
            continue
        first, first_plugin = seen[svc.id]
        if first.name == svc.name and not (mod.plugin and not first_plugin):
            continue  # one service shared by several modules
        code = "TT701" if mod.plugin and not first_plugin else "TT308"
        diags.error(
            code,
            f"service '{svc.name}' reuses id {svc.id} of service '{first.name}'",
            loc_at(svc, "id"),
            hint=f"'{first.name}' is declared at {first.loc}",
        )


def check_service_id_range(spec: Spec, diags: Diagnostics) -> None:
    """TT310: service id does not fit the frame (u16; with the default command range, 0..255)."""
    for svc in spec.services().values():
        limit = 0xFFFF if svc.command_range else 0xFF
        if not 0 <= svc.id <= limit:
            diags.error(
                "TT310", f"service id {svc.id} of '{svc.name}' is outside 0..{limit}", loc_at(svc, "id")
            )
        lo, hi = svc.range
        if svc.command_range and not 0 <= lo <= hi <= 0xFFFF:
            diags.error("TT310", f"command range {lo}..{hi} of '{svc.name}' is not within 0..65535", svc.loc)


def check_command_id_range(spec: Spec, diags: Diagnostics) -> None:
    """TT313: command id outside u16. TT309: command id outside its module's service range."""
    for mod in spec.modules:
        for c in mod.commands:
            loc: Loc = loc_at(c, "id")
            if not 0 <= c.id <= 0xFFFF:
                diags.error("TT313", f"command id {c.id} of '{c.name}' is outside 0..65535", loc)
                continue
            if mod.service is None:
                continue
            lo, hi = mod.service.range
            if not lo <= c.id <= hi:
                diags.error(
                    "TT309",
                    f"command '{c.name}' id 0x{c.id:04x} is outside service {mod.service.name}'s range "
                    f"0x{lo:04x}..0x{hi:04x}",
                    loc,
                )


CHECKS = [
    check_field_numbers_unique,
    check_field_numbers_reserved,
    check_field_number_range,
    check_enum_values,
    check_reserved_ranges,
    check_command_ids_unique,
    check_service_ids_unique,
    check_service_id_range,
    check_command_id_range,
]
