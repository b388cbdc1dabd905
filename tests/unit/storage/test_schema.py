"""Migrations: from an empty database, in order, transactional, and refusal of a newer schema."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.storage import SchemaTooNew
from runtime.storage.sqlite import MIGRATIONS, Migration, SqliteStorage
from runtime.storage.sqlite.schema import current_version, migrate


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_empty_database_is_migrated_to_latest(make_store: Callable[..., SqliteStorage]) -> None:
    store = make_store()

    async def body() -> None:
        async with store:
            assert store.schema_version == len(MIGRATIONS)

    asyncio.run(body())
    names = tables(store.path)
    assert {"users", "departments", "messages", "group_messages", "sessions", "pairs", "dedup"} <= names
    with sqlite3.connect(store.path) as conn:
        assert current_version(conn) == len(MIGRATIONS)


def test_pragmas_wal_full_foreign_keys(make_store: Callable[..., SqliteStorage]) -> None:
    store = make_store()

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


def test_newer_schema_is_refused_clearly(make_store: Callable[..., SqliteStorage]) -> None:
    store = make_store()
    asyncio.run(_open_close(store))
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(SchemaTooNew, match="99 is newer") as info:
        asyncio.run(_open_close(make_store()))
    assert (info.value.found, info.value.supported) == (99, len(MIGRATIONS))


def test_reopen_does_not_reapply(make_store: Callable[..., SqliteStorage]) -> None:
    asyncio.run(_open_close(make_store()))
    asyncio.run(_open_close(make_store()))  # would fail on CREATE TABLE users if reapplied


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


async def _open_close(store: SqliteStorage) -> None:
    async with store:
        pass
