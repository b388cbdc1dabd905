"""Unit tests of the input stage: sizes, required fields, field limits, token buckets, reject rules."""

from __future__ import annotations

import pytest
import rt_testproto as tp

from runtime.errors import InputRejected
from runtime.stages.input import InputStage, TokenBucket
from runtime.stages.policy import parse_duration, parse_rate

MSG = tp.MsgData.DESCRIPTOR


def msg(**kw: object) -> object:
    base = {"from_user_id": 1, "to_session_id": 2, "msg_id": 0, "msg_type": 1, "msg_data": b"hi"}
    base.update(kw)
    return tp.MsgData(**base)


def test_policy_values() -> None:
    assert parse_rate("20/s") == 20 and parse_rate("60/m per connection") == 1
    assert parse_duration("250ms") == 0.25 and parse_duration("30d") == 30 * 86400
    with pytest.raises(ValueError):
        parse_rate("fast")
    with pytest.raises(ValueError):
        InputStage({"reject": ["nonsense"]}, MSG)
    with pytest.raises(ValueError):
        InputStage({"on_rate_exceeded": "explode"}, MSG)
    with pytest.raises(ValueError):
        InputStage({"fields": {"nope": {"max_len": 1}}}, MSG)


def test_max_bytes_closes() -> None:
    stage = InputStage({"max_bytes": 10}, MSG)
    stage.check_size(10)
    with pytest.raises(InputRejected) as info:
        stage.check_size(11)
    assert info.value.action == "close" and info.value.close_connection


def test_required_fields() -> None:
    stage = InputStage({}, MSG)
    with pytest.raises(InputRejected) as info:
        stage.check_required(tp.MsgData(from_user_id=1))
    assert info.value.rule == "required" and "msg_data" in str(info.value)


def test_self_message_and_empty_body_are_refused_as_on_invalid_says() -> None:
    stage = InputStage({"reject": ["self_message", "empty_body"]}, MSG, group_bit=0x10)
    stage.check_message(msg(), 1)
    with pytest.raises(InputRejected) as info:
        stage.check_message(msg(to_session_id=1), 1)
    assert (info.value.rule, info.value.action) == ("self_message", "reject")  # answered, never dropped
    dropping = InputStage({"reject": ["self_message"], "on_invalid": "drop"}, MSG)
    with pytest.raises(InputRejected) as info:
        dropping.check_message(msg(to_session_id=1), 1)
    assert info.value.action == "drop"
    stage.check_message(msg(to_session_id=1, msg_type=0x11), 1)  # a group whose id equals the user's is fine
    with pytest.raises(InputRejected, match="empty"):
        stage.check_message(msg(msg_data=b""), 1)


def test_field_limits_table() -> None:
    limits = {"msg_data": {"max_len": 4, "non_empty": True}, "msg_type": {"min": 1, "max": 0x12}}
    stage = InputStage({"fields": limits}, MSG)
    stage.check_message(msg(msg_data=b"abcd"), 9)
    for bad, rule in [
        ({"msg_data": b"abcde"}, "max_len"),
        ({"msg_data": b""}, "non_empty"),
        ({"msg_type": 0x13}, "max"),
        ({"msg_type": 0}, "min"),
    ]:
        with pytest.raises(InputRejected) as info:
            stage.check_message(msg(**bad), 9)
        assert info.value.rule == rule
    echo = InputStage({}, tp.Echo.DESCRIPTOR, {"items": {"max_items": 2}, "text": {"pattern": "[a-z]+"}})
    echo.check_message(tp.Echo(items=[1, 2], text="ok"), 1)
    with pytest.raises(InputRejected, match="items"):
        echo.check_message(tp.Echo(items=[1, 2, 3]), 1)
    with pytest.raises(InputRejected, match="match"):
        echo.check_message(tp.Echo(text="NO"), 1)


def test_token_bucket_refills_with_time() -> None:
    bucket = TokenBucket(rate=20, burst=20, now=0.0)
    assert sum(bucket.take(0.0) for _ in range(25)) == 20
    assert not bucket.take(0.01)
    assert bucket.take(0.05)  # one token per 50 ms


@pytest.mark.parametrize("action", ["drop", "reject", "close"])
def test_rate_limit_per_connection(action: str) -> None:
    stage = InputStage({"rate": "20/s", "on_rate_exceeded": action}, MSG)
    a: dict[int, TokenBucket] = {}
    b: dict[int, TokenBucket] = {}
    for _ in range(20):
        stage.check_rate(a, 0x0301, 5.0)
    with pytest.raises(InputRejected) as info:
        stage.check_rate(a, 0x0301, 5.0)
    assert info.value.action == action and info.value.rule == "rate"
    stage.check_rate(b, 0x0301, 5.0)  # another connection has its own bucket
    stage.check_rate(a, 0x0301, 6.0)  # a second later there are tokens again


def test_absent_optional_field_is_not_constrained() -> None:
    # A constraint applies to a value that is present: an unset optional field passes, an empty one does not.
    stage = InputStage({}, tp.Echo.DESCRIPTOR, {"text": {"min_len": 2, "pattern": "[a-z]+"}})
    stage.check_message(tp.Echo(items=[1]), 1)
    with pytest.raises(InputRejected) as info:
        stage.check_message(tp.Echo(text=""), 1)
    assert info.value.rule == "min_len"
