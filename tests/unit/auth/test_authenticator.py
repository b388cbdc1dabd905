"""The login check against a real SQLite store: results, lockout, dummy hashing, status gate, rehash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from runtime.auth import (
    Authenticator,
    LockoutPolicy,
    LoginLimiter,
    LoginOutcome,
    PasswordHasher,
    wire_password,
)
from runtime.storage import NewUser, UserStatus
from runtime.storage.sqlite import SqliteStorage

FAST = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}


class CountingHasher(PasswordHasher):
    """Counts dummy verifications, to show unknown users cost a hash too."""

    dummies = 0

    def verify_dummy(self, wire: str) -> None:
        self.dummies += 1
        super().verify_dummy(wire)


def test_login_flow(tmp_path: Path) -> None:
    hasher = CountingHasher(**FAST)

    async def body() -> None:
        async with SqliteStorage(tmp_path) as store:
            user = await store.create_user(NewUser("alice", password_hash=hasher.hash_plaintext("pw")))
            await store.create_user(
                NewUser("gone", password_hash=hasher.hash_plaintext("pw"), status=UserStatus.LEFT)
            )
            auth = Authenticator(store, hasher, LoginLimiter(LockoutPolicy(pair_free=3)))
            ok = await auth.authenticate("alice", wire_password("pw"), "1.2.3.4")
            assert ok.ok and ok.user_id == user.id
            bad = await auth.authenticate("alice", wire_password("nope"), "1.2.3.4")
            assert (bad.outcome, bad.user_id) == (LoginOutcome.BAD_CREDENTIALS, None)
            unknown = await auth.authenticate("mallory", wire_password("pw"), "1.2.3.4")
            assert unknown.outcome is LoginOutcome.BAD_CREDENTIALS  # same answer as a wrong password
            assert hasher.dummies == 1
            sqli = await auth.authenticate("' OR '1'='1' --", "x", "1.2.3.4")
            assert sqli.outcome is LoginOutcome.BAD_CREDENTIALS
            assert (
                await auth.authenticate("gone", wire_password("pw"), "1.2.3.4")
            ).outcome is LoginOutcome.DISABLED

    asyncio.run(body())


def test_lockout_backs_off_strangers_and_a_known_device_still_logs_in(tmp_path: Path) -> None:
    async def body() -> None:
        hasher = PasswordHasher(**FAST)
        async with SqliteStorage(tmp_path) as store:
            await store.create_user(NewUser("alice", password_hash=hasher.hash_plaintext("pw")))
            policy = LockoutPolicy(pair_free=3, user_free=5, address_free=4, base_delay=60)
            limiter = LoginLimiter(policy, store)
            auth = Authenticator(store, hasher, limiter)
            assert (await auth.authenticate("alice", wire_password("pw"), "192.168.1.20")).ok  # her laptop
            for _ in range(3):
                await auth.authenticate("alice", "wrong", "1.1.1.1")
            assert (await auth.authenticate("alice", wire_password("pw"), "1.1.1.1")).ok  # 3 free failures
            assert (await limiter.failures("alice", "1.1.1.1"))["pair"] == 0
            # a stranger's botnet: wrong passwords from many addresses, and a sprayer behind her NAT
            for i in range(12):
                await auth.authenticate("alice", "wrong", f"10.0.0.{i}")
            for name in ("bob", "carol", "dave", "erin", "frank"):
                await auth.authenticate(name, "wrong", "192.168.1.20")
            stranger = await auth.authenticate("alice", wire_password("pw"), "10.9.9.9")
            assert stranger.outcome is LoginOutcome.LOCKED_USER and stranger.retry_after > 0
            assert (await auth.authenticate("zed", wire_password("pw"), "192.168.1.20")).outcome is (
                LoginOutcome.LOCKED_ADDRESS
            )
            owner = await auth.authenticate("alice", wire_password("pw"), "192.168.1.20")
            assert owner.ok  # her known device is not blocked by the stranger's failures
        async with SqliteStorage(tmp_path) as store:  # a restart forgets nothing
            auth = Authenticator(store, hasher, LoginLimiter(policy, store))
            again = await auth.authenticate("alice", wire_password("pw"), "10.9.9.9")
            assert again.outcome is LoginOutcome.LOCKED_USER
            assert (await auth.authenticate("alice", wire_password("pw"), "192.168.1.20")).ok

    asyncio.run(body())


def test_hash_upgraded_after_login(tmp_path: Path) -> None:
    async def body() -> None:
        old = PasswordHasher(**FAST)
        new = PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1)
        async with SqliteStorage(tmp_path) as store:
            await store.create_user(NewUser("alice", password_hash=old.hash_plaintext("pw")))
            assert (await Authenticator(store, new).authenticate("alice", wire_password("pw"), "1.1.1.1")).ok
            creds = await store.get_credentials("alice")
            assert creds is not None and not new.needs_rehash(creds.password_hash)
            assert new.verify_wire(creds.password_hash, wire_password("pw"))

    asyncio.run(body())


def test_guesses_sent_all_at_once_from_many_addresses_meet_the_per_login_limit(tmp_path: Path) -> None:
    async def body() -> None:
        hasher = PasswordHasher(**FAST)
        async with SqliteStorage(tmp_path) as store:
            await store.create_user(NewUser("alice", password_hash=hasher.hash_plaintext("pw")))
            limiter = LoginLimiter(LockoutPolicy(user_free=5, base_delay=60), store)
            auth = Authenticator(store, hasher, limiter)
            assert (await auth.authenticate("alice", wire_password("pw"), "192.168.1.20")).ok
            results = await asyncio.gather(
                *(auth.authenticate("alice", "wrong", f"10.0.0.{i}") for i in range(40))
            )
            outcomes = [r.outcome for r in results]
            # at most the free failures (and those already racing) are verified; the rest are refused unhashed
            assert outcomes.count(LoginOutcome.LOCKED_USER) >= 30, outcomes
            assert (await auth.authenticate("alice", wire_password("pw"), "192.168.1.20")).ok
            assert limiter._inflight == {}

    asyncio.run(body())
