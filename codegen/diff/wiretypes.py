"""Codegen diff layer: classify a field type change by protobuf wire encoding (which rule it triggers)."""

from __future__ import annotations

from typing import Literal

Kind = Literal["scalar", "enum", "message"]

# Encoding families: types within one family share wire type *and* value encoding.
_VARINT = {"int32": (32, True), "int64": (64, True), "uint32": (32, False), "uint64": (64, False)}
_ZIGZAG = {"sint32": (32, True), "sint64": (64, True)}
_FIXED32 = {"fixed32": (32, False), "sfixed32": (32, True)}
_FIXED64 = {"fixed64": (64, False), "sfixed64": (64, True)}
_INT_FAMILIES = (_VARINT, _ZIGZAG, _FIXED32, _FIXED64)
_LEN_TEXT = {"string", "bytes"}
_NUMERIC = set(_VARINT) | set(_ZIGZAG) | set(_FIXED32) | set(_FIXED64) | {"float", "double", "bool"}


def is_packable(type_name: str, kind: Kind) -> bool:
    """Numeric scalars and enums: encoded packed when repeated in proto3."""
    return kind == "enum" or (kind == "scalar" and type_name in _NUMERIC)


def classify_type_change(old: str, old_kind: Kind, new: str, new_kind: Kind) -> tuple[str, str] | None:
    """The rule id and a short reason for a type change, or None when nothing changed.

    `old` must already be translated into the new spec's names, so a renamed message is not a change.
    """
    if old == new:
        return None
    if old_kind == "message" and new_kind == "message":
        return "FIELD_MESSAGE_TYPE_CHANGED", f"message {old} -> {new}"
    if old_kind == "enum" and new_kind == "enum":
        return "FIELD_ENUM_TYPE_CHANGED", f"enum {old} -> {new}"
    if "message" in (old_kind, new_kind):
        other = new if old_kind == "message" else old
        if other in _LEN_TEXT:
            return "FIELD_TYPE_MESSAGE_BYTES", f"{old} -> {new} (same length-delimited encoding)"
        return "FIELD_TYPE_INCOMPATIBLE", f"{old} -> {new} (different wire types)"
    if "enum" in (old_kind, new_kind):
        other = new if old_kind == "enum" else old
        if other in _VARINT:
            return "FIELD_TYPE_ENUM_INT_CHANGED", f"{old} -> {new} (both varints)"
        return "FIELD_TYPE_INCOMPATIBLE", f"{old} -> {new} (different encodings)"
    return _classify_scalars(old, new)


def _classify_scalars(old: str, new: str) -> tuple[str, str]:
    if {old, new} == _LEN_TEXT:
        return "FIELD_TYPE_STRING_BYTES", f"{old} -> {new}"
    if "bool" in (old, new):
        other = new if old == "bool" else old
        if other in _VARINT:
            return "FIELD_TYPE_BOOL_CHANGED", f"{old} -> {new} (both varints)"
        return "FIELD_TYPE_INCOMPATIBLE", f"{old} -> {new} (different encodings)"
    for family in _INT_FAMILIES:
        if old in family and new in family:
            old_bits, old_signed = family[old]
            new_bits, new_signed = family[new]
            sign = "" if old_signed == new_signed else ", signedness changes"
            if new_bits > old_bits:
                return (
                    "FIELD_TYPE_WIDENED",
                    f"{old} -> {new}: old readers truncate values above {old_bits} bits{sign}",
                )
            if new_bits < old_bits:
                return (
                    "FIELD_TYPE_NARROWED",
                    f"{old} -> {new}: new readers truncate values above {new_bits} bits{sign}",
                )
            return "FIELD_TYPE_SIGN_CHANGED", f"{old} -> {new}: negative values change meaning"
    return "FIELD_TYPE_INCOMPATIBLE", f"{old} -> {new} (different wire encodings)"
