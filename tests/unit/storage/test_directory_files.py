"""Directory (users, departments), push tokens and shield, offline files, and the blob store."""

from __future__ import annotations

import asyncio
import hashlib
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.storage import (
    AccessDenied,
    BlobStore,
    Conflict,
    InvalidArgument,
    KeyMismatch,
    NotFound,
    OfflineFile,
    User,
    UserPatch,
    UserStatus,
    ValueTooLarge,
)
from runtime.storage.sqlite import SqliteStorage

MkUsers = Callable[..., Awaitable[list[User]]]


def test_incremental_user_list_hides_departed(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers, clock: Any
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            t0 = int(clock.now)
            assert await s.list_users_since(t0) == []
            clock.now += 5
            await s.update_user(b.id, UserPatch(nick="Bee", email="b@x"))
            await s.update_user(c.id, UserPatch(status=UserStatus.LEFT))
            changed = await s.list_users_since(t0)
            assert [(u.id, u.nick, u.email) for u in changed] == [(b.id, "Bee", "b@x")]
            assert [u.id for u in await s.list_users_since(0)] == [a.id, b.id]
            assert [u.id for u in await s.get_users([c.id, a.id, 404])] == [
                a.id,
                c.id,
            ]  # profiles still readable
            with pytest.raises(NotFound):
                await s.update_user(404, UserPatch(nick="x"))

    asyncio.run(body())


def test_departments(make_store: Callable[..., SqliteStorage], clock: Any) -> None:
    async def body() -> None:
        async with make_store() as s:
            root = await s.create_department("root", priority=1)
            clock.now += 1
            child = await s.create_department("child", parent_id=root.id)
            assert [d.id for d in await s.list_departments_since(0)] == [root.id, child.id]
            assert [d.id for d in await s.list_departments_since(root.updated)] == [child.id]
            with pytest.raises(NotFound):
                await s.create_department("orphan", parent_id=999)

    asyncio.run(body())


def test_tokens_shield_and_sign(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            await s.set_device_token(a.id, "ios:tok1", 0x11)
            await s.set_device_token(b.id, "ios:tok1", 0x11)  # one user per token: moves to b
            assert [(t.user_id, t.token) for t in await s.get_device_tokens([a.id, b.id])] == [
                (b.id, "ios:tok1")
            ]
            await s.set_device_token(b.id, "android:tok2", 0x12)  # one token per user
            assert [t.token for t in await s.get_device_tokens([b.id])] == ["android:tok2"]
            await s.clear_device_token(b.id)
            assert await s.get_device_tokens([b.id]) == []
            with pytest.raises(InvalidArgument):
                await s.set_device_token(a.id, "", 1)
            assert await s.get_push_shield(a.id) is False
            await s.set_push_shield(a.id, True)
            assert await s.get_push_shield(a.id) is True
            await s.set_sign_info(a.id, "busy")
            assert (await s.get_users([a.id]))[0].sign_info == "busy"
            with pytest.raises(NotFound):
                await s.set_sign_info(999, "x")

    asyncio.run(body())


def test_offline_files(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            rec = await s.add_offline_file(OfflineFile("task-1", a.id, b.id, "report.pdf", 1234))
            assert rec.created > 0
            await s.add_offline_file(OfflineFile("task-2", c.id, b.id, "pic.png", 9))
            with pytest.raises(Conflict):
                await s.add_offline_file(OfflineFile("task-1", a.id, b.id, "dup", 1))
            assert [f.task_id for f in await s.list_offline_files(b.id)] == ["task-1", "task-2"]
            with pytest.raises(AccessDenied):
                await s.delete_offline_file(c.id, "task-1")
            await s.delete_offline_file(b.id, "task-1")
            with pytest.raises(NotFound):
                await s.delete_offline_file(b.id, "task-1")
            assert [f.task_id for f in await s.list_offline_files(b.id)] == ["task-2"]

    asyncio.run(body())


def test_blob_store_limits_and_addressing(tmp_path: Path) -> None:
    key = bytes(range(32))
    blobs = BlobStore(tmp_path / "blobs", key, max_file=100, max_upload=150)
    name = blobs.put(b"voice bytes")
    assert blobs.put(b"voice bytes") == name and blobs.get(name) == b"voice bytes"
    assert name != hashlib.sha256(b"voice bytes").hexdigest()  # a keyed name: not computable from a guess
    assert BlobStore(tmp_path / "other", bytes(32)).name_of(b"voice bytes") != name
    stored = tmp_path / "blobs" / name[:2] / name
    assert stored.is_file() and b"voice bytes" not in stored.read_bytes()  # sealed at rest
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    with pytest.raises(ValueTooLarge):
        blobs.put(b"x" * 101)
    with pytest.raises(ValueTooLarge):
        blobs.put_upload([b"a" * 80, b"b" * 80])  # each fits, the upload does not
    assert not blobs.exists(blobs.name_of(b"a" * 80))  # nothing of the refused upload
    with pytest.raises(InvalidArgument):
        blobs.get("../../etc/passwd")
    with pytest.raises(KeyMismatch):
        BlobStore(tmp_path / "blobs", bytes(32)).get(name)  # another key does not open it
    tampered = bytearray(stored.read_bytes())
    tampered[-1] ^= 1
    stored.write_bytes(bytes(tampered))
    with pytest.raises(KeyMismatch):
        blobs.get(name)
    assert blobs.delete(name) and not blobs.delete(name)
    with pytest.raises(NotFound):
        blobs.get(name)
    default = BlobStore(tmp_path / "d", key)
    assert (default.max_file, default.max_upload) == (5 * 1024 * 1024, 10 * 1024 * 1024)
