"""The group-commit writer (both backends): acks after commit, per-operation isolation, draining on close."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runtime.storage import SessionType, Storage, StorageClosed, User
from runtime.storage.sqlite import SqliteStorage
from tests.unit.storage.raw import query

MkUsers = Callable[..., Awaitable[list[User]]]


def test_ack_means_committed(make_store: Callable[..., Storage], mk_users: MkUsers) -> None:
    store = make_store()

    async def body() -> None:
        async with store as s:
            a, b = await mk_users(s, "a", "b")
            for i in range(20):
                sent = await s.send_single(a.id, b.id, 1, b"m%d" % i)
                # an independent connection sees the row the moment the call returns
                rows = query(store, f"SELECT content FROM messages WHERE msg_id = {int(sent.msg_id)}")
                assert [bytes(r[0]) for r in rows] == [b"m%d" % i]

    asyncio.run(body())


def half_then_fail(store: Storage, user_id: int) -> Any:
    """A writer operation that changes a row and then raises, for either backend's writer."""
    if isinstance(store, SqliteStorage):

        def op(conn: Any) -> None:
            conn.execute("UPDATE users SET nick = 'changed' WHERE id = ?", (user_id,))
            raise RuntimeError("boom")

        return op

    async def aop(conn: Any) -> None:
        await conn.execute("UPDATE users SET nick = 'changed' WHERE id = $1", user_id)
        raise RuntimeError("boom")

    return aop


def test_failing_operation_does_not_spoil_its_batch(
    make_store: Callable[..., Storage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            results = await asyncio.gather(
                s.send_single(a.id, b.id, 1, b"before"),
                s.writer.submit(half_then_fail(s, a.id)),  # type: ignore[attr-defined]
                s.send_single(a.id, b.id, 1, b"after"),
                return_exceptions=True,
            )
            assert isinstance(results[1], RuntimeError)
            assert (await s.get_users([a.id]))[0].nick == "A"  # the failed operation's write was undone
            assert await s.latest_msg_id(a.id, SessionType.SINGLE, b.id) == 2
            assert [bytes(m.content) for m in await s.get_history(a.id, SessionType.SINGLE, b.id, 0, 5)] == [
                b"after",
                b"before",
            ]

    asyncio.run(body())


def test_close_drains_queue_then_refuses(make_store: Callable[..., Storage], mk_users: MkUsers) -> None:
    store = make_store()

    async def body() -> None:
        await store.open()
        a, b = await mk_users(store, "a", "b")
        # gather starts its tasks in order, so every send is queued before close() queues the stop marker
        *sent, _ = await asyncio.gather(
            *[store.send_single(a.id, b.id, 1, b"x") for _ in range(100)], store.close()
        )
        assert sorted(r.msg_id for r in sent if r is not None) == list(range(1, 101))
        with pytest.raises(StorageClosed):
            await store.send_single(a.id, b.id, 1, b"late")

    asyncio.run(body())
    assert query(store, "SELECT count(*) FROM messages") == [(100,)]


def test_one_transaction_per_message_mode(make_store: Callable[..., Storage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store(group_commit=False) as s:
            a, b = await mk_users(s, "a", "b")
            before = s.writer.batches  # type: ignore[attr-defined]
            await asyncio.gather(*[s.send_single(a.id, b.id, 1, b"x") for _ in range(30)])
            assert s.writer.batches - before == 30  # type: ignore[attr-defined]

    asyncio.run(body())
