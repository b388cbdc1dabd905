"""Integration: group messaging with members spread over msg servers, and group management rules."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import NAMES, TestCluster, WithCluster

pytestmark = pytest.mark.integration


def test_fifty_member_group_everyone_gets_each_message_once(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        names = NAMES[:50]
        clients = await asyncio.gather(*(c.login(n, i % 2) for i, n in enumerate(names)))
        owner = clients[0]
        rsp = await owner.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=2,
            group_name="fifty",
            group_avatar="",
            member_id_list=[cl.user_id for cl in clients[1:]],
        )
        assert rsp.result_code == 0 and len(rsp.user_id_list) == 50
        gid = rsp.group_id
        senders = [clients[0], clients[17], clients[33]]
        acks = []
        for k, sender in enumerate(senders):
            acks.append(await sender.text(gid, f"group {k}".encode(), group=True))
        ids = [a.msg_id for a in acks]
        assert all(ids) and ids == sorted(ids)
        for cl in clients:
            expect = [a.msg_id for a, s in zip(acks, senders, strict=True) if s is not cl]
            got = await cl.wait_for("CID_MSG_DATA", lambda m: m.to_session_id == gid, count=len(expect))
            assert [m.msg_id for m in got] == expect, cl.name
        # Retransmits and router retries must not have produced a second copy anywhere.
        for cl in clients:
            got = cl.received("CID_MSG_DATA", lambda m: m.to_session_id == gid)
            assert len({m.msg_id for m in got}) == len(got)

    with_cluster(body)


def test_group_rules_members_only_and_join_time(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a, b, outsider = await asyncio.gather(
            c.login("user00", 0), c.login("user01", 1), c.login("user02", 1)
        )
        normal = await a.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=1,
            group_name="n",
            group_avatar="",
            member_id_list=[b.user_id],
        )
        assert normal.result_code != 0  # clients may only create TMP groups
        rsp = await a.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=2,
            group_name="g",
            group_avatar="",
            member_id_list=[b.user_id],
        )
        gid = rsp.group_id
        await b.wait_for("CID_GROUP_CHANGE_MEMBER_NOTIFY", lambda m: m.group_id == gid)
        early = await a.text(gid, b"before the outsider joined", group=True)
        assert early.msg_id
        refused = await outsider.text(gid, b"not a member", group=True)
        assert refused.msg_id == 0
        missing = await outsider.text(987654, b"no such group", group=True)
        assert missing.msg_id == 0
        # Anyone in a TMP group may add; the new member and the current ones are told.
        add = await b.call(
            "CID_GROUP_CHANGE_MEMBER_REQUEST",
            user_id=0,
            change_type=1,
            group_id=gid,
            member_id_list=[outsider.user_id],
        )
        assert add.result_code == 0 and outsider.user_id in add.cur_user_id_list
        await outsider.wait_for("CID_GROUP_CHANGE_MEMBER_NOTIFY", lambda m: m.group_id == gid)
        await a.wait_for("CID_GROUP_CHANGE_MEMBER_NOTIFY", lambda m: outsider.user_id in m.chg_user_id_list)
        late = await a.text(gid, b"after", group=True)
        (got,) = await outsider.wait_for("CID_MSG_DATA", lambda m: m.to_session_id == gid)
        assert got.msg_id == late.msg_id
        page = await outsider.call(
            "CID_MSG_LIST_REQUEST", user_id=0, session_type=2, session_id=gid, msg_id_begin=0, msg_cnt=10
        )
        assert [m.msg_data for m in page.msg_list] == [b"after"]  # nothing from before the join
        # Only the creator may remove members.
        kick = await b.call(
            "CID_GROUP_CHANGE_MEMBER_REQUEST",
            user_id=0,
            change_type=2,
            group_id=gid,
            member_id_list=[a.user_id],
        )
        assert kick.result_code != 0
        info = await a.call(
            "CID_GROUP_INFO_REQUEST", user_id=0, group_version_list=[{"group_id": gid, "version": 0}]
        )
        assert sorted(info.group_info_list[0].group_member_list) == sorted(
            [a.user_id, b.user_id, outsider.user_id]
        )
        denied = await outsider.call(
            "CID_GROUP_INFO_REQUEST", user_id=0, group_version_list=[{"group_id": 424242, "version": 0}]
        )
        assert len(denied.group_info_list) == 0

    with_cluster(body)


def test_a_refused_group_read_is_not_synced_to_other_devices(with_cluster: WithCluster) -> None:
    # Found by the stateful fuzz model: a non-member's read ack was refused by biz yet still sent as a read
    # notify to the reader's other devices.
    async def body(c: TestCluster) -> None:
        from tests.integration.conftest import ANDROID, WINDOWS

        owner = await c.login("user00", 0)
        rsp = await owner.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=2,
            group_name="closed",
            group_avatar="",
            member_id_list=[],
        )
        gid = rsp.group_id
        ack = await owner.text(gid, b"members only", group=True)
        outsider_pc = await c.login("user02", 0, WINDOWS)
        outsider_phone = await c.login("user02", 0, ANDROID)
        await outsider_pc.send(
            "CID_MSG_READ_ACK", user_id=0, session_id=gid, msg_id=ack.msg_id, session_type=2
        )
        # An accepted 1:1 read from the same device afterwards: its notify follows the refused one in order.
        await owner.text(outsider_pc.user_id, b"hi")
        await outsider_pc.send(
            "CID_MSG_READ_ACK", user_id=0, session_id=owner.user_id, msg_id=0, session_type=1
        )
        await outsider_phone.wait_for(
            "CID_MSG_READ_NOTIFY", lambda m: (m.session_type, m.session_id) == (1, owner.user_id)
        )
        assert not outsider_phone.received(
            "CID_MSG_READ_NOTIFY", lambda m: (m.session_type, m.session_id) == (2, gid)
        )

    with_cluster(body)
