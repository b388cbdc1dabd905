"""Unit: string fields holding invalid UTF-8 are named by the unpack stage's text check, at any depth."""

from __future__ import annotations

from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.errors import BodyError
from runtime.stages.unpack import check_text, text_check

USERS = REGISTRY.by_name("CID_BUDDY_LIST_USER_INFO_RESPONSE").message_class


def _corrupt(body: bytes, good: bytes) -> bytes:
    """`body` with the text `good` (found once) replaced by invalid UTF-8 of the same length."""
    assert body.count(good) == 1
    return body.replace(good, b"\xfe" * len(good))


def _users(*nicks: str) -> Any:
    msg = USERS(user_id=1)
    for i, nick in enumerate(nicks):
        msg.user_info_list.add(
            user_id=i,
            user_gender=1,
            user_nick_name=nick,
            avatar_url="",
            department_id=1,
            email="",
            user_real_name="",
            user_tel="",
            user_domain=f"d{i}",
            status=0,
        )
    return msg


def test_a_type_without_text_needs_no_check() -> None:
    assert text_check(REGISTRY.by_name("CID_MSG_DATA").message_class.DESCRIPTOR) is None


def test_valid_text_passes() -> None:
    check_text(USERS.FromString(_users("ann", "bob").SerializeToString()))


def test_bad_text_in_the_second_item_of_a_nested_list_is_named() -> None:
    parsed = USERS.FromString(_corrupt(_users("ann", "bob").SerializeToString(), b"bob"))
    with pytest.raises(BodyError, match=r"user_info_list\.user_nick_name is not valid UTF-8"):
        check_text(parsed)


def test_a_top_level_field_is_named() -> None:
    cls = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class
    check = text_check(cls.DESCRIPTOR)
    assert check is not None
    msg = cls(user_name="zed", password="p", online_status=1, client_type=1)
    assert check(cls.FromString(msg.SerializeToString())) is None
    assert check(cls.FromString(_corrupt(msg.SerializeToString(), b"zed"))) == "user_name"
