"""The writer's write-behind cache of 1:1 sends: same results as the plain path, never stale."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable

import pytest

from runtime.storage import SessionType, User
from runtime.storage.models import ReadResult, SendResult
from runtime.storage.sqlite import SqliteStorage
from runtime.storage.sqlite.write_cache import MessageRow, _insert_messages

MkUsers = Callable[..., Awaitable[list[User]]]


def test_other_connection_commits_invalidate_the_cache(
    make_sqlite_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    store = make_sqlite_store()

    async def body() -> None:
        async with store as s:
            a, b = await mk_users(s, "a", "b")
            assert [(await s.send_single(a.id, b.id, 1, b"x")).msg_id for _ in range(3)] == [1, 2, 3]
            # another process (e.g. `ttgen admin`) advances the pair's counter behind the writer's back
            with sqlite3.connect(store.path) as other:
                other.execute("UPDATE pairs SET last_msg_id = last_msg_id + 5")
            assert (await s.send_single(b.id, a.id, 1, b"y")).msg_id == 9
            assert await s.latest_msg_id(a.id, SessionType.SINGLE, b.id) == 9

    asyncio.run(body())


def test_cached_sends_mixed_with_other_writes_in_one_batch(
    make_sqlite_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_sqlite_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            await s.send_single(a.id, b.id, 1, b"first")
            batch = await asyncio.gather(  # queued together: typically one batch
                *[s.send_single(a.id, b.id, 1, b"m%d" % i) for i in range(5)],
                s.mark_read(b.id, SessionType.SINGLE, a.id),  # sees the queued rows (flushed before it)
                s.remove_session(a.id, SessionType.SINGLE, b.id),  # resets the session-touch cache
                *[s.send_single(b.id, a.id, 1, b"r%d" % i) for i in range(5)],
                s.send_single(a.id, c.id, 1, b"other pair"),
            )
            sent = [r for r in batch[:5] + batch[7:12] if isinstance(r, SendResult)]
            assert [r.msg_id for r in sent] == list(range(2, 12))
            read = batch[5]
            assert isinstance(read, ReadResult) and read.read_msg_id == 6
            other = batch[12]
            assert isinstance(other, SendResult) and other.msg_id == 1
            assert await s.latest_msg_id(a.id, SessionType.SINGLE, b.id) == 11
            history = await s.get_history(b.id, SessionType.SINGLE, a.id, 0, 20)
            assert [m.msg_id for m in history] == list(range(11, 0, -1))
            recent = {r.session_id for r in await s.recent_sessions(a.id)}
            assert b.id in recent  # the sends after remove_session touched the session again

    asyncio.run(body())


def test_callback_send(make_sqlite_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_sqlite_store() as s:
            a, b = await mk_users(s, "a", "b")
            done: asyncio.Future[tuple[object, BaseException | None]] = (
                asyncio.get_running_loop().create_future()
            )
            s.send_single_nowait(a.id, b.id, 1, b"x", lambda r, e: done.set_result((r, e)))
            result, error = await done
            assert error is None and getattr(result, "msg_id", 0) == 1
            failed: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
            s.send_single_nowait(a.id, a.id, 1, b"x", lambda r, e: failed.set_result(e))
            assert await failed is not None  # a message to oneself is refused through the callback

    asyncio.run(body())


@pytest.mark.parametrize("count", [0, 1, 2, 3, 15, 16, 64, 65, 127, 200])
def test_queued_messages_inserted_in_order_in_multi_row_chunks(count: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, pair_id, msg_id, from_id, to_id, msg_type, content, "
        "encrypted, burn, created, token)"
    )
    rows: list[MessageRow] = [
        (i % 7, i, 1, 2, 1, bytearray(b"c%d" % i), 1, 0, 1000 + i, (i * 0x9E3779B97F4A7C15) % 2**64 - 2**63)
        for i in range(count)
    ]
    _insert_messages(conn, rows)
    stored = conn.execute(
        "SELECT pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, token, "
        "typeof(content) FROM messages ORDER BY id"
    ).fetchall()
    assert [r[:10] for r in stored] == [(*r[:5], bytes(r[5]), *r[6:]) for r in rows]
    assert {r[10] for r in stored} <= {"blob"}  # a queued bytearray is stored as the same BLOB as bytes
