"""Discovery in the PostgreSQL database with leases: prompt changes (NOTIFY), expiry of a dead holder, order,
one cluster's view only, and the static list beside it (a real server: the test session's)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.cluster.discovery import CombinedDiscovery, RunDirDiscovery, StaticDiscovery
from runtime.cluster.lease_discovery import LeaseDiscovery
from runtime.services.base import Endpoint
from tests.pg_support import PgDatabases

BIZ0 = Endpoint("biz", 0, "internal", "10.0.0.1", 7000)
BIZ1 = Endpoint("biz", 1, "internal", "10.0.0.2", 7001)
ROUTER = Endpoint("router", 0, "internal", "10.0.0.3", 7100)


async def until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until check() held (AssertionError after `timeout`)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not seen in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def crash(d: LeaseDiscovery) -> None:
    """The process dies: no withdraw, no renewal, its connection just goes."""
    assert d._task is not None and d._conn is not None
    d._task.cancel()
    d._conn.terminate()
    d._conn = None


def test_changes_are_seen_promptly_and_in_registration_order(
    pg_databases: PgDatabases, tmp_path: Path
) -> None:
    dsn = pg_databases.create()

    async def body() -> None:
        # poll 30 s: anything seen sooner came by NOTIFY
        a = LeaseDiscovery(dsn, "c1", ttl=30, poll=30, mirror=RunDirDiscovery(tmp_path / "run"))
        b = LeaseDiscovery(dsn, "c1", ttl=30, poll=30)
        other = LeaseDiscovery(dsn, "c2", ttl=30, poll=30)
        await asyncio.gather(a.start(), b.start(), other.start())
        try:
            a.publish(BIZ0)
            assert a.endpoints("biz", "internal") == [BIZ0]  # our own publish: at once
            assert await until(lambda: b.endpoints("biz", "internal") == [BIZ0], 5) < 2
            b.publish(BIZ1)
            await until(lambda: a.endpoints("biz", "internal") == [BIZ0, BIZ1], 5)
            await until(lambda: b.endpoints("biz", "internal") == [BIZ0, BIZ1], 5)  # oldest first
            assert RunDirDiscovery(tmp_path / "run").endpoints("biz", "internal") == [BIZ0]  # the mirror
            a.withdraw(BIZ0)
            assert await until(lambda: b.endpoints("biz", "internal") == [BIZ1], 5) < 2
            assert other.endpoints("biz", "internal") == []  # another cluster sees nothing of ours
            assert RunDirDiscovery(tmp_path / "run").endpoints("biz", "internal") == []
        finally:
            await asyncio.gather(a.close(), b.close(), other.close())

    asyncio.run(body())


def test_a_dead_holder_drops_out_when_its_lease_lapses(pg_databases: PgDatabases) -> None:
    dsn = pg_databases.create()

    async def body() -> None:
        a = LeaseDiscovery(dsn, "c1", ttl=1.5, poll=0.2)
        b = LeaseDiscovery(dsn, "c1", ttl=1.5, poll=0.2)
        await asyncio.gather(a.start(), b.start())
        try:
            a.publish(ROUTER)
            await until(lambda: b.endpoints("router", "internal") == [ROUTER], 3)
            await asyncio.sleep(2.0)  # longer than the lease: the holder's renewals keep it alive
            assert b.endpoints("router", "internal") == [ROUTER]
            crash(a)
            waited = await until(lambda: b.endpoints("router", "internal") == [], 5)
            assert waited <= 1.5 + 0.2 + 1.0  # within ttl + poll (and a beat of slack for a busy machine)
        finally:
            with contextlib.suppress(Exception):
                await a.close()
            await b.close()

    asyncio.run(body())


def test_a_static_list_works_beside_it(pg_databases: PgDatabases) -> None:
    dsn = pg_databases.create()
    static = StaticDiscovery(
        [{"service": "router", "instance": 1, "kind": "internal", "host": "h", "port": 9}]
    )

    async def body() -> None:
        lease = LeaseDiscovery(dsn, "c1", ttl=30, poll=30)
        await lease.start()
        try:
            both = CombinedDiscovery(lease, static)  # type: ignore[arg-type]
            both.publish(ROUTER)
            assert both.endpoints("router", "internal") == [ROUTER, Endpoint("router", 1, "internal", "h", 9)]
        finally:
            await lease.close()

    asyncio.run(body())


def test_instance_numbers_held_by_another_host_are_refused_until_their_lease_lapses(
    pg_databases: PgDatabases, tmp_path: Path
) -> None:
    from runtime.cluster.config import parse_config
    from runtime.cluster.lease_discovery import InstanceTaken, wait_instances_free

    dsn = pg_databases.create()

    def config(first: int) -> Any:
        return parse_config(
            {
                "data_dir": str(tmp_path),
                "storage": {"backend": "postgres", "dsn": dsn, "cluster_id": "c1"},
                "discovery": {"backend": "database", "ttl": 1.0, "poll": 0.1},
                "services": {"biz": {"instances": 1, "first_instance": first}},
                "only": ["biz"],
                "host": "10.0.0.9",
                "internal_host": "10.0.0.9",
            }
        )

    async def body() -> None:
        await wait_instances_free(config(0))  # no table yet: nothing is held
        holder = LeaseDiscovery(dsn, "c1", ttl=1.0, poll=0.1)
        await holder.start()
        try:
            holder.publish(BIZ0)
            await until(lambda: holder.refreshes > 1, 5)
            try:
                await wait_instances_free(config(0), timeout=0.5)
            except InstanceTaken as exc:
                assert "biz-0 is already running at 10.0.0.1:7000" in str(exc)
                assert "--first-instance" in str(exc)
            else:
                raise AssertionError("biz-0 is held by another process, yet it was free")
            await wait_instances_free(config(1), timeout=0.5)  # another number is free at once
            crash(holder)  # the holder's host dies: its lease lapses within ttl, then the number is free
            started = time.monotonic()
            await wait_instances_free(config(0))
            assert time.monotonic() - started < 1.0 + 0.1 + 1.0
        finally:
            await holder.close()

    asyncio.run(body())
