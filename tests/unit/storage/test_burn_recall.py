"""Burn-after-reading and recall: the message and every copy of its content are gone, in SQL and on disk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runtime.storage import (
    AccessDenied,
    GroupType,
    NotFound,
    RecallWindowExpired,
    SessionType,
    Storage,
    User,
)
from runtime.storage.sqlite import SqliteStorage

S, G = SessionType.SINGLE, SessionType.GROUP
MkUsers = Callable[..., Awaitable[list[User]]]
SECRET = b"burn-this-\x00-secret-\xf0\x9f\x94\xa5"


def disk_bytes(store: Storage) -> bytes | None:
    """Every byte SQLite keeps for the database: main file, WAL and shared memory. None on PostgreSQL, whose
    dead rows and WAL keep deleted bytes until vacuum and WAL recycling (docs/storage-postgres.md: keep
    encrypt_at_rest on there); its live rows are checked by find_bytes."""
    if not isinstance(store, SqliteStorage):
        return None
    return b"".join(p.read_bytes() for p in sorted(store.data_dir.glob("ttgen.db*")))


def on_disk_nowhere(store: Storage) -> bool:
    """SECRET is in none of SQLite's files (always True on PostgreSQL, see disk_bytes)."""
    disk = disk_bytes(store)
    return disk is None or SECRET not in disk


def test_burn_on_read_leaves_no_trace(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    store = make_store()

    async def body() -> None:
        async with store as s:
            a, b = await mk_users(s, "a", "b")
            await s.send_single(a.id, b.id, 1, b"keep me")
            burn = await s.send_single(a.id, b.id, 1, SECRET * 40, burn=True, dedup_key=b"dk")
            assert await s.find_bytes(SECRET) == ["messages.content"]
            disk = disk_bytes(store)
            assert disk is None or SECRET in disk  # the disk scan below can see the content
            hist = await s.get_history(b.id, S, a.id, 0, 10)
            assert hist[0].burn and hist[0].content == SECRET * 40
            # the sender reading the session burns nothing: only the recipient's read does
            assert (await s.mark_read(a.id, S, b.id)).burned == []
            result = await s.mark_read(b.id, S, a.id, burn.msg_id)
            assert result.burned == [burn.msg_id]
            assert await s.find_bytes(SECRET) == []
            assert [m.content for m in await s.get_history(a.id, S, b.id, 0, 10)] == [b"keep me"]
            for session in await s.recent_sessions(a.id) + await s.recent_sessions(b.id):
                assert (
                    session.latest is not None and session.latest.content == b"keep me"
                )  # preview moved back
            summary = await s.unread_summary(b.id)
            assert all(i.latest is None or SECRET not in i.latest.content for i in summary.items)
            assert on_disk_nowhere(store)  # the WAL was truncated after the burn

    asyncio.run(body())
    assert on_disk_nowhere(store)


def test_unread_burn_message_survives_until_read(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            first = await s.send_single(a.id, b.id, 1, b"burn 1", burn=True)
            second = await s.send_single(a.id, b.id, 1, b"burn 2", burn=True)
            assert (await s.mark_read(b.id, S, a.id, first.msg_id)).burned == [first.msg_id]
            remaining = await s.get_history(b.id, S, a.id, 0, 10)
            assert [m.msg_id for m in remaining] == [second.msg_id]

    asyncio.run(body())


def test_recall_within_window(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    store = make_store(recall_window=120)

    async def body() -> None:
        async with store as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            sent = await s.send_single(a.id, b.id, 1, SECRET, dedup_key=b"k")
            with pytest.raises(AccessDenied):  # the recipient may not recall
                await s.recall(b.id, S, a.id, sent.msg_id)
            with pytest.raises(NotFound):
                await s.recall(c.id, S, a.id, sent.msg_id)  # c has no such message with a
            clock.now += 120
            await s.recall(a.id, S, b.id, sent.msg_id)
            assert await s.find_bytes(SECRET) == []
            assert await s.get_history(b.id, S, a.id, 0, 10) == []
            assert (await s.unread_summary(b.id)).total == 0
            assert [x.latest for x in await s.recent_sessions(b.id)] == [None]
            late = await s.send_single(a.id, b.id, 1, b"too late")
            clock.now += 121
            with pytest.raises(RecallWindowExpired):
                await s.recall(a.id, S, b.id, late.msg_id)
            with pytest.raises(NotFound):
                await s.recall(a.id, S, b.id, sent.msg_id)  # already gone
            # the dedup record is gone too, so a retry with the old key is a new message, not a dangling id
            assert not (await s.send_single(a.id, b.id, 1, b"again", dedup_key=b"k")).duplicate

    asyncio.run(body())
    assert on_disk_nowhere(store)


def test_group_recall(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            sent = await s.send_group(b.id, g.id, 0x11, SECRET)
            with pytest.raises(AccessDenied):
                await s.recall(a.id, G, g.id, sent.msg_id)  # even the creator cannot recall b's message
            await s.recall(b.id, G, g.id, sent.msg_id)
            assert await s.find_bytes(SECRET) == []
            assert await s.get_history(a.id, G, g.id, 0, 10) == []

    asyncio.run(body())


def test_recall_and_burn_leave_a_content_free_tombstone(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    store = make_store()

    async def body() -> None:
        async with store as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id, c.id])
            sent_at = int(clock())
            one = await s.send_single(a.id, b.id, 1, SECRET)
            grp = await s.send_group(a.id, g.id, 0x11, SECRET)
            burn = await s.send_single(a.id, b.id, 1, SECRET, burn=True)
            clock.now += 30
            await s.recall(a.id, S, b.id, one.msg_id)
            await s.recall(a.id, G, g.id, grp.msg_id)
            await s.mark_read(b.id, S, a.id, burn.msg_id)
            stones = await s.list_tombstones()
            assert [
                (t.action, t.session_type, t.session_id, t.msg_id, t.from_id, t.actor_id) for t in stones
            ] == [
                ("recall", S, b.id, one.msg_id, a.id, a.id),
                ("recall", G, g.id, grp.msg_id, a.id, a.id),
                ("burn", S, a.id, burn.msg_id, a.id, b.id),
            ]
            assert {(t.sent, t.removed) for t in stones} == {(sent_at, sent_at + 30)}
            assert await s.find_bytes(SECRET) == []  # the tombstones hold no content
            assert await s.list_tombstones(since=sent_at + 31) == []
            assert len(await s.list_tombstones(limit=1)) == 1
            # Refused recalls leave none.
            with pytest.raises(AccessDenied):
                await s.recall(b.id, S, a.id, (await s.send_single(a.id, b.id, 1, b"x")).msg_id)
            assert len(await s.list_tombstones()) == 3

    asyncio.run(body())
    assert on_disk_nowhere(store)
