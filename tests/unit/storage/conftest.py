"""Fixtures for storage tests: real SQLite files under tmp_path, a settable clock, and user factories."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.storage import NewUser, User
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
def make_store(tmp_path: Path, clock: Clock) -> Callable[..., SqliteStorage]:
    """Build (not open) a store in tmp_path/db; keyword arguments go to SqliteStorage."""

    def build(**kwargs: Any) -> SqliteStorage:
        kwargs.setdefault("clock", clock)
        return SqliteStorage(kwargs.pop("data_dir", tmp_path / "db"), **kwargs)

    return build


@pytest.fixture
def mk_users() -> Callable[..., Awaitable[list[User]]]:
    """An async helper creating users with the given login names."""

    async def create(store: SqliteStorage, *names: str) -> list[User]:
        return [await store.create_user(NewUser(n, nick=n.title())) for n in names]

    return create
