"""Integration: delivery guarantees: dedup of retried sends, retransmit until ack, router loss, restarts."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import TestCluster, WithCluster

pytestmark = pytest.mark.integration


def test_resend_after_lost_ack_is_stored_once(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        first = await a.text(b.user_id, b"only once", client_msg_id=777)
        await (
            a.close()
        )  # the ack "was lost": the client reconnects elsewhere and sends the same message again
        a2 = await c.login("user00", 1)
        again = await a2.text(b.user_id, b"only once", client_msg_id=777)
        assert again.msg_id == first.msg_id
        other = await a2.text(b.user_id, b"a new one", client_msg_id=778)
        assert other.msg_id > first.msg_id
        page = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=a2.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_data for m in page.msg_list] == [b"a new one", b"only once"]
        got = await b.wait_for("CID_MSG_DATA", count=2)
        assert [m.msg_id for m in got] == [first.msg_id, other.msg_id]  # the retry is not shown twice

    with_cluster(body)


def test_unacked_delivery_is_retransmitted_until_acked(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        b.auto_ack = False
        ack = await a.text(b.user_id, b"ack me")
        copies = await b.wait_for("CID_MSG_DATA", count=2)  # retransmit_timeout is 0.3 s in tests
        assert {m.msg_id for m in copies} == {ack.msg_id}
        await b.send(
            "CID_MSG_DATA_ACK", user_id=b.user_id, session_id=a.user_id, msg_id=ack.msg_id, session_type=1
        )
        msg_server = c.services("msg")[1]
        for _ in range(200):
            if not any(st.unacked for st in msg_server.states_of(b.user_id)):
                break
            await asyncio.sleep(0.01)
        assert not any(st.unacked for st in msg_server.states_of(b.user_id))
        assert msg_server.metrics.snapshot()["ttgen_msg_retransmits_total"] >= 1

    with_cluster(body)


def test_killing_a_router_mid_conversation_loses_nothing(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        # Four conversations from msg 0 to msg 1; each sender stays under the 20/s per-connection limit.
        senders = await asyncio.gather(*(c.login(f"user0{i}", 0) for i in range(4)))
        receivers = await asyncio.gather(*(c.login(f"user1{i}", 1) for i in range(4)))
        per_sender = 18

        async def talk(a, b) -> list[int]:  # type: ignore[no-untyped-def]
            ids = []
            for i in range(per_sender):
                ids.append((await a.text(b.user_id, f"m{i}".encode())).msg_id)
                await asyncio.sleep(0.01)
            return ids

        tasks = [
            asyncio.get_running_loop().create_task(talk(a, b))
            for a, b in zip(senders, receivers, strict=True)
        ]
        await receivers[0].wait_for("CID_MSG_DATA", count=3)
        await c.stop_instance("router", 0)  # the master of both msg servers
        sent = await asyncio.gather(*tasks)
        for b, ids in zip(receivers, sent, strict=True):
            got = await b.wait_for("CID_MSG_DATA", count=per_sender, timeout=10)
            assert [m.msg_id for m in got] == ids  # all of them, in order, none twice
        # Presence still works through the surviving router.
        stat = await senders[0].call(
            "CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=0, user_id_list=[receivers[0].user_id]
        )
        assert [s.status for s in stat.user_stat_list] == [1]
        assert c.services("msg")[0].routers.m_master_changes.value >= 1


def test_everything_persists_across_a_full_restart(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0)
        b_id = c.users["user01"]
        acks = [await a.text(b_id, f"keep {i}".encode()) for i in range(3)]
        grp = await a.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=2,
            group_name="persist",
            group_avatar="",
            member_id_list=[b_id],
        )
        gack = await a.text(grp.group_id, b"group keep", group=True)
        await c.restart()
        b = await c.login("user01", 1)
        unread = await b.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)
        assert unread.total_cnt == 4
        page = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=a.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_id for m in page.msg_list] == [x.msg_id for x in reversed(acks)]
        gpage = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=2,
            session_id=grp.group_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_id for m in gpage.msg_list] == [gack.msg_id]
        a2 = await c.login("user00", 0)
        nxt = await a2.text(b.user_id, b"after restart")
        assert nxt.msg_id == acks[-1].msg_id + 1  # the id counter is durable
        recent = await b.call(
            "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", user_id=0, latest_update_time=0
        )
        assert {s.session_id for s in recent.contact_session_list} >= {a.user_id, grp.group_id}

    with_cluster(body)


def test_burn_after_reading_and_recall_leave_no_trace(with_cluster: WithCluster, tmp_path) -> None:
    burn_text = b"BURN-6f1c2b-secret"
    recall_text = b"RECALL-93ad7e-oops"

    async def body(c: TestCluster) -> None:
        a = await c.login("user00", 0, ext=True)  # burn and recall pushes go to extension-capable devices
        b = await c.login("user01", 1, ext=True)
        burn_ack = await a.call(
            "CID_EXT_MSG_BURN",
            from_user_id=a.user_id,
            to_session_id=b.user_id,
            msg_id=0,
            create_time=0,
            msg_type=1,
            msg_data=burn_text,
        )
        assert burn_ack.msg_id
        (got,) = await b.wait_for("CID_EXT_MSG_BURN")
        assert got.msg_data == burn_text
        await b.send(
            "CID_EXT_MSG_BURN_READ", user_id=0, session_type=1, session_id=a.user_id, msg_id=burn_ack.msg_id
        )
        for side in (a, b):
            (note,) = await side.wait_for("CID_EXT_MSG_BURNED_NOTIFY")
            assert (note.msg_id, note.reader_id) == (burn_ack.msg_id, b.user_id)
        rec_ack = await a.text(b.user_id, recall_text)
        await b.wait_for("CID_MSG_DATA", lambda m: m.msg_id == rec_ack.msg_id)
        rsp = await a.call(
            "CID_EXT_MSG_RECALL_REQ", user_id=0, session_type=1, session_id=b.user_id, msg_id=rec_ack.msg_id
        )
        assert rsp.result_code == 0
        (note,) = await b.wait_for("CID_EXT_MSG_RECALL_NOTIFY")
        assert note.msg_id == rec_ack.msg_id and note.from_user_id == a.user_id
        not_mine = await b.call(
            "CID_EXT_MSG_RECALL_REQ", user_id=0, session_type=1, session_id=a.user_id, msg_id=burn_ack.msg_id
        )
        assert not_mine.result_code != 0
        page = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=a.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert page.msg_list == []

    with_cluster(body, encrypt=False)  # plaintext at rest, so a byte scan would find any leftover copy

    async def scan() -> None:
        storage = with_cluster.storage(encrypt=False)
        await storage.open()
        try:
            assert await storage.find_bytes(burn_text) == []
            assert await storage.find_bytes(recall_text) == []
        finally:
            await storage.close()

    asyncio.run(scan())
