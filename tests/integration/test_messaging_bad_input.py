"""Integration: bad input gets a clear refusal and changes nothing it should not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from tests.integration.conftest import MAC, PASSWORD, WINDOWS, TestCluster, WithCluster, md5hex

pytestmark = pytest.mark.integration
SQL = "x'); DROP TABLE users; -- \" OR 1=1 /*"


async def try_login(c: TestCluster, name: str, password: str, index: int = 0) -> Any:
    """One login attempt on a fresh connection; returns the IMLoginRes (the server closes on refusal)."""
    core = await c.connect(index)
    try:
        req = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
            user_name=name, password=password, online_status=1, client_type=WINDOWS
        )
        res = await core.call("CID_LOGIN_REQ_USERLOGIN", req)
        if res.result_code != 0:
            await asyncio.wait_for(asyncio.shield(core.link.closed), 5)  # type: ignore[union-attr]
        return res
    finally:
        await core.close()


def test_wrong_password_locks_the_user_not_others(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        for _ in range(6):  # the limit is 5: more than 5 failures lock
            res = await try_login(c, "user00", md5hex("wrong"))
            assert res.result_code == 6 and "bad credentials" in res.result_string
        res = await try_login(c, "user00", md5hex(PASSWORD))  # right password, but locked now
        assert res.result_code == 6 and "this user" in res.result_string
        ok = await try_login(c, "user01", md5hex(PASSWORD))
        assert ok.result_code == 0 and ok.user_info.user_id == c.users["user01"]
        unknown = await try_login(c, "nobody-here", md5hex(PASSWORD))
        assert unknown.result_code == 6 and not unknown.HasField("user_info")

    with_cluster(body)


def test_many_failures_from_one_address_lock_the_address(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        for i in range(13):  # limit 12; one failure each on many accounts: only the per-address counter trips
            res = await try_login(c, f"user{20 + i}", md5hex("guess"), i % 2)
            assert res.result_code == 6
        res = await try_login(c, "user01", md5hex(PASSWORD))
        assert res.result_code == 6 and "address" in res.result_string

    with_cluster(body)


def test_commands_before_login_are_refused(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        b = await c.login("user01", 1)
        core = await c.connect(0)
        msg = REGISTRY.by_name("CID_MSG_DATA").message_class(
            from_user_id=c.users["user00"],
            to_session_id=b.user_id,
            msg_id=1,
            create_time=0,
            msg_type=1,
            msg_data=b"sneaky",
        )
        await core.send("CID_MSG_DATA", msg)
        # The server closes the connection (TeamTalk ran the command as user 0).
        await asyncio.wait_for(asyncio.shield(core.link.closed), 5)  # type: ignore[union-attr]
        assert not core.connected
        await core.close()
        page = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=c.users["user00"],
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert page.msg_list == []
        assert not b.received("CID_MSG_DATA")

    with_cluster(body)


def test_refused_messages_store_nothing(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        assert (await a.text(4_000_000, b"to nobody")).msg_id == 0
        assert (await a.text(4_000_000, b"to no group", group=True)).msg_id == 0
        unread = await b.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)
        assert unread.total_cnt == 0
        # Reading someone else's conversation: empty, not an error that leaks anything.
        c2 = await c.login("user02", 0)
        await a.text(b.user_id, b"private")
        spy = await c2.call(
            "CID_MSG_LIST_REQUEST",
            user_id=a.user_id,
            session_type=1,
            session_id=b.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert spy.msg_list == []

    with_cluster(body)


def test_sql_metacharacters_in_every_string_field(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        res = await try_login(c, SQL, SQL)
        assert res.result_code == 6
        res = await try_login(c, "user00' --", md5hex(PASSWORD))
        assert res.result_code == 6
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        sign = await a.call("CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST", user_id=0, sign_info=SQL)
        assert sign.result_code == 0
        (note,) = await b.wait_for("CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY")
        assert note.sign_info == SQL and note.changed_user_id == a.user_id
        avatar = await a.call("CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST", user_id=0, avatar_url=SQL)
        assert avatar.result_code == 0
        await a.call("CID_LOGIN_REQ_DEVICETOKEN", user_id=0, device_token=SQL, client_type=WINDOWS)
        grp = await a.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=2,
            group_name=SQL,
            group_avatar=SQL,
            member_id_list=[b.user_id],
        )
        assert grp.result_code == 0 and grp.group_name == SQL
        ack = await a.text(b.user_id, SQL.encode())
        (got,) = await b.wait_for("CID_MSG_DATA")
        assert got.msg_data == SQL.encode() and got.msg_id == ack.msg_id
        info = await b.call("CID_BUDDY_LIST_USER_INFO_REQUEST", user_id=0, user_id_list=[a.user_id])
        assert info.user_info_list[0].sign_info == SQL and info.user_info_list[0].avatar_url == SQL
        everyone = await b.call("CID_BUDDY_LIST_ALL_USER_REQUEST", user_id=0, latest_update_time=0)
        assert len(everyone.user_list) == len(c.users)  # the users table is intact
        ginfo = await b.call(
            "CID_GROUP_INFO_REQUEST", user_id=0, group_version_list=[{"group_id": grp.group_id, "version": 0}]
        )
        assert ginfo.group_info_list[0].group_name == SQL

    with_cluster(body)


def _with_bad_utf8(msg: Any, good: bytes) -> bytes:
    """The serialized message with the UTF-8 text `good` replaced by invalid UTF-8 of the same length."""
    body = msg.SerializeToString()
    assert body.count(good) == 1
    return body.replace(good, b"\xff" * len(good))


def test_invalid_utf8_in_a_string_field_is_refused_like_any_bad_body(
    with_cluster: WithCluster, caplog: pytest.LogCaptureFixture
) -> None:
    from runtime.framing import FrameDecoder, encode_frame

    login = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN")

    async def body(c: TestCluster) -> None:
        # Before login: the user name is the first text a stranger can send.
        bad = _with_bad_utf8(
            login.message_class(
                user_name="mallory", password=md5hex(PASSWORD), online_status=1, client_type=WINDOWS
            ),
            b"mallory",
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", c.msg_port(0))
        writer.write(encode_frame(login.service_id, login.command_id, 1, bad))
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)  # the server closes the connection
        assert FrameDecoder().feed(rest) == []
        writer.close()
        # After login: a group name with bad text closes that connection; the user's other one is unharmed.
        victim = await c.login("user00", 0)
        other = await c.login("user00", 0, MAC)
        create = REGISTRY.by_name("CID_GROUP_CREATE_REQUEST")
        req = create.message_class(
            user_id=0, group_type=2, group_name="weekend", group_avatar="", member_id_list=[c.users["user01"]]
        )
        victim.core.link.send_frame(  # type: ignore[union-attr]
            create.service_id, create.command_id, 99, _with_bad_utf8(req, b"weekend")
        )
        await asyncio.wait_for(asyncio.shield(victim.core.link.closed), 5)  # type: ignore[union-attr]
        ack = await other.text(c.users["user01"], b"still here")
        assert ack.msg_id > 0

    with_cluster(body)
    assert "not valid UTF-8" in caplog.text
    assert "Traceback" not in caplog.text and "AttributeError" not in caplog.text
