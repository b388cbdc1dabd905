"""PostgreSQL for tests: one throwaway server per test session, and a fresh database per test.

`TTGEN_TEST_PG_DSN` points the tests at a server of your own instead (databases are created in it and dropped
after each test). Without either, the PostgreSQL half of the parametrized tests is skipped with the reason,
except under CI (CI=true), where a missing PostgreSQL fails the run loudly: CI must test both backends.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from runtime.storage.postgres.local_server import LocalServer, ServerUnavailable
from runtime.storage.postgres.schema import migrate

BACKENDS = ("sqlite", "postgres")
_TEMPLATES: dict[str, str] = {}  # server -> a migrated database that new test databases copy


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def with_database(dsn: str, name: str) -> str:
    """The DSN with its database replaced."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _run(coro_factory: object) -> None:
    """Run a coroutine to completion from sync code, even inside a running event loop (in a thread)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro_factory())  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


class PgDatabases:
    """Creates databases on one server; `drop_all` removes those it made."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.made: list[str] = []

    def create(self, *, empty: bool = False) -> str:
        """A new database: migrated to the latest schema (a copy of a template made once per server, which
        is much faster than migrating each), or `empty`."""
        name = "t_" + uuid.uuid4().hex[:16]
        template = "template0" if empty else self._template()

        async def make() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:  # generated identifiers, not input
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            finally:
                await conn.close()

        _run(make)
        self.made.append(name)
        return with_database(self.admin_dsn, name)

    def _template(self) -> str:
        name = _TEMPLATES.get(self.admin_dsn)
        if name is not None:
            return name
        name = "ttgen_tpl_" + uuid.uuid4().hex[:8]

        async def make() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
            finally:
                await conn.close()
            db = await asyncpg.connect(with_database(self.admin_dsn, name))
            try:
                await migrate(db)
            finally:
                await db.close()

        _run(make)
        _TEMPLATES[self.admin_dsn] = name
        return name

    def drop_all(self) -> None:
        made, self.made = self.made, []

        async def drop() -> None:
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                for name in made:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        if made:
            _run(drop)


def start_or_skip() -> Iterator[str]:
    """The admin DSN of the session's server (yielded while it runs)."""
    external = os.environ.get("TTGEN_TEST_PG_DSN")
    if external:
        yield external
        return
    server = started(LocalServer(fsync=False))
    try:
        yield server.dsn()
    finally:
        server.stop()


def started(server: LocalServer) -> LocalServer:
    """`server`, started; where PostgreSQL cannot run, the test is skipped, except in CI, where it fails (CI
    must test both backends)."""
    try:
        server.start()
    except ServerUnavailable as exc:
        message = f"PostgreSQL unavailable: {exc}"
        if in_ci():
            pytest.fail(f"CI must run the PostgreSQL tests, but {message}", pytrace=False)
        pytest.skip(message)
    return server
