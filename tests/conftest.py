"""Test configuration: hypothesis profiles, the --runslow flag, PostgreSQL for backend-parametrized tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

# `ci`: short and derandomized, for the default suite; `dev`: a little longer; `long`: for `ttgen fuzz` runs.
settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile("long", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

if TYPE_CHECKING:
    from tests.pg_support import PgDatabases


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="also run tests marked slow")
    parser.addoption(
        "--all-layouts",
        action="store_true",
        default=False,
        help="run every integration test in both cluster layouts, also those the layout cannot affect "
        "(tests/integration/conftest.py: ONE_LAYOUT)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A PostgreSQL server for the whole session (tests/pg_support.py: skipped without one, failed in CI)."""
    from tests.pg_support import start_or_skip

    yield from start_or_skip()


@pytest.fixture
def pg_databases(pg_admin_dsn: str) -> Iterator[PgDatabases]:
    """Makes fresh databases on the session's server; they are dropped after the test."""
    from tests.pg_support import PgDatabases

    dbs = PgDatabases(pg_admin_dsn)
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def storage_backend(request: pytest.FixtureRequest) -> str:
    """Runs a test once per storage backend."""
    return str(request.param)
