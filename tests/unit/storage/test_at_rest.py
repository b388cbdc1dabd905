"""Encryption at rest: content sealed with AES-256-GCM under a 0600 key file; wrong keys are refused."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runtime.storage import GroupType, KeyMismatch, NewUser, SessionType, User, at_rest
from runtime.storage.at_rest import KEY_FILE_NAME, ContentCipher, load_or_create_key
from runtime.storage.sqlite import SqliteStorage

MkUsers = Callable[..., Awaitable[list[User]]]
TEXT = b"plaintext that must not reach the disk"


def test_content_encrypted_and_readable_after_reopen(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    store = make_store(encrypt_at_rest=True)

    async def first() -> tuple[int, int, int]:
        async with store as s:
            a, b = await mk_users(s, "a", "b")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            await s.send_single(a.id, b.id, 1, TEXT)
            await s.send_group(a.id, g.id, 0x11, TEXT)
            assert await s.find_bytes(TEXT) == []
            assert (await s.get_history(b.id, SessionType.SINGLE, a.id, 0, 1))[0].content == TEXT
            return a.id, b.id, g.id

    a, b, g = asyncio.run(first())
    key_path = store.data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert len(key_path.read_bytes()) == 32
    assert TEXT not in b"".join(p.read_bytes() for p in store.data_dir.glob("ttgen.db*"))

    async def second() -> None:
        async with make_store(encrypt_at_rest=True) as s:
            assert (await s.get_history(a, SessionType.GROUP, g, 0, 1))[0].content == TEXT
            recent = await s.recent_sessions(b)
            assert recent[0].latest is not None and recent[0].latest.content == TEXT

    asyncio.run(second())


def test_wrong_key_is_refused(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def first() -> None:
        async with make_store(encrypt_at_rest=True) as s:
            a, b = await mk_users(s, "a", "b")
            await s.send_single(a.id, b.id, 1, TEXT)

    asyncio.run(first())
    with pytest.raises(KeyMismatch, match="not the key"):
        asyncio.run(_open(make_store(encrypt_at_rest=True, at_rest_key=b"k" * 32)))

    async def without_key() -> None:
        async with make_store() as s:  # encryption turned off: old rows cannot be read, and say why
            with pytest.raises(KeyMismatch, match="no at-rest key"):
                await s.get_history(2, SessionType.SINGLE, 1, 0, 1)

    asyncio.run(without_key())


def test_plaintext_policy_stores_plaintext(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            await s.send_single(a.id, b.id, 1, TEXT)
            assert await s.find_bytes(TEXT) == ["messages.content"]

    asyncio.run(body())


def test_key_file_created_once_and_rows_bound(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / KEY_FILE_NAME).write_bytes(b"short")
    with pytest.raises(KeyMismatch):
        load_or_create_key(tmp_path / "bad")
    cipher = ContentCipher(key)
    sealed = cipher.seal(b"m", b"s:1:5")
    assert cipher.open(sealed, b"s:1:5") == b"m"
    with pytest.raises(KeyMismatch):  # a row copied to another msg_id does not decrypt
        cipher.open(sealed, b"s:1:6")


async def _open(store: SqliteStorage) -> None:
    async with store:
        pass


def test_nonces_are_never_reused_even_across_fork() -> None:
    cipher = ContentCipher(os.urandom(32))
    parent = {cipher.seal(b"x", b"aad")[:12] for _ in range(600)}  # spans several nonce blocks
    assert len(parent) == 600
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws from a fresh block, not from the parent's remaining one
        os.close(read_end)
        os.write(write_end, b"".join(cipher.seal(b"x", b"aad")[:12] for _ in range(10)))
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    child = {data[i : i + 12] for i in range(0, len(data), 12)}
    following = {cipher.seal(b"x", b"aad")[:12] for _ in range(10)}
    assert len(child) == 10 and not child & following and not child & parent


def test_two_processes_opening_one_database_agree_on_the_key(tmp_path: Path) -> None:
    """Several biz instances open one data dir at once: the key file appears whole or not at all, the key id
    is recorded once, and every opener ends up with the same key."""

    async def main() -> None:
        stores = [SqliteStorage(tmp_path, encrypt_at_rest=True) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            ids = {s._ctx.cipher.key_id for s in stores if s._ctx.cipher is not None}
            assert len(ids) == 1
        finally:
            await asyncio.gather(*(s.close() for s in stores))
        assert sorted(p.name for p in tmp_path.iterdir() if "storage.key" in p.name) == [KEY_FILE_NAME]

    asyncio.run(main())


def test_a_half_written_key_file_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is linked into place only after it is fully written (and synced)."""
    seen: list[tuple[bool, int]] = []
    real_link = os.link

    def spying_link(src: str | Path, dst: str | Path) -> None:
        # Is the final name still absent, and does the file about to appear hold the whole key?
        seen.append(((tmp_path / KEY_FILE_NAME).exists(), Path(src).stat().st_size))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", spying_link)
    key = load_or_create_key(tmp_path)
    assert seen == [(False, 32)] and (tmp_path / KEY_FILE_NAME).read_bytes() == key


