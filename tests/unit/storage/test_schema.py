"""Migrations: from an empty database, in order, transactional, and refusal of a newer schema."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from runtime.storage import GroupType, SchemaTooNew, SessionType, User
from runtime.storage.sqlite import MIGRATIONS, Migration, SqliteStorage
from runtime.storage.sqlite.schema import current_version, migrate


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_empty_database_is_migrated_to_latest(make_sqlite_store: Callable[..., SqliteStorage]) -> None:
    store = make_sqlite_store()

    async def body() -> None:
        async with store:
            assert store.schema_version == len(MIGRATIONS)

    asyncio.run(body())
    names = tables(store.path)
    assert {"users", "departments", "messages", "group_messages", "sessions", "pairs", "dedup"} <= names
    with sqlite3.connect(store.path) as conn:
        assert current_version(conn) == len(MIGRATIONS)


def test_pragmas_wal_full_foreign_keys(make_sqlite_store: Callable[..., SqliteStorage]) -> None:
    store = make_sqlite_store()

    async def body() -> tuple[str, int, int]:
        async with store:
            assert store._wconn is not None
            conn = store._wconn
            return (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA foreign_keys").fetchone()[0],
            )

    journal, sync, fks = asyncio.run(body())
    assert (journal, sync, fks) == ("wal", 2, 1)  # 2 = FULL


def test_newer_schema_is_refused_clearly(make_sqlite_store: Callable[..., SqliteStorage]) -> None:
    store = make_sqlite_store()
    asyncio.run(_open_close(store))
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaTooNew, match="99 is newer") as info:
        asyncio.run(_open_close(make_sqlite_store()))
    assert (info.value.found, info.value.supported) == (99, len(MIGRATIONS))


def test_reopen_does_not_reapply(make_sqlite_store: Callable[..., SqliteStorage]) -> None:
    asyncio.run(_open_close(make_sqlite_store()))
    asyncio.run(_open_close(make_sqlite_store()))  # would fail on CREATE TABLE users if reapplied


def test_later_migrations_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = sqlite3.connect(path, isolation_level=None)
    first = (Migration(1, ("CREATE TABLE a (x INTEGER)",)),)
    assert migrate(conn, first) == 1
    more = (
        *first,
        Migration(2, ("ALTER TABLE a ADD COLUMN y INTEGER",)),
        Migration(3, ("CREATE TABLE b (z)",)),
    )
    assert migrate(conn, more) == 3
    assert [r[1] for r in conn.execute("PRAGMA table_info(a)")] == ["x", "y"]
    assert current_version(conn) == 3
    conn.close()


def test_failing_migration_rolls_back_everything(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    bad = (Migration(1, ("CREATE TABLE a (x)",)), Migration(2, ("CREATE TABLE b (y)", "NOT SQL")))
    with pytest.raises(sqlite3.OperationalError):
        migrate(conn, bad)
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert names == set()  # not even schema_version or table a survived
    conn.close()


def test_misnumbered_migrations_are_a_programming_error(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    with pytest.raises(ValueError, match="numbered"):
        migrate(conn, (Migration(2, ("CREATE TABLE a (x)",)),))
    conn.close()


def test_version_1_database_upgrades_and_keeps_its_messages(
    make_sqlite_store: Callable[..., SqliteStorage], mk_users: Callable[..., Awaitable[list[User]]]
) -> None:
    """A database made before message rows carried request tokens (schema 1) gains the `token` columns (0:
    none) on open and keeps every row; new sends store their token and a resend finds it."""

    async def at_version_1() -> tuple[int, int, int]:
        async with make_sqlite_store(migrations=MIGRATIONS[:1]) as s:
            assert s.schema_version == 1
            a, b = await mk_users(s, "a", "b")
            group = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            return a.id, b.id, group.id

    a, b, gid = asyncio.run(at_version_1())
    path = make_sqlite_store().path
    with sqlite3.connect(path) as conn:  # rows as schema-1 code wrote them
        assert "token" not in columns(conn, "messages") and "token" not in columns(conn, "group_messages")
        (pid,) = conn.execute(
            "INSERT INTO pairs (small_id, big_id, last_msg_id, created) VALUES (?, ?, 2, 1) RETURNING id",
            (min(a, b), max(a, b)),
        ).fetchone()
        conn.executemany(
            "INSERT INTO messages "
            "(pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created) "
            "VALUES (?, ?, ?, ?, 1, ?, 0, ?, 1)",
            [(pid, 1, a, b, b"old one", 0), (pid, 2, b, a, b"old two", 1)],
        )
        conn.execute("UPDATE groups SET last_msg_id = 1 WHERE id = ?", (gid,))
        conn.execute(
            "INSERT INTO group_messages (group_id, msg_id, from_id, msg_type, content, encrypted, created) "
            "VALUES (?, 1, ?, 17, ?, 0, 1)",
            (gid, a, b"old group"),
        )
    conn.close()

    async def upgraded() -> None:
        async with make_sqlite_store() as s:
            assert s.schema_version == len(MIGRATIONS) >= 2
            history = await s.get_history(a, SessionType.SINGLE, b, 0, 10)
            assert [(m.msg_id, m.content, m.burn) for m in history] == [
                (2, b"old two", True),
                (1, b"old one", False),
            ]
            group = await s.get_history(b, SessionType.GROUP, gid, 0, 10)
            assert [(m.msg_id, m.content) for m in group] == [(1, b"old group")]
            sent = await s.send_single(a, b, 1, b"new", token=77)
            assert sent.msg_id == 3
            again = await s.send_single(a, b, 1, b"new", token=77, resend=True)
            assert (again.msg_id, again.duplicate) == (3, True)
            assert (await s.send_group(a, gid, 17, b"new group", token=78)).msg_id == 2

    asyncio.run(upgraded())
    with sqlite3.connect(path) as conn:
        assert current_version(conn) == len(MIGRATIONS)
        assert conn.execute("SELECT msg_id, token FROM messages ORDER BY msg_id").fetchall() == [
            (1, 0),
            (2, 0),
            (3, 77),
        ]
        assert conn.execute("SELECT msg_id, token FROM group_messages ORDER BY msg_id").fetchall() == [
            (1, 0),
            (2, 78),
        ]
    conn.close()
    asyncio.run(_open_close(make_sqlite_store()))  # the upgraded database reopens without migrating again


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


async def _open_close(store: SqliteStorage) -> None:
    async with store:
        pass
