"""Request tokens stored with messages: a send flagged `resend` is answered with the stored copy of its token.

The token is msg's (a signed 64-bit int, 0 = none), kept in the message row in the same transaction; only a
resend looks for it, in the conversation's newest rows of the same sender within the dedup window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runtime.storage import GroupType, InvalidArgument, SendResult, Storage, User
from runtime.storage.sqlite import SqliteStorage, messages
from tests.unit.storage.conftest import Clock
from tests.unit.storage.raw import query

MkUsers = Callable[..., Awaitable[list[User]]]
TOKEN = -0x1234_5678_9ABC_DEF0  # tokens are signed 64-bit ints: negative ones too
OTHER = 0x7EDC_BA98_7654_3210


def stored(store: Storage, table: str = "messages") -> list[tuple[Any, ...]]:
    return [
        (r[0], r[1], bytes(r[2]), r[3])
        for r in query(store, f"SELECT msg_id, from_id, content, token FROM {table} ORDER BY msg_id")
    ]


@pytest.mark.parametrize("encrypt", [False, True])
def test_resend_after_reopen_returns_the_stored_message(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, encrypt: bool
) -> None:
    async def body() -> tuple[User, SendResult]:
        async with make_store(encrypt_at_rest=encrypt) as s:
            a, b = await mk_users(s, "a", "b")
            first = await s.send_single(a.id, b.id, 1, b"hello", token=TOKEN)
        async with make_store(encrypt_at_rest=encrypt) as s:  # a new process: nothing in memory
            again = await s.send_single(a.id, b.id, 1, b"hello", token=TOKEN, resend=True)
            assert again == SendResult(first.msg_id, first.created, duplicate=True)
            later = await s.send_single(a.id, b.id, 1, b"later", token=OTHER, resend=True)  # unknown: stored
            assert later.msg_id == first.msg_id + 1 and not later.duplicate
        return a, first

    a, first = asyncio.run(body())
    store = make_store()
    rows = stored(store)
    assert [(r[0], r[1], r[3]) for r in rows] == [
        (first.msg_id, a.id, TOKEN),
        (first.msg_id + 1, a.id, OTHER),
    ]


def test_first_sends_never_look_and_tokens_are_per_sender(
    make_sqlite_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> list[int]:
        async with make_sqlite_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            ids = [(await s.send_single(a.id, b.id, 1, b"x", token=TOKEN)).msg_id for _ in range(2)]
            # the same token from the peer (same pair) or from a third user (other pair) is another request
            ids.append((await s.send_single(b.id, a.id, 1, b"x", token=TOKEN, resend=True)).msg_id)
            ids.append((await s.send_single(c.id, b.id, 1, b"x", token=TOKEN, resend=True)).msg_id)
            # no token: a resend flag alone finds nothing
            ids.append((await s.send_single(a.id, b.id, 1, b"x", resend=True)).msg_id)
            return ids

    assert asyncio.run(body()) == [1, 2, 3, 1, 4]
    assert sorted(r[3] for r in stored(make_sqlite_store())) == sorted([TOKEN] * 4 + [0])  # 0: no token


def test_resend_queued_with_its_first_copy_is_found_before_the_commit(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    """The lookup runs on the writer after the operations queued before it: a first copy still waiting in
    the write cache (same batch) or written earlier in a replayed batch is found."""

    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            first, again = await asyncio.gather(
                s.send_single(a.id, b.id, 1, b"m", token=TOKEN),
                s.send_single(a.id, b.id, 1, b"m", token=TOKEN, resend=True),
            )
            assert (again.msg_id, again.created, again.duplicate) == (first.msg_id, first.created, True)
            # a refused operation in the batch makes the writer replay it operation by operation (no cache)
            results = await asyncio.gather(
                s.send_single(a.id, b.id, 1, b"n", token=OTHER),
                s.send_single(a.id, a.id, 1, b"to oneself", token=OTHER),
                s.send_single(a.id, b.id, 1, b"n", token=OTHER, resend=True),
                return_exceptions=True,
            )
            second, refused, second_again = results
            assert isinstance(refused, InvalidArgument)
            assert isinstance(second, SendResult) and isinstance(second_again, SendResult)
            assert (second_again.msg_id, second_again.duplicate) == (second.msg_id, True)

    asyncio.run(body())
    assert [r[2] for r in stored(make_store())] == [b"m", b"n"]


def test_resend_is_looked_up_within_the_dedup_window_and_the_newest_rows_only(
    make_sqlite_store: Callable[..., SqliteStorage],
    mk_users: MkUsers,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(messages, "TOKEN_SCAN_ROWS", 3)

    async def body() -> None:
        async with make_sqlite_store(dedup_window=600) as s:
            a, b = await mk_users(s, "a", "b")
            old = await s.send_single(a.id, b.id, 1, b"old", token=TOKEN)
            clock.now += 601  # beyond the window: a resend this late is a new message
            assert not (await s.send_single(a.id, b.id, 1, b"old", token=TOKEN, resend=True)).duplicate
            first = await s.send_single(a.id, b.id, 1, b"m", token=OTHER)
            for i in range(2):
                await s.send_single(b.id, a.id, 1, b"reply %d" % i)
            hit = await s.send_single(a.id, b.id, 1, b"m", token=OTHER, resend=True)  # third newest row
            assert (hit.msg_id, hit.duplicate) == (first.msg_id, True)
            await s.send_single(b.id, a.id, 1, b"reply 2")
            miss = await s.send_single(a.id, b.id, 1, b"m", token=OTHER, resend=True)  # now fourth newest
            assert not miss.duplicate and miss.msg_id > old.msg_id

    asyncio.run(body())


@pytest.mark.parametrize("token", [2**63, -(2**63) - 1, True, "token", b"\x00" * 8, 1.5, None])
def test_bad_tokens_are_refused_and_store_nothing(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, token: Any
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            group = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            for resend in (False, True):
                with pytest.raises(InvalidArgument, match="token"):
                    await s.send_single(a.id, b.id, 1, b"x", token=token, resend=resend)
                with pytest.raises(InvalidArgument, match="token"):
                    await s.send_group(a.id, group.id, 0x11, b"x", token=token, resend=resend)
            done: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
            s.send_single_nowait(a.id, b.id, 1, b"x", lambda _r, e: done.set_result(e), token=token)
            assert isinstance(await done, InvalidArgument)

    asyncio.run(body())
    store = make_store()
    assert stored(store) == [] and stored(store, "group_messages") == []


def test_group_resend_after_reopen_returns_the_stored_message(
    make_sqlite_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_sqlite_store() as s:
            a, b = await mk_users(s, "a", "b")
            group = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            first = await s.send_group(a.id, group.id, 0x11, b"hi", token=TOKEN)
            assert not (await s.send_group(a.id, group.id, 0x11, b"hi", token=TOKEN)).duplicate  # no lookup
        async with make_sqlite_store() as s:
            again = await s.send_group(a.id, group.id, 0x11, b"hi", token=TOKEN, resend=True)
            assert again == SendResult(first.msg_id + 1, again.created, duplicate=True)  # the newest copy
            other = await s.send_group(b.id, group.id, 0x11, b"hi", token=TOKEN, resend=True)  # b's: new
            assert not other.duplicate and other.msg_id == first.msg_id + 2

    asyncio.run(body())
    rows = stored(make_sqlite_store(), "group_messages")
    assert [(r[0], r[3]) for r in rows] == [(1, TOKEN), (2, TOKEN), (3, TOKEN)]
