"""The pure classifiers behind the rules: wire type families, stage policy directions, element pairing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from codegen.diff.check_stages import _MISSING, classify_stage_change, duration_seconds, rate_per_second
from codegen.diff.context import pair_elements
from codegen.diff.wiretypes import classify_type_change


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        ("int32", "int64", "FIELD_TYPE_WIDENED"),
        ("uint32", "uint64", "FIELD_TYPE_WIDENED"),
        ("sint32", "sint64", "FIELD_TYPE_WIDENED"),
        ("fixed32", "fixed64", "FIELD_TYPE_INCOMPATIBLE"),  # different wire types (I32 vs I64)
        ("int64", "int32", "FIELD_TYPE_NARROWED"),
        ("uint32", "int64", "FIELD_TYPE_WIDENED"),
        ("int32", "uint32", "FIELD_TYPE_SIGN_CHANGED"),
        ("fixed32", "sfixed32", "FIELD_TYPE_SIGN_CHANGED"),
        ("fixed64", "sfixed64", "FIELD_TYPE_SIGN_CHANGED"),
        ("fixed32", "uint32", "FIELD_TYPE_INCOMPATIBLE"),
        ("sint32", "int32", "FIELD_TYPE_INCOMPATIBLE"),  # zigzag vs plain varint
        ("float", "fixed32", "FIELD_TYPE_INCOMPATIBLE"),
        ("float", "double", "FIELD_TYPE_INCOMPATIBLE"),
        ("string", "bytes", "FIELD_TYPE_STRING_BYTES"),
        ("bytes", "string", "FIELD_TYPE_STRING_BYTES"),
        ("bool", "uint32", "FIELD_TYPE_BOOL_CHANGED"),
        ("bool", "sint32", "FIELD_TYPE_INCOMPATIBLE"),
        ("string", "int32", "FIELD_TYPE_INCOMPATIBLE"),
    ],
)
def test_scalar_type_changes(old: str, new: str, rule: str) -> None:
    result = classify_type_change(old, "scalar", new, "scalar")
    assert result is not None and result[0] == rule


def test_references() -> None:
    assert classify_type_change("A.M", "message", "A.M", "message") is None
    assert classify_type_change("A.M", "message", "A.N", "message")[0] == "FIELD_MESSAGE_TYPE_CHANGED"  # type: ignore[index]
    assert classify_type_change("A.E", "enum", "A.F", "enum")[0] == "FIELD_ENUM_TYPE_CHANGED"  # type: ignore[index]
    assert classify_type_change("A.E", "enum", "int32", "scalar")[0] == "FIELD_TYPE_ENUM_INT_CHANGED"  # type: ignore[index]
    assert classify_type_change("A.E", "enum", "sint32", "scalar")[0] == "FIELD_TYPE_INCOMPATIBLE"  # type: ignore[index]
    assert classify_type_change("A.M", "message", "bytes", "scalar")[0] == "FIELD_TYPE_MESSAGE_BYTES"  # type: ignore[index]
    assert classify_type_change("A.M", "message", "int32", "scalar")[0] == "FIELD_TYPE_INCOMPATIBLE"  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "old", "new", "expected"),
    [
        ("input.rate", "20/s", "5/s", ("STAGE_TIGHTENED", "tightened")),
        ("input.rate", "20/s", "1200/m", None),  # the same rate
        ("input.require_auth", True, _MISSING, None),  # the default, spelled out
        ("input.rate", _MISSING, "5/s", ("STAGE_TIGHTENED", "tightened")),
        ("input.rate", "5/s", _MISSING, ("STAGE_RELAXED", "relaxed")),
        ("input.max_bytes", 4096, 8192, ("STAGE_RELAXED", "relaxed")),
        ("input.reject", ["self_message"], ["self_message", "empty_body"], ("STAGE_TIGHTENED", "tightened")),
        ("input.on_rate_exceeded", "drop", "close", ("STAGE_TIGHTENED", "tightened")),
        ("input.on_invalid", _MISSING, "reject", None),  # the default, spelled out
        ("input.on_invalid", _MISSING, "drop", ("STAGE_RELAXED", "relaxed")),  # errors no longer answered
        ("input.on_invalid", "drop", "close", ("STAGE_TIGHTENED", "tightened")),
        ("input.require_auth", _MISSING, False, ("STAGE_AUTH_RELAXED", "relaxed")),  # default is true
        ("input.require_auth", False, _MISSING, ("STAGE_TIGHTENED", "tightened")),
        ("transport.ack", "CID_X_ACK", _MISSING, ("STAGE_ACK_REMOVED", "relaxed")),
        ("transport.ack", _MISSING, "CID_X_ACK", ("STAGE_TIGHTENED", "tightened")),
        ("transport.ack", "CID_X_ACK", "CID_Y_ACK", ("STAGE_CHANGED", None)),
        ("transport.max_attempts", 5, 2, ("STAGE_DELIVERY_WEAKENED", "relaxed")),
        ("transport.max_attempts", 2, 5, ("STAGE_TIGHTENED", "tightened")),
        ("transport.ephemeral", _MISSING, True, ("STAGE_PERSIST_DISABLED", "relaxed")),
        ("transport.dedup", "per_sender", "none", ("STAGE_RELAXED", "relaxed")),
        ("transport.dedup_window", "10m", "1h", ("STAGE_TIGHTENED", "tightened")),
        ("pack.encrypt", _MISSING, "session_aead", ("STAGE_TIGHTENED", "tightened")),
        ("pack.encrypt", "session_aead", _MISSING, ("STAGE_ENCRYPTION_REMOVED", "relaxed")),
        ("pack.compress", "none", "zlib", ("STAGE_CHANGED", None)),
        ("unpack.replay", "reject", "allow", ("STAGE_VERIFY_RELAXED", "relaxed")),
        ("store.retention", "forever", "30d", ("STAGE_RETENTION_SHORTENED", "relaxed")),
        ("store.retention", "30d", _MISSING, ("STAGE_CHANGED", None)),  # missing means forever: longer
        ("store.at_rest", "plain", "encrypted", ("STAGE_TIGHTENED", "tightened")),
        ("present.redact", ["a", "b"], ["a"], ("STAGE_RELAXED", "relaxed")),
        ("present.placeholder", "[voice]", "[audio]", ("STAGE_CHANGED", None)),
    ],
)
def test_stage_directions(
    key: str, old: object, new: object, expected: tuple[str, str | None] | None
) -> None:
    assert classify_stage_change(key, old, new) == expected


def test_units() -> None:
    assert rate_per_second("60/m") == 1.0
    assert rate_per_second("nonsense") is None
    assert duration_seconds("30d") == 30 * 86400
    assert duration_seconds("forever") == math.inf
    assert duration_seconds("500ms") == 0.5


@dataclass(frozen=True)
class Item:
    name: str
    number: int
    hint: str | None = None


def test_pairing_prefers_hint_then_name_then_number() -> None:
    old = [Item("a", 1), Item("b", 2), Item("c", 3), Item("d", 4)]
    new = [Item("b", 5), Item("x", 1, hint="a"), Item("y", 3), Item("z", 9)]
    p = pair_elements(old, new, name=lambda i: i.name, hint=lambda i: i.hint, number=lambda i: i.number)
    assert [(o.name, n.name, how) for o, n, how in p.pairs] == [
        ("a", "x", "hint"),
        ("b", "b", "name"),
        ("c", "y", "number"),
    ]
    assert [i.name for i in p.removed] == ["d"]
    assert [i.name for i in p.added] == ["z"]
