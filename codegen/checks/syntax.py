"""Codegen validate layer: TT4xx proto2/proto3 rules, labels, maps, oneofs, defaults and field constraints."""

from __future__ import annotations

import math
import re

from codegen.checks.names import all_enums, all_messages
from codegen.diagnostics import Diagnostics, did_you_mean
from codegen.model import MAP_KEY_TYPES, Field, Spec, loc_at

INT_RANGES: dict[str, tuple[int, int]] = {
    "int32": (-(1 << 31), (1 << 31) - 1),
    "sint32": (-(1 << 31), (1 << 31) - 1),
    "sfixed32": (-(1 << 31), (1 << 31) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "sint64": (-(1 << 63), (1 << 63) - 1),
    "sfixed64": (-(1 << 63), (1 << 63) - 1),
    "uint32": (0, (1 << 32) - 1),
    "fixed32": (0, (1 << 32) - 1),
    "uint64": (0, (1 << 64) - 1),
    "fixed64": (0, (1 << 64) - 1),
}
NUMERIC = frozenset(INT_RANGES) | {"float", "double"}


def check_proto3_rules(spec: Spec, diags: Diagnostics) -> None:
    """TT401: `required` in proto3. TT402: a default in proto3. TT403: proto3 enum not starting at 0."""
    if spec.syntax != "proto3":
        return
    for m in all_messages(spec):
        for f in m.fields:
            if f.label == "required":
                diags.error(
                    "TT401", f"field '{f.name}' is required, which proto3 does not allow", loc_at(f, "label")
                )
            if f.default is not None:
                diags.error(
                    "TT402",
                    f"field '{f.name}' has a default, which proto3 does not allow",
                    loc_at(f, "default"),
                )
    for e, _ in all_enums(spec):
        if e.values and e.values[0].value != 0:
            first = e.values[0]
            diags.error(
                "TT403", f"first value of proto3 enum '{e.name}' must be 0, got {first.value}", first.loc
            )


def check_proto2_labels(spec: Spec, diags: Diagnostics) -> None:
    """TT404: a proto2 field without a label (maps and oneof members take none)."""
    if spec.syntax != "proto2":
        return
    for m in all_messages(spec):
        for f in m.fields:
            if not f.explicit_label and not f.is_map and not f.oneof:
                diags.error(
                    "TT404", f"field '{f.name}' needs a label in proto2", f.loc, hint="add label: optional"
                )


def check_enum_aliases(spec: Spec, diags: Diagnostics) -> None:
    """TT405: two values share a number without allow_alias. TT413: allow_alias set but nothing aliased."""
    for e, _ in all_enums(spec):
        seen: dict[int, str] = {}
        aliased = False
        for v in e.values:
            if v.value in seen:
                aliased = True
                if not e.allow_alias:
                    diags.error(
                        "TT405",
                        f"enum value {v.name} reuses {v.value} of {seen[v.value]} without allow_alias",
                        v.loc,
                    )
            seen.setdefault(v.value, v.name)
        if e.allow_alias and not aliased:
            diags.error(
                "TT413",
                f"enum '{e.name}' sets allow_alias but has no aliased values",
                loc_at(e, "allow_alias"),
            )


def check_maps(spec: Spec, diags: Diagnostics) -> None:
    """TT406: a map key that is not an integral, bool or string scalar. TT411: a map with a label or oneof."""
    for m in all_messages(spec):
        for f in m.fields:
            if not f.is_map:
                continue
            if f.map_key not in MAP_KEY_TYPES:
                diags.error(
                    "TT406",
                    f"map key type '{f.map_key}' of field '{f.name}' is not allowed",
                    loc_at(f, "type"),
                    hint="keys are integral scalars, bool or string",
                )
            if f.explicit_label or f.oneof:
                what = "a label" if f.explicit_label else "a oneof"
                diags.error("TT411", f"map field '{f.name}' cannot have {what}", f.loc)


def check_oneof_members(spec: Spec, diags: Diagnostics) -> None:
    """TT407: a oneof member that is repeated or required."""
    for m in all_messages(spec):
        for f in m.fields:
            if f.oneof and not f.is_map and f.label in ("repeated", "required"):
                diags.error("TT407", f"oneof member '{f.name}' cannot be {f.label}", loc_at(f, "label"))


def _default_problem(f: Field, enum_values: list[str] | None) -> tuple[str, str] | None:
    value = f.default
    if enum_values is not None:
        if not isinstance(value, str) or value not in enum_values:
            return "TT409", f"default '{value}' of '{f.name}' is not a value of {f.type}" + did_you_mean(
                str(value), enum_values
            )
        return None
    if f.type in INT_RANGES:
        lo, hi = INT_RANGES[f.type]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return "TT408", f"default {value!r} of '{f.name}' is not a {f.type}"
    elif f.type in ("float", "double"):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok and not (isinstance(value, str) and value in ("inf", "-inf", "nan")):
            return "TT408", f"default {value!r} of '{f.name}' is not a {f.type}"
        if isinstance(value, float) and math.isnan(value):
            return None
    elif f.type == "bool":
        if not isinstance(value, bool):
            return "TT408", f"default {value!r} of '{f.name}' is not a bool (true or false)"
    elif f.type in ("string", "bytes") and not isinstance(value, str):
        return "TT408", f"default {value!r} of '{f.name}' is not a string (quote it)"
    return None


def check_defaults(spec: Spec, diags: Diagnostics) -> None:
    """TT408: default of the wrong type. TT409: unknown enum value. TT410: default on repeated/message."""
    enums = spec.enums()
    messages = spec.messages()
    for m in all_messages(spec):
        for f in m.fields:
            if f.default is None:
                continue
            loc = loc_at(f, "default")
            if f.label == "repeated" or f.type in messages:
                diags.error(
                    "TT410", f"field '{f.name}' cannot have a default (repeated or message field)", loc
                )
                continue
            enum = enums.get(f.type)
            problem = _default_problem(f, [v.name for v in enum.values] if enum else None)
            if problem and (enum is not None or f.is_scalar):
                diags.error(problem[0], problem[1], loc)


def _json_name(name: str) -> str:
    parts = name.split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def check_json_names(spec: Spec, diags: Diagnostics) -> None:
    """TT412: two proto3 fields whose JSON (lowerCamel) names collide, which protoc rejects."""
    if spec.syntax != "proto3":
        return
    for m in all_messages(spec):
        seen: dict[str, str] = {}
        for f in m.fields:
            key = _json_name(f.name)
            if key in seen and seen[key] != f.name:
                diags.error(
                    "TT412", f"JSON name '{key}' of field '{f.name}' collides with field '{seen[key]}'", f.loc
                )
            seen.setdefault(key, f.name)


def check_constraints(spec: Spec, diags: Diagnostics) -> None:
    """TT414: a constraint that does not fit the field's type or contradicts another. TT415: bad pattern."""
    for m in all_messages(spec):
        for f in m.fields:
            c = f.constraints
            sized = f.type in ("string", "bytes")
            for key in ("max_len", "min_len", "non_empty"):
                if getattr(c, key) not in (None, False) and not sized:
                    diags.error(
                        "TT414", f"{key} applies to string/bytes, not {f.type} '{f.name}'", loc_at(f, key)
                    )
            for key in ("min", "max"):
                if getattr(c, key) is not None and f.type not in NUMERIC:
                    diags.error(
                        "TT414", f"{key} applies to numeric fields, not {f.type} '{f.name}'", loc_at(f, key)
                    )
            if c.max_items is not None and f.label != "repeated":
                diags.error(
                    "TT414",
                    f"max_items applies to repeated or map fields, not '{f.name}'",
                    loc_at(f, "max_items"),
                )
            if c.pattern is not None and f.type != "string":
                diags.error(
                    "TT414", f"pattern applies to string fields, not '{f.name}'", loc_at(f, "pattern")
                )
            for key in ("max_len", "min_len", "max_items"):
                value = getattr(c, key)
                if value is not None and value < 0:
                    diags.error("TT414", f"{key} of '{f.name}' must not be negative", loc_at(f, key))
            if c.min_len is not None and c.max_len is not None and c.min_len > c.max_len:
                diags.error("TT414", f"min_len > max_len on '{f.name}'", loc_at(f, "min_len"))
            if c.min is not None and c.max is not None and c.min > c.max:
                diags.error("TT414", f"min > max on '{f.name}'", loc_at(f, "min"))
            if c.pattern is not None:
                try:
                    re.compile(c.pattern)
                except re.error as exc:
                    diags.error(
                        "TT415",
                        f"pattern of '{f.name}' is not a valid regular expression: {exc}",
                        loc_at(f, "pattern"),
                    )


CHECKS = [
    check_proto3_rules,
    check_proto2_labels,
    check_enum_aliases,
    check_maps,
    check_oneof_members,
    check_defaults,
    check_json_names,
    check_constraints,
]
