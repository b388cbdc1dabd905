"""Codegen diff layer: message, oneof, field and field-constraint rules."""

from __future__ import annotations

import math

from codegen.diff.context import DiffContext, pair_elements
from codegen.diff.wiretypes import Kind, classify_type_change, is_packable
from codegen.model import Constraints, Field, Loc, Message, Reserved, Spec


def type_kind(spec: Spec, type_name: str) -> Kind:
    """Whether `type_name` is a scalar, an enum or a message in `spec`."""
    if type_name in spec.enums():
        return "enum"
    if type_name in spec.messages():
        return "message"
    return "scalar"


def reserved_numbers(res: Reserved) -> set[int]:
    """Every number a `Reserved` block covers (ranges expanded; open-ended ranges capped for comparison)."""
    out: set[int] = set()
    for lo, hi in res.numbers:
        out.update(range(lo, min(hi, lo + 100_000) + 1))
    return out


def _covered(number: int, res: Reserved) -> bool:
    return any(lo <= number <= hi for lo, hi in res.numbers)


def _ranges_text(numbers: set[int]) -> str:
    ordered = sorted(numbers)
    parts: list[str] = []
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


def _reserved_loc(msg_loc: Loc, res: Reserved) -> Loc:
    return res.loc if res.loc.line else msg_loc


def check_messages(ctx: DiffContext) -> None:
    """Pair messages across versions (renames followed) and diff each pair field by field."""
    old_msgs = ctx.old.messages()
    new_msgs = ctx.new.messages()
    pairing = pair_elements(
        list(old_msgs.values()),
        list(new_msgs.values()),
        name=lambda m: m.qualname,
        old_name=lambda m: f"{ctx.translate_package(m.package)}.{m.name}",
        hint=lambda m: ctx.resolve_hint(m.renamed_from, m.package, set(old_msgs)),
    )
    ctx.message_pairing = pairing
    for o, n, _ in pairing.pairs:
        ctx.message_map[o.qualname] = n.qualname
    for m in pairing.added:
        ctx.report("MESSAGE_ADDED", m.loc, f"message {m.qualname} added", m.qualname)
    for m in pairing.removed:
        ctx.report("MESSAGE_DELETED", m.loc, f"message {m.qualname} deleted", m.qualname)


def check_message_pairs(ctx: DiffContext) -> None:
    """Diff every paired message (run after enums are paired, so field types can follow enum renames)."""
    for o, n, how in ctx.message_pairing.pairs:
        if how == "hint":
            moved = ctx.translate_package(o.package) != n.package
            rule_id = "MESSAGE_MOVED" if moved else "MESSAGE_RENAMED"
            verb = "moved" if moved else "renamed"
            ctx.report(rule_id, n.loc, f"message {o.qualname} {verb} to {n.qualname}", n.qualname)
        _check_message(ctx, o, n)


def _check_message(ctx: DiffContext, o: Message, n: Message) -> None:
    lost_numbers = reserved_numbers(o.reserved) - reserved_numbers(n.reserved)
    if lost_numbers:
        ctx.report(
            "MESSAGE_RESERVED_NUMBER_REMOVED",
            _reserved_loc(n.loc, n.reserved),
            f"{n.qualname}: reserved field numbers {_ranges_text(lost_numbers)} are no longer reserved",
            n.qualname,
        )
    lost_names = sorted(set(o.reserved.names) - set(n.reserved.names))
    if lost_names:
        ctx.report(
            "MESSAGE_RESERVED_NAME_REMOVED",
            _reserved_loc(n.loc, n.reserved),
            f"{n.qualname}: reserved field names {', '.join(lost_names)} are no longer reserved",
            n.qualname,
        )
    for name in sorted(set(n.oneofs) - set(o.oneofs)):
        ctx.report("ONEOF_ADDED", n.loc, f"{n.qualname}: oneof {name} added", f"{n.qualname}.{name}")
    for name in sorted(set(o.oneofs) - set(n.oneofs)):
        ctx.report("ONEOF_DELETED", n.loc, f"{n.qualname}: oneof {name} deleted", f"{n.qualname}.{name}")

    fields = pair_elements(
        o.fields, n.fields, name=lambda f: f.name, hint=lambda f: f.renamed_from, number=lambda f: f.number
    )
    for of, nf, how in fields.pairs:
        _check_field(ctx, n, of, nf, how)
    for nf in fields.added:
        subject = f"{n.qualname}.{nf.name}"
        if nf.label == "required":
            ctx.report(
                "FIELD_ADDED_REQUIRED",
                nf.loc,
                f"required field {subject} = {nf.number} added: old writers never set it",
                subject,
            )
        else:
            ctx.report("FIELD_ADDED", nf.loc, f"field {subject} = {nf.number} added", subject)
    for of in fields.removed:
        _check_deleted_field(ctx, n, of)


def _check_deleted_field(ctx: DiffContext, n: Message, of: Field) -> None:
    subject = f"{n.qualname}.{of.name}"
    reported = False
    if of.label == "required":
        ctx.report(
            "FIELD_DELETED_REQUIRED",
            of.loc,
            f"required field {subject} = {of.number} deleted: old readers reject messages without it",
            subject,
        )
        reported = True
    if not _covered(of.number, n.reserved):
        ctx.report(
            "FIELD_DELETED_NUMBER_NOT_RESERVED",
            of.loc,
            f"field {subject} = {of.number} deleted without reserving number {of.number}",
            subject,
        )
        reported = True
    if of.name not in n.reserved.names:
        ctx.report(
            "FIELD_DELETED_NAME_NOT_RESERVED",
            of.loc,
            f"field {subject} deleted without reserving name '{of.name}'",
            subject,
        )
        reported = True
    if not reported:
        ctx.report(
            "FIELD_DELETED",
            of.loc,
            f"field {subject} = {of.number} deleted (number and name reserved)",
            subject,
        )


