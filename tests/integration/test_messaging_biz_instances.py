"""Integration: msg servers spread their biz requests over every biz instance (stable per user) and fail
over to a live one when an instance is lost; two biz instances on one SQLite database allocate msg ids
correctly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.integration.conftest import LostAfterCommit, TestCluster, WithCluster, wait_biz_links

pytestmark = pytest.mark.integration


def count_stores(c: TestCluster) -> list[list[int]]:
    """Per biz instance (by number), a counter of the stores it is asked for from now on: through its one
    store path, which link requests and direct calls from a msg server of its shard both take."""
    counters: list[list[int]] = []
    for biz in sorted(c.services("biz"), key=lambda s: s.ctx.instance):
        count = [0]
        store = biz.store

        def counted(*args: Any, _store: Any = store, _count: list[int] = count) -> None:
            _count[0] += 1
            _store(*args)

        biz.store = counted
        counters.append(count)
    return counters


def test_two_biz_instances_share_the_load_and_fail_over(with_cluster: WithCluster) -> None:
    async def body(c: TestCluster) -> None:
        msg = c.services("msg")[0]
        await wait_biz_links(msg, 2)
        assert len(msg.biz) == 2 and all(d.link is not None for d in msg.biz)
        clients = [await c.login(f"user{i:02d}", 0) for i in range(8)]
        # Users hash onto both instances; a user always gets the same one.
        picks = {cl.user_id: msg.biz_link(cl.user_id) for cl in clients}
        assert len(set(map(id, picks.values()))) == 2
        assert all(msg.biz_link(u) is link for u, link in picks.items())
        # Two users on different instances write to the same pair at once: ids stay unique and ordered.
        a = clients[0]
        b = next(cl for cl in clients if picks[cl.user_id] is not picks[a.user_id])
        stores = count_stores(c)
        sends = [a.text(b.user_id, f"a{i}".encode()) for i in range(20)]
        sends += [b.text(a.user_id, f"b{i}".encode()) for i in range(20)]
        acks = await asyncio.gather(*sends)
        ids = [ack.msg_id for ack in acks]
        assert 0 not in ids and len(set(ids)) == 40
        assert ids[:20] == sorted(ids[:20]) and ids[20:] == sorted(ids[20:])  # per-sender order kept
        assert all(count[0] > 0 for count in stores), stores  # both instances stored messages
        history = await a.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=b.user_id,
            msg_id_begin=0,
            msg_cnt=40,
        )
        assert sorted(m.msg_id for m in history.msg_list) == sorted(ids)
        # Lose the instance `a` uses: its requests move to the other one and messaging goes on.
        lost = next(i for i, d in enumerate(msg.biz) if d.link is picks[a.user_id])
        await c.stop_instance("biz", lost)
        for _ in range(300):
            if msg.biz[lost].link is None:
                break
            await asyncio.sleep(0.01)
        ack = await a.text(b.user_id, b"after the loss")
        assert ack.msg_id > max(ids)
        got = await b.wait_for("CID_MSG_DATA", lambda m: m.msg_id == ack.msg_id)
        assert got[0].msg_data == b"after the loss"

    with_cluster(body, biz={"instances": 2})


def test_a_biz_lost_between_its_commit_and_its_answer_stores_the_message_once(
    with_cluster: WithCluster,
) -> None:
    """The biz storing a message dies after its commit, before its answer (its memory of tokens lost with it).
    msg sends the store again, flagged as a resend, to the other biz, which has never seen the token: it finds
    the committed message by the token stored with it and answers with its id. Stored once, acked with the
    committed id, delivered once."""

    async def body(c: TestCluster) -> None:
        msg = c.services("msg")[0]
        await wait_biz_links(msg, 2)
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        lost = next(i for i, d in enumerate(msg.biz) if d.link is msg.biz_link(a.user_id))
        victim = sorted(c.services("biz"), key=lambda s: s.ctx.instance)[lost]
        lost_biz = LostAfterCommit(c, victim)
        ack = await a.text(b.user_id, b"exactly once")
        await lost_biz.stopped()
        assert lost_biz.committed and ack.msg_id == lost_biz.committed[0]
        assert [(m.msg_id, m.msg_data) for m in await a.history(b.user_id)] == [(ack.msg_id, b"exactly once")]
        got = await b.wait_for("CID_MSG_DATA")
        assert [m.msg_id for m in got] == [ack.msg_id]
        assert msg.m_store_retries.value >= 1

    with_cluster(body, biz={"instances": 2})
