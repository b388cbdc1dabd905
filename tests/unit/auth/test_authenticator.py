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
            auth = Authenticator(store, hasher, LoginLimiter(LockoutPolicy(max_user_failures=3)))
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


def test_lockout_and_success_reset(tmp_path: Path) -> None:
    async def body() -> None:
        hasher = PasswordHasher(**FAST)
        async with SqliteStorage(tmp_path) as store:
            await store.create_user(NewUser("alice", password_hash=hasher.hash_plaintext("pw")))
            limiter = LoginLimiter(LockoutPolicy(max_user_failures=3, max_address_failures=100))
            auth = Authenticator(store, hasher, limiter)
            for _ in range(3):
                await auth.authenticate("alice", "wrong", "1.1.1.1")
            assert (await auth.authenticate("alice", wire_password("pw"), "1.1.1.1")).ok  # 3 is not > 3
            assert limiter.failures("alice") == 0
            for _ in range(4):
                await auth.authenticate("alice", "wrong", "2.2.2.2")
            locked = await auth.authenticate("alice", wire_password("pw"), "3.3.3.3")
            assert locked.outcome is LoginOutcome.LOCKED_USER  # even the right password, from anywhere

            per_address = Authenticator(store, hasher, LoginLimiter(LockoutPolicy(max_address_failures=2)))
            for name in ("x", "y", "z"):
                await per_address.authenticate(name, "wrong", "9.9.9.9")
            assert (await per_address.authenticate("alice", wire_password("pw"), "9.9.9.9")).outcome is (
                LoginOutcome.LOCKED_ADDRESS
            )
            assert (await per_address.authenticate("alice", wire_password("pw"), "8.8.8.8")).ok

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
