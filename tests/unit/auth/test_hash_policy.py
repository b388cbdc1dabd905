"""The hash policy: OWASP defaults, config parsing, and re-hashing only hashes weaker than the policy."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from argon2 import extract_parameters

from runtime.auth import (
    Authenticator,
    HashPolicy,
    PasswordHasher,
    PolicyError,
    PoolBusy,
    VerifyPool,
    cluster_hash_policy,
    wire_password,
)
from runtime.storage.models import Credentials

CHEAP = HashPolicy(time_cost=1, memory_cost=1024, parallelism=1)


def test_defaults_are_owasp_baseline() -> None:
    params = extract_parameters(PasswordHasher().hash_plaintext("pw"))
    assert (params.memory_cost, params.time_cost, params.parallelism) == (19456, 2, 1)
    assert HashPolicy() == HashPolicy(time_cost=2, memory_cost=19456, parallelism=1)


def test_policy_from_config_and_its_refusals() -> None:
    assert HashPolicy.from_config({"time_cost": "3", "memory_cost": 65536}) == HashPolicy(3, 65536, 1)
    assert HashPolicy.from_config(None) == HashPolicy()
    for bad in (
        {"time_cost": 0},
        {"memory_cost": 10},
        {"parallelism": 0},
        {"time_cost": True},
        {"time_cost": "x"},
    ):
        with pytest.raises(PolicyError):
            HashPolicy.from_config(bad)
    config = {"services": {"biz": {"auth": {"time_cost": 4, "max_user_failures": 3}}}}
    assert cluster_hash_policy(config) == HashPolicy(time_cost=4)
    assert cluster_hash_policy({}) == HashPolicy() == cluster_hash_policy({"services": {"biz": None}})


@pytest.mark.parametrize(
    ("stored", "rehash"),
    [
        (HashPolicy(1, 1024, 1), False),  # the policy itself
        (HashPolicy(2, 1024, 1), False),  # stronger in time
        (HashPolicy(1, 2048, 1), False),  # stronger in memory
        (HashPolicy(1, 1024, 2), False),  # other parallelism: not weaker
        (HashPolicy(1, 1024, 1, salt_len=32), False),
    ],
)
def test_stored_hash_not_weaker_is_kept(stored: HashPolicy, rehash: bool) -> None:
    digest = PasswordHasher(policy=stored).hash_plaintext("pw")
    assert PasswordHasher(policy=CHEAP).needs_rehash(digest) is rehash


def test_weaker_stored_hash_is_upgraded() -> None:
    policy = PasswordHasher(policy=HashPolicy(2, 2048, 1))
    for weaker in (HashPolicy(1, 2048, 1), HashPolicy(2, 1024, 1), HashPolicy(2, 2048, 1, hash_len=16)):
        assert policy.needs_rehash(PasswordHasher(policy=weaker).hash_plaintext("pw"))
    assert policy.needs_rehash("not a hash") and policy.needs_rehash(
        "$argon2i$v=19$m=4096,t=3,p=1$c2FsdHNhbHQ$aGFzaA"
    )


class Store:
    def __init__(self, digest: str) -> None:
        self.creds = Credentials(7, digest, 0)
        self.writes: list[str] = []

    async def get_credentials(self, login_name: str) -> Credentials | None:
        return self.creds if login_name == "alice" else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        self.writes.append(password_hash)
        self.creds = Credentials(user_id, password_hash, 0)


def test_login_upgrades_a_weaker_hash_once_and_never_downgrades() -> None:
    async def main() -> None:
        strong_policy = HashPolicy(2, 2048, 1)
        # Admin tools hashed with stronger parameters than biz's: no rewrite on any login.
        store = Store(PasswordHasher(policy=strong_policy).hash_plaintext("pw"))
        auth = Authenticator(store, PasswordHasher(policy=CHEAP), pool=VerifyPool(1))
        for _ in range(3):
            assert (await auth.authenticate("alice", wire_password("pw"), "a")).ok
        assert store.writes == []
        # A weaker stored hash: upgraded at the first login, untouched at the next ones, even concurrent.
        store = Store(PasswordHasher(policy=CHEAP).hash_plaintext("pw"))
        auth = Authenticator(store, PasswordHasher(policy=strong_policy), pool=VerifyPool(2))
        results = await asyncio.gather(
            *(auth.authenticate("alice", wire_password("pw"), "a") for _ in range(3))
        )
        assert all(r.ok for r in results)
        assert len(store.writes) == 1 and auth.rehashes == 1
        assert extract_parameters(store.writes[0]).time_cost == 2
        assert (await auth.authenticate("alice", wire_password("pw"), "a")).password_hash == store.writes[0]
        assert len(store.writes) == 1

    asyncio.run(main())


def test_pool_is_bounded_and_answers_busy() -> None:
    async def main() -> None:
        pool = VerifyPool(workers=1, max_queue=1)
        gate = asyncio.Event()
        loop = asyncio.get_running_loop()
        release = __import__("threading").Event()

        def block() -> int:
            loop.call_soon_threadsafe(gate.set)
            release.wait(5)
            return 1

        running = asyncio.ensure_future(pool.run(block))
        await gate.wait()
        waiting = asyncio.ensure_future(pool.run(lambda: 2))
        await asyncio.sleep(0)
        assert pool.pending == 2 and pool.occupancy == 1.0
        with pytest.raises(PoolBusy):
            await pool.run(lambda: 3)
        assert pool.refused == 1
        release.set()
        assert await running == 1 and await waiting == 2
        assert pool.pending == 0 and pool.capacity_per_second > 0
        pool.close()

    asyncio.run(main())


def test_one_address_flooding_gets_busy_when_congested_others_do_not() -> None:
    async def main() -> None:
        store = Store(PasswordHasher(policy=CHEAP).hash_plaintext("pw"))
        # Four places (1 worker + 3 waiting): congested from two pending attempts on.
        pool = VerifyPool(1, max_queue=3)
        auth = Authenticator(store, PasswordHasher(policy=CHEAP), pool=pool, max_pending_per_address=2)
        flood: list[Any] = [auth.authenticate("alice", wire_password("pw"), "10.0.0.1") for _ in range(6)]
        other = auth.authenticate("alice", wire_password("pw"), "10.0.0.2")
        results = await asyncio.gather(*flood, other)
        outcomes = [r.outcome.name for r in results]
        assert outcomes[:2] == ["OK", "OK"] and outcomes[2:6] == ["BUSY"] * 4 and outcomes[6] == "OK"
        assert (await auth.limiter.failures("alice", "10.0.0.1"))["pair"] == 0  # busy is not a failed login
        # Without congestion, a burst from one address above the cap is served.
        roomy = Authenticator(
            store, PasswordHasher(policy=CHEAP), pool=VerifyPool(1, max_queue=30), max_pending_per_address=2
        )
        burst = [roomy.authenticate("alice", wire_password("pw"), "10.0.0.1") for _ in range(6)]
        assert all(r.ok for r in await asyncio.gather(*burst))

    asyncio.run(main())
