"""1:1 and group messages: msg_id allocation, group commit, dedup, paging, visibility, durability."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

import pytest

from runtime.storage import (
    AccessDenied,
    GroupModify,
    GroupType,
    GroupVersion,
    InvalidArgument,
    Limits,
    NotFound,
    SessionType,
    User,
    ValueTooLarge,
)
from runtime.storage.sqlite import SqliteStorage, backend, messages

S, G = SessionType.SINGLE, SessionType.GROUP
MkUsers = Callable[..., Awaitable[list[User]]]


def test_single_ids_monotonic_and_gap_free_under_concurrency(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            sends = [s.send_single(a.id, b.id, 1, b"ab%d" % i) for i in range(300)]
            sends += [s.send_single(b.id, a.id, 1, b"ba%d" % i) for i in range(300)]
            sends += [s.send_single(a.id, c.id, 1, b"ac%d" % i) for i in range(200)]
            results = await asyncio.gather(*sends)
            ab = sorted(r.msg_id for r in results[:600])
            ac = sorted(r.msg_id for r in results[600:])
            assert ab == list(range(1, 601))  # one counter shared by both directions
            assert ac == list(range(1, 201))  # a separate counter per pair
            assert s.writer.batches < s.writer.operations  # commits were shared
            page = await s.get_history(a.id, S, b.id, 0, 100)
            assert [m.msg_id for m in page] == list(range(600, 500, -1))
            assert await s.latest_msg_id(b.id, S, a.id) == 600

    asyncio.run(body())


def test_submission_order_is_msg_id_order(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            results = await asyncio.gather(*[s.send_single(a.id, b.id, 1, b"%d" % i) for i in range(200)])
            assert [r.msg_id for r in results] == list(range(1, 201))
            stored = await s.get_messages_by_ids(b.id, S, a.id, [1, 100, 200])
            assert [m.content for m in stored] == [b"0", b"99", b"199"]

    asyncio.run(body())


def test_group_ids_gap_free(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            g1 = await s.create_group(a.id, "one", GroupType.TMP, [b.id, c.id])
            g2 = await s.create_group(b.id, "two", GroupType.TMP, [c.id])
            sends: list[Awaitable[Any]] = [s.send_group(u.id, g1.id, 0x11, b"x") for u in (a, b, c) * 50]
            sends += [s.send_group(c.id, g2.id, 0x11, b"y") for _ in range(40)]
            results = await asyncio.gather(*sends)
            assert sorted(r.msg_id for r in results[:150]) == list(range(1, 151))
            assert sorted(r.msg_id for r in results[150:]) == list(range(1, 41))

    asyncio.run(body())


def test_failed_send_in_a_batch_leaves_no_gap(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            big = b"x" * (s._ctx.limits.max_content + 1)
            results = await asyncio.gather(
                s.send_single(a.id, b.id, 1, b"1"),
                s.send_single(a.id, b.id, 1, big),
                s.send_single(a.id, b.id, 1, b"2"),
                return_exceptions=True,
            )
            assert isinstance(results[1], InvalidArgument)
            assert [r.msg_id for r in (results[0], results[2])] == [1, 2]  # type: ignore[union-attr]

    asyncio.run(body())


def test_dedup_returns_original_and_stores_once(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    async def body() -> None:
        async with make_store(dedup_window=60) as s:
            a, b = await mk_users(s, "a", "b")
            first = await s.send_single(a.id, b.id, 1, b"hello", dedup_key=b"k1")
            retries = await asyncio.gather(
                *[s.send_single(a.id, b.id, 1, b"hello", dedup_key=b"k1") for _ in range(5)]
            )
            assert {r.msg_id for r in retries} == {first.msg_id}
            assert all(r.duplicate for r in retries) and not first.duplicate
            assert len(await s.get_history(b.id, S, a.id, 0, 100)) == 1
            other = await s.send_single(a.id, b.id, 1, b"hello", dedup_key=b"k2")
            assert other.msg_id == first.msg_id + 1
            # the same key towards another peer is a different message
            c = (await mk_users(s, "c"))[0]
            assert not (await s.send_single(a.id, c.id, 1, b"hello", dedup_key=b"k1")).duplicate
            clock.now += 61  # outside the window the key is fresh again
            late = await s.send_single(a.id, b.id, 1, b"hello", dedup_key=b"k1")
            assert (late.msg_id, late.duplicate) == (3, False)

    asyncio.run(body())


def test_group_dedup(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            r1, r2 = await asyncio.gather(
                s.send_group(a.id, g.id, 0x11, b"m", dedup_key=b"d"),
                s.send_group(a.id, g.id, 0x11, b"m", dedup_key=b"d"),
            )
            assert r1.msg_id == r2.msg_id == 1
            assert await s.latest_msg_id(b.id, G, g.id) == 1

    asyncio.run(body())


def test_refusals(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            with pytest.raises(InvalidArgument, match="oneself"):
                await s.send_single(a.id, a.id, 1, b"me")
            with pytest.raises(InvalidArgument, match="empty"):
                await s.send_single(a.id, b.id, 1, b"")
            with pytest.raises(NotFound):
                await s.send_single(a.id, 999, 1, b"x")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            with pytest.raises(AccessDenied):  # member-only sending
                await s.send_group(c.id, g.id, 0x11, b"x")
            with pytest.raises(NotFound):
                await s.send_group(a.id, 777, 0x11, b"x")
            assert await s.latest_msg_id(a.id, G, g.id) == 0

    asyncio.run(body())


def test_history_paging_and_caps(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            await asyncio.gather(*[s.send_single(a.id, b.id, 1, b"%d" % i) for i in range(250)])
            page = await s.get_history(b.id, S, a.id, 0, 10_000)
            assert len(page) == 100 and page[0].msg_id == 250 and page[-1].msg_id == 151
            older = await s.get_history(b.id, S, a.id, 150, 20)
            assert [m.msg_id for m in older] == list(range(150, 130, -1))
            assert await s.get_history(b.id, S, a.id, 5, 0) == []
            with pytest.raises(InvalidArgument):
                await s.get_messages_by_ids(b.id, S, a.id, list(range(1, 102)))
            got = await s.get_messages_by_ids(b.id, S, a.id, [3, 1, 3, 999])
            assert [m.msg_id for m in got] == [1, 3]

    asyncio.run(body())


def test_reads_are_authorized(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, eve = await mk_users(s, "a", "b", "eve")
            await s.send_single(a.id, b.id, 1, b"secret")
            # eve's view of "the session with a" is her own pair with a: empty, never a and b's messages
            assert await s.get_history(eve.id, S, a.id, 0, 100) == []
            assert await s.get_messages_by_ids(eve.id, S, a.id, [1]) == []
            assert await s.latest_msg_id(eve.id, S, b.id) == 0
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            await s.send_group(a.id, g.id, 0x11, b"group secret")
            for call in (
                s.get_history(eve.id, G, g.id, 0, 10),
                s.get_messages_by_ids(eve.id, G, g.id, [1]),
                s.latest_msg_id(eve.id, G, g.id),
                s.mark_read(eve.id, G, g.id),
            ):
                with pytest.raises(AccessDenied):
                    await call
            assert await s.get_groups_info(eve.id, [GroupVersion(g.id, 0)]) == []
            with pytest.raises(AccessDenied):
                await s.set_group_shield(eve.id, g.id, True)
            # a removed member loses access
            await s.change_group_members(a.id, g.id, GroupModify.DEL, [b.id])
            with pytest.raises(AccessDenied):
                await s.get_history(b.id, G, g.id, 0, 10)

    asyncio.run(body())


def test_group_history_starts_at_join(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, late = await mk_users(s, "a", "b", "late")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            for i in range(3):
                await s.send_group(a.id, g.id, 0x11, b"before%d" % i)
            await s.change_group_members(b.id, g.id, GroupModify.ADD, [late.id])
            await s.send_group(b.id, g.id, 0x11, b"after")
            seen = await s.get_history(late.id, G, g.id, 0, 100)
            assert [m.content for m in seen] == [b"after"]
            assert await s.get_messages_by_ids(late.id, G, g.id, [1, 2, 3, 4]) == seen
            assert len(await s.get_history(a.id, G, g.id, 0, 100)) == 4
            summary = await s.unread_summary(late.id)
            assert [(i.session_id, i.unread) for i in summary.items] == [(g.id, 1)]

    asyncio.run(body())


def test_everything_persists_across_reopen(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def first() -> tuple[int, int, int]:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            await asyncio.gather(*[s.send_single(a.id, b.id, 1, b"m%d" % i) for i in range(50)])
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            await s.send_group(b.id, g.id, 0x11, b"gm")
            await s.set_sign_info(a.id, "sig")
            await s.set_device_token(b.id, "tok", 0x11)
            await s.mark_read(b.id, S, a.id, 20)
            return a.id, b.id, g.id

    a, b, g = asyncio.run(first())

    async def second() -> None:
        async with make_store() as s:
            assert [m.content for m in await s.get_history(b, S, a, 0, 2)] == [b"m49", b"m48"]
            assert (await s.send_single(b, a, 1, b"next")).msg_id == 51  # the counter survived
            assert (await s.send_group(a, g, 0x11, b"g2")).msg_id == 2
            assert (await s.get_users([a]))[0].sign_info == "sig"
            assert [t.token for t in await s.get_device_tokens([b])] == ["tok"]
            summary = await s.unread_summary(b)
            assert {(i.session_type, i.unread) for i in summary.items} == {(S, 30), (G, 1)}

    asyncio.run(second())


def test_dedup_keys_pruned_by_an_operation_of_their_own(
    make_sqlite_store: Callable[..., SqliteStorage],
    mk_users: MkUsers,
    clock: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Expired dedup keys are dropped every _PRUNE_EVERY sends by a queued prune, not inside a send: a prune
    that fails is logged and no send fails with it."""
    monkeypatch.setattr(backend, "_PRUNE_EVERY", 4)
    store = make_sqlite_store(dedup_window=60)

    def dedup_rows() -> int:
        with sqlite3.connect(store.path) as conn:
            return int(conn.execute("SELECT count(*) FROM dedup").fetchone()[0])

    async def body() -> None:
        async with store as s:
            a, b = await mk_users(s, "a", "b")
            for i in range(3):
                await s.send_single(a.id, b.id, 1, b"x", dedup_key=b"old%d" % i)
            assert dedup_rows() == 3
            clock.now += 61
            await s.send_single(a.id, b.id, 1, b"x", dedup_key=b"new")  # the 4th send queues a prune first
            assert dedup_rows() == 1
            real = messages.prune_dedup

            def broken(conn: sqlite3.Connection, ctx: Any) -> int:
                raise sqlite3.OperationalError("disk I/O error")

            monkeypatch.setattr(messages, "prune_dedup", broken)
            sent = await asyncio.gather(*[s.send_single(a.id, b.id, 1, b"y") for _ in range(4)])
            assert [r.msg_id for r in sent] == [5, 6, 7, 8]
            await asyncio.sleep(0.01)  # the prune's callback runs on the loop after the commit
            monkeypatch.setattr(messages, "prune_dedup", real)

    with caplog.at_level("WARNING"):
        asyncio.run(body())
    assert any("pruning expired dedup keys failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"content": b""}, InvalidArgument),
        ({"content": "text"}, InvalidArgument),
        ({"content": b"c" * 65}, ValueTooLarge),
        ({"msg_type": True}, InvalidArgument),
        ({"msg_type": -1}, InvalidArgument),
        ({"msg_type": 2**32}, InvalidArgument),
        ({"msg_type": 1.0}, InvalidArgument),
        ({"dedup_key": "k"}, InvalidArgument),
        ({"dedup_key": b"k" * 9}, ValueTooLarge),
        ({"to_self": True}, InvalidArgument),
        ({"to_self": True, "dedup_key": b"k"}, InvalidArgument),
    ],
)
def test_send_single_refuses_bad_input(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, kwargs: dict[str, Any], error: type
) -> None:
    """The inline checks of the 1:1 send path refuse what the shared checkers refuse, with the same errors."""

    async def body() -> None:
        async with make_store(limits=Limits(max_content=64, max_dedup_key=8)) as s:
            a, b = await mk_users(s, "a", "b")
            args = dict(kwargs)
            to = a.id if args.pop("to_self", False) else b.id
            with pytest.raises(error):
                await s.send_single(
                    a.id,
                    to,
                    args.pop("msg_type", 1),
                    args.pop("content", b"ok"),
                    dedup_key=args.pop("dedup_key", None),
                )
            assert await s.latest_msg_id(a.id, S, b.id) == 0

    asyncio.run(body())


def test_send_single_accepts_any_bytes_like(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    """What the shared checkers accept (bytes-like content and keys, int subclasses) passes inline too."""

    class Kind(IntEnum):
        TEXT = 1

    array: Any = bytearray(b"one")
    view: Any = memoryview(b"one")
    key: Any = bytearray(b"k")

    async def body() -> None:
        async with make_store(limits=Limits(max_content=64, max_dedup_key=8), encrypt_at_rest=True) as s:
            a, b = await mk_users(s, "a", "b")
            first = await s.send_single(a.id, b.id, Kind.TEXT, array, dedup_key=key)
            again = await s.send_single(a.id, b.id, 1, view, dedup_key=b"k")
            other = await s.send_single(a.id, b.id, 2**32 - 1, b"c" * 64, dedup_key=b"k" * 8)
            assert (first.msg_id, again.msg_id, again.duplicate, other.msg_id) == (1, 1, True, 2)
            history = await s.get_history(b.id, S, a.id, 0, 10)
            assert [(m.msg_type, m.content) for m in history] == [(2**32 - 1, b"c" * 64), (1, b"one")]

    asyncio.run(body())