def test_nonce_is_a_random_prefix_then_a_counter() -> None:
    cipher = ContentCipher(os.urandom(32))
    nonces = [cipher.seal(b"x", b"aad")[:12] for _ in range(3)]
    assert len({n[:11] for n in nonces}) == 1  # one series: one prefix
    assert [n[11] for n in nonces] == [0, 1, 2]
    again = ContentCipher(os.urandom(32)).seal(b"x", b"aad")[:11]
    assert again != nonces[0][:11]  # another cipher (a restart, another process) draws another prefix


def test_simulated_fork_starts_a_new_series() -> None:
    """The fork hook gives every live cipher a new prefix, so a child never continues its parent's counter."""
    cipher = ContentCipher(os.urandom(32))
    before = [cipher.seal(b"x", b"aad")[:12] for _ in range(5)]
    at_rest._forked()  # what os.register_at_fork runs in a forked child
    after = [cipher.seal(b"x", b"aad")[:12] for _ in range(5)]
    assert after[0][:11] != before[0][:11] and after[0][11] == 0
    assert len(set(before + after)) == 10


def test_spent_series_is_replaced_by_a_new_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(at_rest, "_SERIES_LEN", 3)
    cipher = ContentCipher(os.urandom(32))
    nonces = [cipher.seal(b"x", b"aad")[:12] for _ in range(7)]
    assert len(set(nonces)) == 7
    prefixes = [n[:11] for n in nonces]
    assert prefixes[0] == prefixes[2] != prefixes[3] == prefixes[5] != prefixes[6]
    assert [n[11] for n in nonces] == [0, 1, 2, 0, 1, 2, 0]
    assert all(cipher.open(cipher.seal(b"m", b"a"), b"a") == b"m" for _ in range(4))


def test_nonces_unique_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """No lock per nonce: concurrent sealers (and series roll-overs) still never share one."""
    monkeypatch.setattr(at_rest, "_SERIES_LEN", 7)  # many roll-overs, raced by the threads
    cipher = ContentCipher(os.urandom(32))
    seen: list[list[bytes]] = [[] for _ in range(4)]

    def work(out: list[bytes]) -> None:
        for _ in range(3000):
            out.append(cipher.seal(b"x", b"aad")[:12])

    threads = [threading.Thread(target=work, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [n for out in seen for n in out]
    assert len(every) == 12000 and len(set(every)) == 12000


def test_push_tokens_are_sealed_and_stay_unique(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    token = "apns:0f1e2d3c4b5a69788796a5b4c3d2e1f0"

    async def body() -> None:
        async with make_store(encrypt_at_rest=True) as s:
            a, b = await mk_users(s, "a", "b")
            await s.set_device_token(a.id, token, 0x11)
            assert await s.find_bytes(token.encode()) == []  # neither the token nor a plain copy is stored
            await s.set_device_token(b.id, token, 0x11)  # one user per token, found through its digest
            assert [(t.user_id, t.token) for t in await s.get_device_tokens([a.id, b.id])] == [(b.id, token)]
        async with make_store(encrypt_at_rest=True) as s:  # readable after a restart
            assert [t.token for t in await s.get_device_tokens([b.id])] == [token]
        async with make_store(encrypt_at_rest=False) as s:  # without the key: refused, not garbage
            with pytest.raises(KeyMismatch):
                await s.get_device_tokens([b.id])

    asyncio.run(body())


def test_a_new_database_is_private(tmp_path: Path) -> None:
    async def body() -> None:
        async with SqliteStorage(tmp_path / "data") as s:
            await s.create_user(NewUser("alice", password_hash="h"))
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("ttgen.db")]
        assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), files

    asyncio.run(body())


def test_seal_row_is_seal_versioned_of_the_row_aad() -> None:
    """The write cache's sealing (`seal_row`) binds a row exactly as `seal_versioned` with `message_aad`
    does: what one seals the other's reader opens, and another row's aad is refused."""
    cipher = ContentCipher({1: os.urandom(32), 2: os.urandom(32)})
    sealed, version = cipher.seal_row(b"s", 7, 42, b"hello")
    assert isinstance(sealed, bytearray) and version == 2
    assert cipher.open(bytes(sealed), at_rest.message_aad("s", 7, 42), version) == b"hello"
    with pytest.raises(KeyMismatch):
        cipher.open(bytes(sealed), at_rest.message_aad("s", 7, 43), version)
    with pytest.raises(KeyMismatch):
        cipher.open(bytes(sealed), at_rest.message_aad("g", 7, 42), version)
    other, _ = cipher.seal_versioned(b"hello", at_rest.message_aad("s", 7, 42))
    assert len(other) == len(sealed) and other[:12] != bytes(sealed[:12])  # same layout, fresh nonce
