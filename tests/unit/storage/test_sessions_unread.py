"""Recent sessions (both sides, removal, incremental, cap) and unread counters with read acks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from runtime.storage import GroupType, NewUser, SessionType, User
from runtime.storage.sqlite import SqliteStorage

S, G = SessionType.SINGLE, SessionType.GROUP
MkUsers = Callable[..., Awaitable[list[User]]]


def test_both_sides_touched_with_last_message(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            await s.send_single(a.id, b.id, 1, b"to b")
            clock.now += 10
            await s.send_single(c.id, a.id, 1, b"c to a")
            sa = await s.recent_sessions(a.id)
            assert [(x.session_id, x.session_type) for x in sa] == [(c.id, S), (b.id, S)]  # newest first
            assert sa[1].latest is not None and sa[1].latest.content == b"to b"
            sb = await s.recent_sessions(b.id)  # TeamTalk never touched the peer's session: we do
            assert [x.session_id for x in sb] == [a.id]
            assert sb[0].latest is not None and sb[0].latest.from_user_id == a.id
            assert [x.session_id for x in await s.recent_sessions(c.id)] == [a.id]

    asyncio.run(body())


def test_incremental_removal_and_comeback(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            await s.send_single(a.id, b.id, 1, b"1")
            t0 = int(clock.now)
            assert await s.recent_sessions(a.id, t0) == []  # nothing updated after t0
            clock.now += 5
            await s.remove_session(a.id, S, b.id)
            removed = await s.recent_sessions(a.id, t0)
            assert [(x.session_id, x.status) for x in removed] == [(b.id, 1)]  # so other devices learn it
            assert [x.status for x in await s.recent_sessions(b.id)] == [0]  # b's side untouched
            clock.now += 5
            await s.send_single(b.id, a.id, 1, b"2")
            back = await s.recent_sessions(a.id, t0 + 5)
            assert [(x.session_id, x.status) for x in back] == [(b.id, 0)]

    asyncio.run(body())


def test_recent_sessions_capped_at_100(make_store: Callable[..., SqliteStorage], clock: Any) -> None:
    async def body() -> None:
        async with make_store() as s:
            hub = await s.create_user(NewUser("hub"))
            for i in range(105):
                peer = await s.create_user(NewUser(f"p{i}"))
                clock.now += 1
                await s.send_single(peer.id, hub.id, 1, b"hi")
            recent = await s.recent_sessions(hub.id)
            assert len(recent) == 100
            assert recent[0].updated > recent[-1].updated

    asyncio.run(body())


def test_group_sessions_appear_for_members(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id, c.id])
            assert await s.recent_sessions(b.id) == []  # no chat yet
            clock.now += 1
            await s.send_group(a.id, g.id, 0x11, b"hello all")
            rb = await s.recent_sessions(b.id)
            assert [(x.session_id, x.session_type) for x in rb] == [(g.id, G)]
            assert rb[0].latest is not None and rb[0].latest.content == b"hello all"
            clock.now += 1
            await s.remove_session(b.id, G, g.id)
            assert [x.status for x in await s.recent_sessions(b.id)] == [1]
            clock.now += 1
            await s.send_group(c.id, g.id, 0x11, b"again")
            assert [x.status for x in await s.recent_sessions(b.id)] == [0]

    asyncio.run(body())


def test_single_unread_and_read_ack_up_to(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            for i in range(5):
                await s.send_single(a.id, b.id, 1, b"a%d" % i)
            await s.send_single(b.id, a.id, 1, b"reply")  # msg 6: b's own message is never unread for b
            summary = await s.unread_summary(b.id)
            assert summary.total == 5
            assert summary.items[0].latest is not None and summary.items[0].latest.content == b"reply"
            assert (await s.unread_summary(a.id)).total == 1
            result = await s.mark_read(b.id, S, a.id, 3)
            assert result.read_msg_id == 3
            assert (await s.unread_summary(b.id)).total == 2
            await s.mark_read(b.id, S, a.id, 1)  # the read position never moves back
            assert (await s.unread_summary(b.id)).total == 2
            await s.mark_read(b.id, S, a.id)  # 0 = everything
            assert await s.unread_summary(b.id) == type(summary)(0, [])

    asyncio.run(body())


def test_group_unread_and_total(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id, c.id])
            for _ in range(3):
                await s.send_group(a.id, g.id, 0x11, b"from a")
            await s.send_group(c.id, g.id, 0x11, b"from c")
            await s.send_single(c.id, b.id, 1, b"dm")
            sb = await s.unread_summary(b.id)
            assert sb.total == 5
            assert {(i.session_type, i.session_id, i.unread) for i in sb.items} == {
                (G, g.id, 4),
                (S, c.id, 1),
            }
            # sending reads the group for the sender: c has read up to its own message
            assert (await s.unread_summary(c.id)).total == 0
            assert (await s.unread_summary(a.id)).total == 1
            await s.mark_read(b.id, G, g.id, 2)
            assert (await s.unread_summary(b.id)).total == 3
            await s.mark_read(b.id, G, g.id)
            assert (await s.unread_summary(b.id)).total == 1

    asyncio.run(body())
