"""Lockout: exponential back-off per (login, address), per address and per login from unknown addresses; known
devices exempt from strangers' failures; counters persisted: tests/unit/storage/test_lockout_counters.py."""

from __future__ import annotations

import asyncio

from runtime.auth import Lock, LockoutPolicy, LoginLimiter
from runtime.auth.lockout import MemoryFailureStore, key


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_back_off_doubles_after_the_free_failures_and_never_locks_for_good() -> None:
    policy = LockoutPolicy(pair_free=3, base_delay=2.0, max_delay=60.0)
    assert [policy.delay(n, 3) for n in range(1, 10)] == [0, 0, 0, 2, 4, 8, 16, 32, 60]

    async def body() -> None:
        clock = Clock()
        limiter = LoginLimiter(policy, clock=clock)
        for _ in range(3):
            assert await limiter.check("alice", "10.0.0.1") is None
            await limiter.record_failure("alice", "10.0.0.1")
        assert await limiter.check("alice", "10.0.0.1") is None  # 3 free failures
        await limiter.record_failure("alice", "10.0.0.1")
        refusal = await limiter.check("alice", "10.0.0.1")
        assert refusal is not None and refusal.lock is Lock.USER and refusal.retry_after == 2.0
        assert await limiter.check("alice", "10.0.0.2") is None  # another address: its own pair counter
        clock.now += 2.0
        assert await limiter.check("alice", "10.0.0.1") is None  # the back-off ended
        await limiter.record_failure("alice", "10.0.0.1")
        refusal = await limiter.check("alice", "10.0.0.1")
        assert refusal is not None and refusal.retry_after == 4.0
        clock.now += policy.window + 1  # the counter forgets
        assert await limiter.check("alice", "10.0.0.1") is None
        await limiter.record_failure("alice", "10.0.0.1")
        assert (await limiter.failures("alice", "10.0.0.1"))["pair"] == 1

    run(body())


def test_one_address_spraying_many_logins_backs_off_that_address_only() -> None:
    async def body() -> None:
        limiter = LoginLimiter(LockoutPolicy(address_free=5), clock=Clock())
        for i in range(6):
            await limiter.record_failure(f"user{i}", "6.6.6.6")
        refusal = await limiter.check("someone-else", "6.6.6.6")
        assert refusal is not None and refusal.lock is Lock.ADDRESS
        assert await limiter.check("someone-else", "7.7.7.7") is None

    run(body())


def test_many_addresses_guessing_one_login_back_off_strangers_but_not_its_known_device() -> None:
    async def body() -> None:
        clock = Clock()
        limiter = LoginLimiter(LockoutPolicy(user_free=10, address_free=3), clock=clock)
        await limiter.record_success("alice", "192.168.1.20")  # the owner's laptop, a week ago
        clock.now += 7 * 24 * 3600
        for i in range(40):  # a botnet: one guess per address
            await limiter.record_failure("alice", f"10.1.{i // 250}.{i % 250}")
        refusal = await limiter.check("alice", "10.9.9.9")
        assert refusal is not None and refusal.lock is Lock.USER  # a new stranger waits
        assert await limiter.check("alice", "192.168.1.20") is None  # the owner's device does not
        # a stranger behind the owner's NAT spraying other accounts does not stop the owner either
        for i in range(10):
            await limiter.record_failure(f"other{i}", "192.168.1.20")
        assert (await limiter.check("bob", "192.168.1.20")) is not None
        assert await limiter.check("alice", "192.168.1.20") is None

    run(body())


def test_success_clears_the_pair_counter_only() -> None:
    async def body() -> None:
        limiter = LoginLimiter(LockoutPolicy(pair_free=2, user_free=2), clock=Clock())
        for _ in range(2):
            await limiter.record_failure("alice", "1.1.1.1")
            await limiter.record_failure("alice", "2.2.2.2")
        await limiter.record_success("alice", "1.1.1.1")
        counts = await limiter.failures("alice", "1.1.1.1")
        assert counts == {"pair": 0, "user": 4, "address": 2}

    run(body())


def test_keys_hold_no_login_name_or_address_in_clear() -> None:
    k = key("p", "alice", "10.0.0.1")
    assert "alice" not in k and "10.0.0.1" not in k and k.startswith("p:") and len(k) <= 42
    assert key("p", "ali", "ce10.0.0.1") != key("p", "alice", "10.0.0.1")


def test_memory_store_is_bounded() -> None:
    async def body() -> None:
        store = MemoryFailureStore(max_keys=10)
        for i in range(50):
            await store.add_login_failure([f"a:{i}"], 1.0, 100.0)
        assert len(await store.login_failures([f"a:{i}" for i in range(50)], 0.0)) == 10

    run(body())
