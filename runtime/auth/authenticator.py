"""Account security layer: the login check (lockout, argon2id verify in a bounded pool, status gate)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from runtime.auth.lockout import Lock, LoginLimiter
from runtime.auth.passwords import PasswordHasher
from runtime.auth.pool import PoolBusy, VerifyPool
from runtime.storage.models import Credentials, UserStatus


class CredentialStore(Protocol):
    """What the authenticator needs from storage (runtime.storage.Storage satisfies it)."""

    async def get_credentials(self, login_name: str) -> Credentials | None: ...

    async def set_password_hash(self, user_id: int, password_hash: str) -> None: ...


class LoginOutcome(Enum):
    """The result of a login attempt; services map it to TeamTalk's result code and text."""

    OK = "ok"
    BAD_CREDENTIALS = "bad credentials"  # unknown user and wrong password look the same
    LOCKED_USER = "too many failed logins for this user from here; try again later"
    LOCKED_ADDRESS = "too many failed logins from this address; try again later"
    DISABLED = "account may not log in"
    BUSY = "login busy; try again later"


@dataclass(frozen=True)
class LoginResult:
    """Outcome and, on success, the user id and the stored hash (for ticket binding)."""

    outcome: LoginOutcome
    user_id: int | None = None
    password_hash: str = ""
    retry_after: float = 0.0  # locked: seconds until an attempt is checked again

    @property
    def ok(self) -> bool:
        """Whether the login succeeded."""
        return self.outcome is LoginOutcome.OK


class Authenticator:
    """Checks wire passwords against storage; argon2 work runs in a bounded pool off the event loop.

    `max_pending_per_address` caps the verifications one client address may have waiting or running while
    the pool is congested (half of its places taken), so one address flooding logins meets BUSY while other
    addresses still get their turn; with room to spare, a burst from one address (a whole office behind one
    NAT after an outage) is not refused."""

    def __init__(
        self,
        store: CredentialStore,
        hasher: PasswordHasher | None = None,
        limiter: LoginLimiter | None = None,
        allowed_statuses: Collection[int] = (int(UserStatus.NORMAL),),
        pool: VerifyPool | None = None,
        max_pending_per_address: int = 16,
    ) -> None:
        """`allowed_statuses`: employment statuses that may log in (TeamTalk: 0 only)."""
        self._store = store
        self.hasher = hasher or PasswordHasher()
        self.limiter = limiter or LoginLimiter()
        self.pool = pool or VerifyPool()
        self.max_pending_per_address = max(1, max_pending_per_address)
        self._allowed = frozenset(allowed_statuses)
        self._per_address: dict[str, int] = {}
        self._pending = 0  # attempts between the lockout check and the end of their verification
        self._upgrading: set[int] = set()  # user ids whose hash is being re-hashed right now
        self.rehashes = 0

    async def authenticate(self, login_name: str, wire_password: str, address: str) -> LoginResult:
        """Check one login attempt from a client address."""
        self.limiter.enter(login_name)
        try:
            return await self._authenticate(login_name, wire_password, address)
        finally:
            self.limiter.leave(login_name)

    async def _authenticate(self, login_name: str, wire_password: str, address: str) -> LoginResult:
        refusal = await self.limiter.check(login_name, address)
        if refusal is not None:
            locked = LoginOutcome.LOCKED_ADDRESS if refusal.lock is Lock.ADDRESS else LoginOutcome.LOCKED_USER
            return LoginResult(locked, retry_after=refusal.retry_after)
        if self._per_address.get(address, 0) >= self.max_pending_per_address and self._congested():
            return LoginResult(LoginOutcome.BUSY)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._pending += 1
        try:
            creds = await self._store.get_credentials(login_name)
            if creds is None:
                await self.pool.run(self.hasher.verify_dummy, wire_password)
                matched = False
            else:
                matched = await self.pool.run(self.hasher.verify_wire, creds.password_hash, wire_password)
        except PoolBusy:
            return LoginResult(LoginOutcome.BUSY)  # not a failure: no lockout count
        finally:
            self._pending -= 1
            left = self._per_address[address] - 1
            if left:
                self._per_address[address] = left
            else:
                del self._per_address[address]
        if not matched or creds is None:
            await self.limiter.record_failure(login_name, address)
            return LoginResult(LoginOutcome.BAD_CREDENTIALS)
        if creds.status not in self._allowed:
            return LoginResult(LoginOutcome.DISABLED)
        await self.limiter.record_success(login_name, address)
        stored = await self._upgrade(login_name, creds, wire_password)
        return LoginResult(LoginOutcome.OK, creds.user_id, stored)

    def _congested(self) -> bool:
        """Whether half of the pool's places (running plus waiting) are spoken for."""
        return 2 * self._pending >= self.pool.workers + self.pool.max_queue

    async def _upgrade(self, login_name: str, creds: Credentials, wire_password: str) -> str:
        """Re-hash once if the stored hash is weaker than the policy; returns the hash now stored. Concurrent
        logins of one user upgrade once (the stored hash is read again before writing: a login that read it
        before another one's upgrade sees the upgraded hash); a saturated pool skips the upgrade (the next
        login does it)."""
        if not self.hasher.needs_rehash(creds.password_hash) or creds.user_id in self._upgrading:
            return creds.password_hash
        self._upgrading.add(creds.user_id)
        try:
            current = await self._store.get_credentials(login_name)
            if current is None or current.password_hash != creds.password_hash:
                return current.password_hash if current is not None else creds.password_hash
            new_hash = await self.pool.run(self.hasher.hash_wire, wire_password)
            await self._store.set_password_hash(creds.user_id, new_hash)
            self.rehashes += 1
            return new_hash
        except PoolBusy:
            return creds.password_hash
        finally:
            self._upgrading.discard(creds.user_id)
