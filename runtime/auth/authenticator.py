"""Account security layer: the login check (lockout, argon2id verify, status gate, hash upgrade)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from runtime.auth.lockout import Lock, LoginLimiter
from runtime.auth.passwords import PasswordHasher
from runtime.storage.models import Credentials, UserStatus


class CredentialStore(Protocol):
    """What the authenticator needs from storage (runtime.storage.Storage satisfies it)."""

    async def get_credentials(self, login_name: str) -> Credentials | None: ...

    async def set_password_hash(self, user_id: int, password_hash: str) -> None: ...


class LoginOutcome(Enum):
    """The result of a login attempt; services map it to TeamTalk's result code and text."""

    OK = "ok"
    BAD_CREDENTIALS = "bad credentials"  # unknown user and wrong password look the same
    LOCKED_USER = "too many failed logins for this user; try again later"
    LOCKED_ADDRESS = "too many failed logins from this address; try again later"
    DISABLED = "account may not log in"


@dataclass(frozen=True)
class LoginResult:
    """Outcome and, on success, the user id."""

    outcome: LoginOutcome
    user_id: int | None = None

    @property
    def ok(self) -> bool:
        """Whether the login succeeded."""
        return self.outcome is LoginOutcome.OK


class Authenticator:
    """Checks wire passwords against storage; argon2 work runs off the event loop."""

    def __init__(
        self,
        store: CredentialStore,
        hasher: PasswordHasher | None = None,
        limiter: LoginLimiter | None = None,
        allowed_statuses: Collection[int] = (int(UserStatus.NORMAL),),
    ) -> None:
        """`allowed_statuses`: employment statuses that may log in (TeamTalk: 0 only)."""
        self._store = store
        self.hasher = hasher or PasswordHasher()
        self.limiter = limiter or LoginLimiter()
        self._allowed = frozenset(allowed_statuses)

    async def authenticate(self, login_name: str, wire_password: str, address: str) -> LoginResult:
        """Check one login attempt from a client address."""
        lock = self.limiter.check(login_name, address)
        if lock is Lock.ADDRESS:
            return LoginResult(LoginOutcome.LOCKED_ADDRESS)
        if lock is Lock.USER:
            return LoginResult(LoginOutcome.LOCKED_USER)
        creds = await self._store.get_credentials(login_name)
        if creds is None:
            await asyncio.to_thread(self.hasher.verify_dummy, wire_password)
            matched = False
        else:
            matched = await asyncio.to_thread(self.hasher.verify_wire, creds.password_hash, wire_password)
        if not matched or creds is None:
            self.limiter.record_failure(login_name, address)
            return LoginResult(LoginOutcome.BAD_CREDENTIALS)
        if creds.status not in self._allowed:
            return LoginResult(LoginOutcome.DISABLED)
        self.limiter.record_success(login_name)
        if self.hasher.needs_rehash(creds.password_hash):
            new_hash = await asyncio.to_thread(self.hasher.hash_wire, wire_password)
            await self._store.set_password_hash(creds.user_id, new_hash)
        return LoginResult(LoginOutcome.OK, creds.user_id)
