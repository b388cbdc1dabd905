"""Fixtures for storage tests: real SQLite files under tmp_path or real PostgreSQL databases, a settable
clock, and user factories. `make_store` runs a test on both backends; `make_sqlite_store` is for SQLite
internals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.storage import NewUser, Storage, User
from runtime.storage.sqlite import SqliteStorage


class Clock:
    """A settable clock (unix seconds) so windows are tested without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_sqlite_store(tmp_path: Path, clock: Clock) -> Callable[..., SqliteStorage]:
    """Build (not open) a SQLite store in tmp_path/db; keyword arguments go to SqliteStorage."""

    def build(**kwargs: Any) -> SqliteStorage:
        kwargs.setdefault("clock", clock)
        return SqliteStorage(kwargs.pop("data_dir", tmp_path / "db"), **kwargs)

    return build


@pytest.fixture
def make_store(
    request: pytest.FixtureRequest,
    storage_backend: str,
    make_sqlite_store: Callable[..., SqliteStorage],
    tmp_path: Path,
    clock: Clock,
) -> Callable[..., Storage]:
    """Build (not open) a store of the test's backend. A `data_dir` names one database: the same folder is
    the same database (reopen), another folder another database, on both backends."""
    if storage_backend == "sqlite":
        return make_sqlite_store
    from runtime.storage.postgres import PostgresStorage

    databases = request.getfixturevalue("pg_databases")
    dsn_of: dict[Path, str] = {}

    def build(**kwargs: Any) -> Storage:
        kwargs.setdefault("clock", clock)
        data_dir = Path(kwargs.pop("data_dir", tmp_path / "db"))
        if data_dir not in dsn_of:
            dsn_of[data_dir] = databases.create()
        return PostgresStorage(dsn_of[data_dir], data_dir, **kwargs)

    return build


@pytest.fixture
def mk_users() -> Callable[..., Awaitable[list[User]]]:
    """An async helper creating users with the given login names."""

    async def create(store: Storage, *names: str) -> list[User]:
        return [await store.create_user(NewUser(n, nick=n.title())) for n in names]

    return create
