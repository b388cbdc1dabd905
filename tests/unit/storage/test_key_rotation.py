"""Versioned at-rest keys (both backends): a new version seals new rows, older rows are re-sealed under it in
batches, everything stays readable; key files are 0600 and may live outside the data dir; a missing or wrong
key is a one-line KeyMismatch."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runtime.storage import GroupType, KeyMismatch, SessionType, Storage, User
from runtime.storage.at_rest import add_key_version, key_file, key_versions

MkUsers = Callable[..., Awaitable[list[User]]]


def test_rotation_seals_new_rows_with_the_new_key_and_reseals_the_old(
    make_store: Callable[..., Storage], mk_users: MkUsers, tmp_path: Path
) -> None:
    keys = tmp_path / "keys-elsewhere"

    async def body() -> None:
        store = make_store(encrypt_at_rest=True, key_dir=keys)
        async with store as s:
            a, b = await mk_users(s, "a", "b")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            for i in range(30):
                await s.send_single(a.id, b.id, 1, f"old {i}".encode())
                await s.send_group(a.id, g.id, 0x11, f"old g{i}".encode())
            assert await s.key_usage() == {1: 60}
            assert add_key_version(keys) == 2
            for i in range(5):  # a running store takes the new version up on its own (forced here)
                s._ctx.cipher.refresh(force=True)  # type: ignore[attr-defined]
                await s.send_single(a.id, b.id, 1, f"new {i}".encode())
            assert await s.key_usage() == {1: 60, 2: 5}
            assert await s.reseal(25) == 25  # batches: one transaction each
            while await s.reseal(25):
                pass
            assert await s.key_usage() == {2: 65}
            history = await s.get_history(b.id, SessionType.SINGLE, a.id, 0, 100)
            assert sorted(m.content for m in history) == sorted(
                [f"old {i}".encode() for i in range(30)] + [f"new {i}".encode() for i in range(5)]
            )
            group = await s.get_history(b.id, SessionType.GROUP, g.id, 0, 100)
            assert sorted(m.content for m in group) == sorted(f"old g{i}".encode() for i in range(30))
        assert key_versions(keys) == [1, 2]
        for v in (1, 2):
            assert stat.S_IMODE(os.stat(key_file(keys, v)).st_mode) == 0o600
        assert not (store.data_dir / "storage.key").exists()  # the keys are kept outside the data dir
        # Reopened, a new process reads rows of both versions (here: all version 2) and seals with 2.
        again = make_store(encrypt_at_rest=True, key_dir=keys)
        async with again as s:
            assert len(await s.get_history(b.id, SessionType.SINGLE, a.id, 0, 100)) == 35
            await s.send_single(a.id, b.id, 1, b"after reopen")
            assert await s.key_usage() == {2: 66}

    asyncio.run(body())


def test_a_missing_or_wrong_key_version_is_one_clear_line(
    make_store: Callable[..., Storage], mk_users: MkUsers, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"

    async def body() -> None:
        async with make_store(encrypt_at_rest=True, key_dir=keys) as s:
            a, b = await mk_users(s, "a", "b")
            await s.send_single(a.id, b.id, 1, b"x")
        add_key_version(keys)
        async with make_store(encrypt_at_rest=True, key_dir=keys) as s:
            await s.send_single(a.id, b.id, 1, b"y")  # records version 2 in the database
        v2 = key_file(keys, 2)
        saved = v2.read_bytes()
        v2.unlink()
        with pytest.raises(KeyMismatch, match=r"version\(s\) 2 recorded, missing from the key dir") as gone:
            async with make_store(encrypt_at_rest=True, key_dir=keys):
                pass
        assert "\n" not in str(gone.value)
        fd = os.open(v2, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, os.urandom(32))
        os.close(fd)
        with pytest.raises(KeyMismatch, match="at-rest key version 2 is not the key"):
            async with make_store(encrypt_at_rest=True, key_dir=keys):
                pass
        v2.write_bytes(saved)
        os.chmod(v2, 0o644)
        with pytest.raises(KeyMismatch, match=r"storage\.key\.2"):
            async with make_store(encrypt_at_rest=True, key_dir=keys):
                pass
        os.chmod(v2, 0o600)
        async with make_store(encrypt_at_rest=True, key_dir=keys) as s:
            rows = await s.get_history(b.id, SessionType.SINGLE, a.id, 0, 10)
            assert [m.content for m in rows] == [b"y", b"x"]

    asyncio.run(body())


def test_reseal_without_encryption_is_refused(make_store: Callable[..., Storage]) -> None:
    async def body() -> None:
        async with make_store() as s:
            with pytest.raises(Exception, match="not encrypted at rest"):
                await s.reseal()

    asyncio.run(body())
