"""Integration: the spec's field constraints (max_len, non_empty, max_items, ...) are enforced by the cluster.

The generated registry carries each command's constraints as its `input.fields` table, so every server's input
stage checks them. A violating message is refused (`on_invalid: reject`, the default): it is answered with the
command's reply carrying the error (IMMsgData: an IMMsgDataAck with msg id 0; others: result_code
VALUE_TOO_LARGE or INVALID_ARGUMENT), the connection stays open, the refusal is logged with the rule name, and
no stored data changes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.services.links import ResultCode
from tests.integration.conftest import Client, TestCluster, WithCluster

pytestmark = pytest.mark.integration

MSG_MAX_LEN = 4096  # IMMsgData.msg_data: max_len 4096, non_empty (spec/teamtalk/message.yaml)
SIGN_MAX_LEN = 512  # IMChangeSignInfoReq.sign_info: max_len 512 (spec/teamtalk/buddy.yaml)
GROUP_NAME_MAX_LEN = 256  # IMGroupCreateReq.group_name: max_len 256 (spec/teamtalk/group.yaml)


async def settle(client: Client) -> None:
    """A round trip through msg and biz on `client`'s connection: frames sent before it were dispatched (one
    connection is dispatched in order) and the writes they caused have landed."""
    await client.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)


def chat(sender: Client, to: int, data: bytes) -> Any:
    return REGISTRY.by_name("CID_MSG_DATA").message_class(
        from_user_id=sender.user_id, to_session_id=to, msg_id=0, create_time=0, msg_type=0x01, msg_data=data
    )


def refusals(caplog: pytest.LogCaptureFixture, command: str) -> list[str]:
    """Messages of the dispatcher's refusals of `command`."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "runtime.dispatch" and f"{command} rejected" in r.getMessage()
    ]


def test_registry_carries_the_constraints() -> None:
    fields = REGISTRY.by_name("CID_MSG_DATA").policy("input")["fields"]
    assert fields["msg_data"] == {"max_len": MSG_MAX_LEN, "non_empty": True}
    login = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").policy("input")["fields"]
    assert login["user_name"] == {"max_len": 64, "non_empty": True}


def test_constraint_violating_messages_are_answered_with_an_error_and_store_nothing(
    with_cluster: WithCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="runtime.dispatch")

    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        await settle(a)
        await settle(b)
        before = await c.digest()

        # Over-long and empty msg_data: acked with msg id 0 (TeamTalk's "not stored").
        for data in (b"x" * (MSG_MAX_LEN + 1), b""):
            ack = await a.core.call("CID_MSG_DATA", chat(a, b.user_id, data), timeout=5)
            assert ack.msg_id == 0 and ack.session_id == b.user_id and ack.user_id == a.user_id
        # An over-long signature and group name: the reply carries VALUE_TOO_LARGE.
        sign = REGISTRY.by_name("CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST").message_class
        res = await a.core.call(
            "CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST",
            sign(user_id=0, sign_info="s" * (SIGN_MAX_LEN + 1)),
            timeout=5,
        )
        assert res.result_code == ResultCode.VALUE_TOO_LARGE and res.user_id == a.user_id
        group = REGISTRY.by_name("CID_GROUP_CREATE_REQUEST").message_class
        res = await a.core.call(
            "CID_GROUP_CREATE_REQUEST",
            group(
                user_id=0,
                group_type=2,
                group_name="g" * (GROUP_NAME_MAX_LEN + 1),
                group_avatar="",
                member_id_list=[b.user_id],
            ),
            timeout=5,
        )
        assert res.result_code == ResultCode.VALUE_TOO_LARGE and res.group_id == 0
        await settle(a)
        await settle(b)
        assert a.core.connected, "a field constraint refuses the message; it does not close the connection"
        assert await c.digest() == before, "refused input changed the stored data"
        assert not b.received("CID_MSG_DATA")
        assert not b.received("CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY")

        rules = "\n".join(refusals(caplog, "CID_MSG_DATA"))
        assert f"{MSG_MAX_LEN + 1} bytes, more than {MSG_MAX_LEN}" in rules and "(max_len)" in rules
        assert "msg_data: must not be empty" in rules and "(non_empty)" in rules
        assert "(max_len)" in "\n".join(refusals(caplog, "CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST"))
        assert "(max_len)" in "\n".join(refusals(caplog, "CID_GROUP_CREATE_REQUEST"))

        # Messages at the limits still go through, on the same connection.
        ack = await a.text(b.user_id, b"y" * MSG_MAX_LEN)
        assert ack.msg_id > 0
        (got,) = await b.wait_for("CID_MSG_DATA")
        assert got.msg_data == b"y" * MSG_MAX_LEN and got.msg_id == ack.msg_id
        res = await a.call("CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST", user_id=0, sign_info="s" * SIGN_MAX_LEN)
        assert res.result_code == 0
        page = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=a.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_data for m in page.msg_list] == [b"y" * MSG_MAX_LEN]

    with_cluster(body)


def test_an_over_long_login_name_is_refused_with_a_reason(
    with_cluster: WithCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="runtime.dispatch")

    async def body(c: TestCluster) -> None:
        core = await c.connect(0)
        try:
            req = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
                user_name="u" * 65, password="p" * 32, online_status=1, client_type=1
            )
            res = await core.call("CID_LOGIN_REQ_USERLOGIN", req, timeout=5)
            # TeamTalk's login ResultType has no "too long": the refusal says validation failed, and why.
            assert res.result_code == 6 and "max_len" in res.result_string
            assert not res.HasField("user_info")
            assert "(max_len)" in "\n".join(refusals(caplog, "CID_LOGIN_REQ_USERLOGIN"))
        finally:
            await core.close()
        # The refused attempt did not count as a login failure against anyone: a valid login still works.
        ok = await c.login("user00", 0)
        assert ok.user_id == c.users["user00"]

    with_cluster(body)
