"""Codegen diff layer: enum and enum value rules."""

from __future__ import annotations

from codegen.diff.check_messages import reserved_numbers
from codegen.diff.context import DiffContext, pair_elements
from codegen.model import Enum, EnumValue


def check_enums(ctx: DiffContext) -> None:
    """Pair enums across versions (renames followed), then diff each pair value by value."""
    old_enums = ctx.old.enums()
    new_enums = ctx.new.enums()
    pairing = pair_elements(
        list(old_enums.values()),
        list(new_enums.values()),
        name=lambda e: e.qualname,
        old_name=lambda e: f"{ctx.translate_package(e.package)}.{e.name}",
        hint=lambda e: ctx.resolve_hint(e.renamed_from, e.package, set(old_enums)),
    )
    ctx.enum_pairing = pairing
    for o, n, _ in pairing.pairs:
        ctx.enum_map[o.qualname] = n.qualname
    for e in pairing.added:
        ctx.report("ENUM_ADDED", e.loc, f"enum {e.qualname} added", e.qualname)
    for e in pairing.removed:
        ctx.report("ENUM_DELETED", e.loc, f"enum {e.qualname} deleted", e.qualname)
    for o, n, how in pairing.pairs:
        if how == "hint":
            moved = ctx.translate_package(o.package) != n.package
            rule_id = "ENUM_MOVED" if moved else "ENUM_RENAMED"
            ctx.report(
                rule_id,
                n.loc,
                f"enum {o.qualname} {'moved' if moved else 'renamed'} to {n.qualname}",
                n.qualname,
            )
        _check_enum(ctx, o, n)


def _check_enum(ctx: DiffContext, o: Enum, n: Enum) -> None:
    res_loc = n.reserved.loc if n.reserved.loc.line else n.loc
    lost_numbers = sorted(reserved_numbers(o.reserved) - reserved_numbers(n.reserved))
    if lost_numbers:
        ctx.report(
            "ENUM_RESERVED_NUMBER_REMOVED",
            res_loc,
            f"{n.qualname}: reserved numbers {', '.join(map(str, lost_numbers))} are no longer reserved",
            n.qualname,
        )
    lost_names = sorted(set(o.reserved.names) - set(n.reserved.names))
    if lost_names:
        ctx.report(
            "ENUM_RESERVED_NAME_REMOVED",
            res_loc,
            f"{n.qualname}: reserved names {', '.join(lost_names)} are no longer reserved",
            n.qualname,
        )
    if o.allow_alias and not n.allow_alias:
        ctx.report("ENUM_ALIAS_REMOVED", n.loc, f"{n.qualname}: allow_alias switched off", n.qualname)
    if o.values and n.values and o.values[0].value != n.values[0].value:
        ctx.report(
            "ENUM_DEFAULT_CHANGED",
            n.values[0].loc,
            f"{n.qualname}: first value (the proto2 default) changed {o.values[0].name} = "
            f"{o.values[0].value} -> {n.values[0].name} = {n.values[0].value}",
            n.qualname,
        )

    values = pair_elements(
        o.values, n.values, name=lambda v: v.name, hint=lambda v: v.renamed_from, number=lambda v: v.value
    )
    for ov, nv, how in values.pairs:
        _check_value(ctx, n, ov, nv, how)
    for nv in values.added:
        ctx.report(
            "ENUM_VALUE_ADDED",
            nv.loc,
            f"enum value {n.qualname}.{nv.name} = {nv.value} added",
            f"{n.qualname}.{nv.name}",
        )
    for ov in values.removed:
        _check_deleted_value(ctx, n, ov)


def _check_value(ctx: DiffContext, n: Enum, ov: EnumValue, nv: EnumValue, how: str) -> None:
    subject = f"{n.qualname}.{nv.name}"
    if ov.name != nv.name:
        if how == "hint":
            ctx.report(
                "ENUM_VALUE_RENAMED",
                nv.loc,
                f"enum value {n.qualname}.{ov.name} renamed to {nv.name}",
                subject,
            )
        else:
            ctx.report(
                "ENUM_VALUE_NAME_CHANGED",
                nv.loc,
                f"enum value {n.qualname} = {nv.value} changed name {ov.name} -> {nv.name} without "
                f"renamed_from",
                subject,
            )
    if ov.value != nv.value:
        ctx.report(
            "ENUM_VALUE_NUMBER_CHANGED",
            nv.loc,
            f"enum value {subject} changed number {ov.value} -> {nv.value}",
            subject,
        )


def _check_deleted_value(ctx: DiffContext, n: Enum, ov: EnumValue) -> None:
    subject = f"{n.qualname}.{ov.name}"
    number_kept = any(v.value == ov.value for v in n.values)  # an alias still carries the number
    number_reserved = number_kept or any(lo <= ov.value <= hi for lo, hi in n.reserved.numbers)
    name_reserved = ov.name in n.reserved.names
    if not number_reserved:
        ctx.report(
            "ENUM_VALUE_DELETED_NUMBER_NOT_RESERVED",
            ov.loc,
            f"enum value {subject} = {ov.value} deleted without reserving number {ov.value}",
            subject,
        )
    if not name_reserved:
        ctx.report(
            "ENUM_VALUE_DELETED_NAME_NOT_RESERVED",
            ov.loc,
            f"enum value {subject} deleted without reserving name '{ov.name}'",
            subject,
        )
    if number_reserved and name_reserved:
        ctx.report(
            "ENUM_VALUE_DELETED", ov.loc, f"enum value {subject} = {ov.value} deleted (reserved)", subject
        )
