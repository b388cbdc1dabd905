"""Hostile strings are stored verbatim; oversize values are refused with a typed error and write nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from runtime.storage import (
    Conflict,
    GroupType,
    InvalidArgument,
    Limits,
    NewUser,
    OfflineFile,
    SessionType,
    User,
    UserPatch,
    ValueTooLarge,
)
from runtime.storage.sqlite import SqliteStorage
from tests.unit.storage.raw import row_counts

MkUsers = Callable[..., Awaitable[list[User]]]
NASTY = [
    "'; DROP TABLE users; --",
    '" OR 1=1 --',
    "%",
    "_",
    "a\x00b",
    "emoji \U0001f525\U0001f9e8 中文",
    "\\'\\\"",
    "x" * 250,
]


@pytest.mark.parametrize("text", NASTY)
def test_every_string_field_round_trips(make_store: Callable[..., SqliteStorage], text: str) -> None:
    async def body() -> None:
        async with make_store() as s:
            if "\x00" in text and not isinstance(s, SqliteStorage):
                # PostgreSQL text cannot hold NUL: refused with a clear error, and nothing is stored
                with pytest.raises(InvalidArgument, match="NUL"):
                    await s.create_user(NewUser(text, nick="n"))
                with pytest.raises(InvalidArgument, match="NUL"):
                    await s.create_user(NewUser("fine", nick=text))
                assert await s.list_users_since(0) == [] and await s.get_user_by_login(text) is None
                return
            user = await s.create_user(
                NewUser(
                    text,
                    nick=text,
                    real_name=text,
                    avatar=text,
                    email=text,
                    phone=text,
                    domain=text,
                    sign_info=text,
                    password_hash=text,
                )
            )
            other = await s.create_user(NewUser("other" + text))
            got = (await s.get_users([user.id]))[0]
            assert (got.login_name, got.nick, got.real_name, got.avatar, got.email) == (text,) * 5
            assert (got.phone, got.domain, got.sign_info) == (text,) * 3
            assert (await s.get_user_by_login(text)) == got
            assert await s.get_user_by_login(text + "x") is None
            creds = await s.get_credentials(text)
            assert creds is not None and creds.password_hash == text
            await s.set_sign_info(user.id, text)
            patched = await s.update_user(user.id, UserPatch(nick=text + "!"))
            assert patched.nick == text + "!"
            dept = await s.create_department(text)
            assert [d.name for d in await s.list_departments_since(0)] == [dept.name] == [text]
            group = await s.create_group(user.id, text, GroupType.TMP, [other.id], avatar=text)
            assert (group.name, group.avatar) == (text, text)
            content = text.encode()
            sent = await s.send_single(user.id, other.id, 1, content, dedup_key=content[:128])
            again = await s.send_single(user.id, other.id, 1, content, dedup_key=content[:128])
            assert again.msg_id == sent.msg_id
            assert [m.content for m in await s.get_history(other.id, SessionType.SINGLE, user.id, 0, 5)] == [
                content
            ]
            await s.set_device_token(user.id, text, 0x11)
            assert [t.token for t in await s.get_device_tokens([user.id])] == [text]
            await s.add_offline_file(OfflineFile(text, user.id, other.id, text, 7))
            assert [(f.task_id, f.file_name) for f in await s.list_offline_files(other.id)] == [(text, text)]
            assert len(await s.list_users_since(0)) == 2  # the users table is intact

    asyncio.run(body())


def test_like_wildcards_do_not_match_other_rows(make_store: Callable[..., SqliteStorage]) -> None:
    async def body() -> None:
        async with make_store() as s:
            await s.create_user(NewUser("alice"))
            assert await s.get_user_by_login("%") is None
            assert await s.get_user_by_login("_lice") is None
            assert await s.get_credentials("' OR '1'='1") is None

    asyncio.run(body())


def test_oversize_values_rejected_without_partial_writes(make_store: Callable[..., SqliteStorage]) -> None:
    store = make_store(limits=Limits(max_name=16, max_text=32, max_content=64, max_dedup_key=8))

    async def body() -> None:
        async with store as s:
            a = await s.create_user(NewUser("a"))
            b = await s.create_user(NewUser("b"))
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            before = row_counts(store)
            cases = [
                s.create_user(NewUser("n" * 17)),
                s.create_user(NewUser("ok", email="e" * 33)),
                s.update_user(a.id, UserPatch(nick="n" * 17)),
                s.set_sign_info(a.id, "s" * 33),
                s.send_single(a.id, b.id, 1, b"c" * 65),
                s.send_single(a.id, b.id, 1, b"c", dedup_key=b"k" * 9),
                s.send_group(a.id, g.id, 0x11, b"c" * 65),
                s.create_group(a.id, "n" * 17, GroupType.TMP, [b.id]),
                s.create_department("d" * 17),
                s.set_device_token(a.id, "t" * 33, 1),
                s.add_offline_file(OfflineFile("t", a.id, b.id, "f" * 33, 1)),
            ]
            for case in cases:
                with pytest.raises(ValueTooLarge) as info:
                    await case
                assert info.value.size > info.value.limit
            assert row_counts(store) == before
            assert (await s.get_users([a.id]))[0].sign_info == ""

    asyncio.run(body())


def test_other_invalid_values(make_store: Callable[..., SqliteStorage]) -> None:
    async def body() -> None:
        async with make_store() as s:
            a = await s.create_user(NewUser("a"))
            with pytest.raises(Conflict):
                await s.create_user(NewUser("a"))
            for bad in (
                NewUser(""),
                NewUser("g", gender=7),
                NewUser("s", status=9),
                NewUser("u", nick="\ud800"),
            ):
                with pytest.raises(InvalidArgument):
                    await s.create_user(bad)
            with pytest.raises(InvalidArgument):
                await s.send_single(a.id, a.id + 1, -1, b"x")
            with pytest.raises(InvalidArgument):
                await s.get_history(a.id, SessionType.SINGLE, 2, -5, 10)
            assert [u.login_name for u in await s.list_users_since(0)] == ["a"]

    asyncio.run(body())
