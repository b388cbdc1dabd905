"""Unit tests of the replies that carry an input-stage refusal (runtime/services/refusals.py)."""

from __future__ import annotations

from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.errors import InputRejected
from runtime.services.links import ResultCode
from runtime.services.refusals import error_reply, result_code_for


class FakeDispatcher:
    registry = REGISTRY


class FakeCtx:
    """What `error_reply` reads of a handler context."""

    def __init__(self, command: str, user_id: int = 42) -> None:
        self.info = REGISTRY.by_name(command)
        self.user_id = user_id
        self.dispatcher = FakeDispatcher()


def test_result_codes_say_why() -> None:
    assert result_code_for(InputRejected("x", rule="max_len")) == ResultCode.VALUE_TOO_LARGE
    assert result_code_for(InputRejected("x", rule="max_items")) == ResultCode.VALUE_TOO_LARGE
    assert result_code_for(InputRejected("x", rule="rate")) == ResultCode.RATE_LIMITED
    assert result_code_for(InputRejected("x", rule="pattern")) == ResultCode.INVALID_ARGUMENT


def test_a_refused_chat_message_is_acked_with_msg_id_zero() -> None:
    cls = REGISTRY.by_name("CID_MSG_DATA").message_class
    group = cls(from_user_id=1, to_session_id=77, msg_id=5, create_time=0, msg_type=0x11, msg_data=b"x")
    ack: Any = error_reply(FakeCtx("CID_MSG_DATA"), group, InputRejected("too long", rule="max_len"))  # type: ignore[arg-type]
    assert type(ack) is REGISTRY.by_name("CID_MSG_DATA_ACK").message_class
    assert (ack.user_id, ack.session_id, ack.msg_id, ack.session_type) == (42, 77, 0, 2)


def test_a_reply_with_a_result_code_carries_it_and_echoes_what_was_refused() -> None:
    req = REGISTRY.by_name("CID_GROUP_CHANGE_MEMBER_REQUEST").message_class(
        user_id=9, change_type=1, group_id=31, member_id_list=[1, 2]
    )
    rsp: Any = error_reply(
        FakeCtx("CID_GROUP_CHANGE_MEMBER_REQUEST"),
        req,
        InputRejected("too many", rule="max_items"),  # type: ignore[arg-type]
    )
    assert rsp.result_code == ResultCode.VALUE_TOO_LARGE
    assert rsp.user_id == 42, "the caller's id, never the one the client put in the request"
    assert rsp.group_id == 31 and list(rsp.cur_user_id_list) == []


def test_login_refusal_uses_teamtalks_result_type_and_says_why() -> None:
    req = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
        user_name="u" * 100, password="p", online_status=1, client_type=1
    )
    rsp: Any = error_reply(FakeCtx("CID_LOGIN_REQ_USERLOGIN", 0), req, InputRejected("long", rule="max_len"))  # type: ignore[arg-type]
    assert rsp.result_code == 6  # REFUSE_REASON_DB_VALIDATE_FAILED: the enum has no "too long"
    assert "max_len" in rsp.result_string and rsp.server_time > 0


@pytest.mark.parametrize("info", [i for i in REGISTRY if i.reply], ids=lambda i: i.name)
def test_every_reply_is_complete_or_absent(info: Any) -> None:
    """Whatever the command, the refusal is no reply or a reply that serializes (required fields set)."""
    request = info.message_class()
    reply = error_reply(FakeCtx(info.name), request, InputRejected("bad", rule="max_len"))  # type: ignore[arg-type]
    if reply is not None:
        assert type(reply) is REGISTRY.by_name(info.reply).message_class
        assert reply.IsInitialized()
        reply.SerializeToString()
