"""Strategies from the bundled spec: exact type ranges, declared enums, constraints, invalid variants."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generated.teamtalk import strategies as tt
from runtime.fuzz.spec import FieldSpec
from runtime.fuzz.strategies import (
    INT_RANGES,
    SCALARS,
    encode_varint,
    minimal_message,
    utf8_prefix,
    violations,
)
from runtime.stages.input import missing_fields

REG = tt.STRATEGIES


@pytest.mark.parametrize("kind", sorted(INT_RANGES))
def test_integer_strategies_stay_in_the_protobuf_range_and_reach_both_ends(kind: str) -> None:
    lo, hi = INT_RANGES[kind]
    seen: set[int] = set()

    @settings(max_examples=200, derandomize=True, database=None)
    @given(SCALARS[kind](FieldSpec("x", 1, kind, "required")))
    def check(value: int) -> None:
        assert lo <= value <= hi
        seen.add(value)

    check()
    assert {lo, hi} <= seen, f"{kind}: bounds never drawn"


def test_float_strategy_bounds_are_float32_exact() -> None:
    f = FieldSpec("x", 1, "float", "required", min=0.1, max=0.7)

    @settings(max_examples=50, derandomize=True, database=None)
    @given(SCALARS["float"](f))
    def check(value: float) -> None:
        assert 0.1 <= value <= 0.7

    check()


@settings(max_examples=60, derandomize=True, database=None)
@given(REG.valid("IM.Message.IMMsgData"))
def test_valid_messages_honour_the_spec(msg: Any) -> None:
    assert msg.IsInitialized()
    assert 1 <= len(msg.msg_data) <= 4096  # max_len 4096, non_empty
    assert msg.msg_type in tt.ENUMS["IM.BaseDefine.MsgType"]


@settings(max_examples=60, derandomize=True, database=None)
@given(REG.invalid("IM.Message.IMMsgData"))
def test_invalid_messages_break_exactly_the_constraint(msg: Any) -> None:
    assert msg.IsInitialized()
    assert len(msg.msg_data) == 0 or len(msg.msg_data) > 4096


@settings(max_examples=40, derandomize=True, database=None)
@given(REG.unknown_enum("IM.Message.IMMsgData"))
def test_unknown_enum_values_land_in_unknown_fields(data: bytes) -> None:
    cls = tt.MESSAGES["IM.Message.IMMsgData"].cls
    msg = cls.FromString(data)
    assert msg.msg_type in tt.ENUMS["IM.BaseDefine.MsgType"]  # proto2 closed enum: the bad value is not taken
    assert (
        msg.SerializeToString()
        != cls(**{f.name: getattr(msg, f.name) for f, _ in msg.ListFields()}).SerializeToString()
    )


@settings(max_examples=40, derandomize=True, database=None)
@given(REG.missing_required("IM.Login.IMLoginReq"))
def test_missing_required_bodies_lack_a_required_field(data: bytes) -> None:
    msg = tt.MESSAGES["IM.Login.IMLoginReq"].cls.FromString(data)
    assert not msg.IsInitialized() and missing_fields(msg)


@settings(max_examples=30, derandomize=True, database=None)
@given(REG.valid("IM.Group.IMGroupCreateReq"))
def test_repeated_fields_respect_their_item_cap(msg: Any) -> None:
    assert len(msg.member_id_list) <= 4


@pytest.mark.parametrize("name", sorted(tt.MESSAGES))
def test_minimal_messages_are_valid(name: str) -> None:
    assert minimal_message(REG, name).IsInitialized()


def test_every_message_has_a_named_strategy() -> None:
    for name in tt.MESSAGES:
        assert isinstance(getattr(tt, name.replace(".", "_")), st.SearchStrategy)


def test_violations_exist_only_for_constrained_fields() -> None:
    assert violations(FieldSpec("x", 1, "uint32", "required")) is None
    assert violations(FieldSpec("x", 1, "uint32", "required", max=10)) is not None
    assert (
        violations(FieldSpec("x", 1, "uint32", "required", max=2**32 - 1)) is None
    )  # nothing above the type


def test_helpers() -> None:
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint(-1) == b"\xff" * 9 + b"\x01"
    assert utf8_prefix("aé", 2) == "a"
