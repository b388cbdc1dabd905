"""Reading a store's tables behind its back, on either backend (tests check what is really stored)."""

from __future__ import annotations

import sqlite3
from typing import Any

import asyncpg

from runtime.storage import Storage
from runtime.storage.sqlite import SqliteStorage
from tests.pg_support import _run


def query(store: Storage, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a parameterless SQL statement that reads the same on SQLite and PostgreSQL, over a
    connection of its own (so it sees only what is committed)."""
    if isinstance(store, SqliteStorage):
        with sqlite3.connect(store.path) as conn:
            rows = [tuple(r) for r in conn.execute(sql).fetchall()]
        conn.close()
        return rows
    out: list[tuple[Any, ...]] = []

    async def fetch() -> None:
        conn = await asyncpg.connect(store.dsn)  # type: ignore[attr-defined]
        try:
            out.extend(tuple(r.values()) for r in await conn.fetch(sql))
        finally:
            await conn.close()

    _run(fetch)
    return out


def tables(store: Storage) -> set[str]:
    """Names of the store's tables."""
    if isinstance(store, SqliteStorage):
        return {r[0] for r in query(store, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    return {r[0] for r in query(store, sql)}


def row_counts(store: Storage) -> dict[str, int]:
    """Rows per table (table names come from the catalog, not from input)."""
    return {n: query(store, f'SELECT count(*) FROM "{n}"')[0][0] for n in sorted(tables(store))}
