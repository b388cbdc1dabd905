"""Storage: the login lockout's counters and known devices (runtime.auth.lockout) persist across a restart, on
both backends; idle rows are pruned; bad keys are refused and change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.auth import LockoutPolicy, LoginLimiter
from runtime.storage.errors import InvalidArgument


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_counters_and_known_devices_survive_a_restart(make_store: Callable[..., Any], tmp_path: Path) -> None:
    async def body() -> None:
        clock = Clock()
        policy = LockoutPolicy(pair_free=2, user_free=5)
        async with make_store(data_dir=tmp_path / "one") as store:
            limiter = LoginLimiter(policy, store, clock=clock)
            await limiter.record_success("alice", "192.168.1.20")
            for _ in range(3):
                await limiter.record_failure("alice", "10.0.0.1")
            assert await limiter.check("alice", "10.0.0.1") is not None
        async with make_store(data_dir=tmp_path / "one") as store:
            limiter = LoginLimiter(policy, store, clock=clock)
            assert await limiter.check("alice", "10.0.0.1") is not None  # not forgotten
            assert await limiter.known("alice", "192.168.1.20")
            assert (await limiter.failures("alice", "10.0.0.1")) == {"pair": 3, "address": 3, "user": 3}
            await limiter.record_success("alice", "10.0.0.1")
            assert await limiter.check("alice", "10.0.0.1") is None  # now a known device: its pair only
            clock.now += policy.window + 1
            await limiter.record_failure("bob", "10.0.0.1")  # the address counter restarts at 1
            assert (await limiter.failures("alice", "10.0.0.1"))["address"] == 1

    asyncio.run(body())


def test_bad_keys_are_refused_and_write_nothing(make_store: Callable[..., Any]) -> None:
    async def body() -> None:
        async with make_store() as store:
            for bad in ([""], ["x" * 81], [f"k{i}" for i in range(9)]):
                with pytest.raises(InvalidArgument):
                    await store.add_login_failure(bad, 1.0, 10.0)
            assert await store.login_failures(["k1", "x" * 80], 0.0) == {}
            await store.add_login_failure(["k1", "k1"], 5.0, 10.0)  # a key named twice counts once
            assert await store.login_failures(["k1"], 0.0) == {"k1": (1, 5.0)}

    asyncio.run(body())


def test_keys_are_parameters_never_sql(make_store: Callable[..., Any]) -> None:
    """The statements both backends share (runtime.storage.lockout_sql) carry keys as parameters only: keys
    full of SQL are stored, counted, cleared and remembered as the strings they are."""
    from runtime.storage import lockout_sql

    hostile = ["a'); DELETE FROM login_failures; --", 'b" OR 1=1 --', "$1::text[]", "c?"]
    for dialect in (lockout_sql.SQLITE, lockout_sql.POSTGRES):
        for sql in (
            lockout_sql.select_failures(dialect, hostile, 0.0)[0],
            lockout_sql.clear_failures(dialect, hostile)[0],
            lockout_sql.note_known(dialect, hostile[0], 0.0)[0],
            lockout_sql.is_known(dialect, hostile[0], 0.0)[0],
        ):
            assert not any(k in sql for k in hostile[:2]) and "c?" not in sql

    async def body() -> None:
        async with make_store() as store:
            await store.add_login_failure(["plain"], 5.0, 10.0)
            await store.add_login_failure(hostile, 6.0, 10.0)
            await store.add_login_failure(hostile[:1], 7.0, 10.0)
            got = await store.login_failures([*hostile, "plain"], 0.0)
            assert got == {hostile[0]: (2, 7.0), **{k: (1, 6.0) for k in hostile[1:]}, "plain": (1, 5.0)}
            await store.clear_login_failures(hostile[1:])
            assert await store.login_failures([*hostile, "plain"], 0.0) == {
                hostile[0]: (2, 7.0),
                "plain": (1, 5.0),
            }
            await store.note_known_login(hostile[2], 8.0, 100.0)
            assert await store.is_known_login(hostile[2], 8.0)
            assert not await store.is_known_login(hostile[3], 0.0)
            assert not await store.is_known_login(hostile[2], 9.0)

    asyncio.run(body())