def _check_field(ctx: DiffContext, n: Message, of: Field, nf: Field, how: str) -> None:
    subject = f"{n.qualname}.{nf.name}"
    if of.name != nf.name:
        if how == "hint":
            ctx.report("FIELD_RENAMED", nf.loc, f"field {n.qualname}.{of.name} renamed to {nf.name}", subject)
        else:
            ctx.report(
                "FIELD_NAME_CHANGED",
                nf.loc,
                f"field {n.qualname} #{nf.number} changed name {of.name} -> {nf.name} without renamed_from",
                subject,
            )
    if of.number != nf.number:
        ctx.report(
            "FIELD_NUMBER_CHANGED",
            nf.loc,
            f"field {subject} changed number {of.number} -> {nf.number}",
            subject,
        )
    _check_field_type(ctx, subject, of, nf)
    _check_field_label(ctx, subject, of, nf)
    if of.oneof != nf.oneof:
        ctx.report(
            "FIELD_ONEOF_CHANGED",
            nf.loc,
            f"field {subject} moved from oneof {of.oneof or '(none)'} to {nf.oneof or '(none)'}",
            subject,
        )
    if of.default != nf.default:
        ctx.report(
            "FIELD_DEFAULT_CHANGED",
            nf.loc,
            f"field {subject} default changed {of.default!r} -> {nf.default!r}",
            subject,
        )
    _check_constraints(ctx, subject, nf.loc, of.constraints, nf.constraints)
    if nf.deprecated and not of.deprecated:
        ctx.report("FIELD_DEPRECATED", nf.loc, f"field {subject} deprecated", subject)


def _check_field_type(ctx: DiffContext, subject: str, of: Field, nf: Field) -> None:
    if of.is_map != nf.is_map:
        ctx.report(
            "FIELD_MAP_CHANGED",
            nf.loc,
            f"field {subject} {'is no longer' if of.is_map else 'became'} a map",
            subject,
        )
        return
    if of.map_key is not None and nf.map_key is not None:
        key = classify_type_change(of.map_key, "scalar", nf.map_key, "scalar")
        if key is not None:
            ctx.report(key[0], nf.loc, f"field {subject}: map key {key[1]}", subject)
    old_type = ctx.translate_type(of.type)
    change = classify_type_change(old_type, type_kind(ctx.old, of.type), nf.type, type_kind(ctx.new, nf.type))
    if change is not None:
        ctx.report(change[0], nf.loc, f"field {subject} type changed: {change[1]}", subject)


def _check_field_label(ctx: DiffContext, subject: str, of: Field, nf: Field) -> None:
    """Label changes, judged by what the runtime does: it refuses (closes the connection on) a body that lacks
    a required field, so gaining or losing `required` breaks one direction outright; singular <-> repeated
    still decodes both ways but a singular reader keeps only the last value."""
    if of.label == nf.label or of.is_map or nf.is_map:
        return
    if "repeated" in (of.label, nf.label):
        packed = ctx.new.syntax == "proto3" and is_packable(nf.type, type_kind(ctx.new, nf.type))
        rule_id = "FIELD_CARDINALITY_CHANGED_PACKED" if packed else "FIELD_CARDINALITY_CHANGED"
        ctx.report(rule_id, nf.loc, f"field {subject} changed {of.label} -> {nf.label}", subject)
    if nf.label == "required":
        ctx.report(
            "FIELD_MADE_REQUIRED",
            nf.loc,
            f"field {subject} changed {of.label} -> required: new readers refuse (close the connection on) "
            f"old writers' messages that leave it unset; old readers still take new writers' messages",
            subject,
        )
    elif of.label == "required":
        ctx.report(
            "FIELD_MADE_OPTIONAL",
            nf.loc,
            f"field {subject} changed required -> {nf.label}: old readers refuse (close the connection on) "
            f"new writers' messages that leave it unset; new readers still take old writers' messages",
            subject,
        )


# constraint key -> how to compare: "upper" (lower is tighter), "lower" (higher is tighter), "flag", "pattern"
_CONSTRAINT_KINDS: dict[str, str] = {
    "max_len": "upper",
    "max": "upper",
    "max_items": "upper",
    "min_len": "lower",
    "min": "lower",
    "non_empty": "flag",
    "pattern": "pattern",
}


def _check_constraints(ctx: DiffContext, subject: str, loc: Loc, old: Constraints, new: Constraints) -> None:
    for key, kind in _CONSTRAINT_KINDS.items():
        a, b = getattr(old, key), getattr(new, key)
        if a == b:
            continue
        direction: str | None
        if kind == "upper":
            direction = "tightened" if _num(b, math.inf) < _num(a, math.inf) else "relaxed"
        elif kind == "lower":
            direction = "tightened" if _num(b, -math.inf) > _num(a, -math.inf) else "relaxed"
        elif kind == "flag":
            direction = "tightened" if b else "relaxed"
        else:
            direction = "tightened" if a is None else "relaxed" if b is None else None
        rule_id = {"tightened": "FIELD_CONSTRAINT_TIGHTENED", "relaxed": "FIELD_CONSTRAINT_RELAXED"}.get(
            direction or "", "FIELD_CONSTRAINT_CHANGED"
        )
        ctx.report(
            rule_id, loc, f"field {subject}: {key} {_show(a)} -> {_show(b)}", subject, direction=direction
        )


def _num(value: object, missing: float) -> float:
    return missing if value is None else float(value)  # type: ignore[arg-type]


def _show(value: object) -> str:
    return "(none)" if value is None else repr(value)
