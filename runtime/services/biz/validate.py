"""Runtime services layer (biz): login validation over runtime.auth, mapped to TeamTalk result codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.auth import Authenticator, LockoutPolicy, LoginLimiter, LoginOutcome, PasswordHasher
from runtime.services.links import ResultCode
from runtime.storage.base import Storage
from runtime.storage.models import User

_CODES: dict[LoginOutcome, ResultCode] = {
    LoginOutcome.OK: ResultCode.OK,
    LoginOutcome.BAD_CREDENTIALS: ResultCode.DB_VALIDATE_FAILED,
    LoginOutcome.LOCKED_USER: ResultCode.LOCKED_OUT,
    LoginOutcome.LOCKED_ADDRESS: ResultCode.LOCKED_OUT,
    LoginOutcome.DISABLED: ResultCode.DB_VALIDATE_FAILED,
}


class Validator:
    """Checks a login and loads the user's profile. Config keys (`biz.auth`): `max_user_failures`,
    `max_address_failures`, `window` (seconds), `time_cost`, `memory_cost`, `parallelism` (argon2id)."""

    def __init__(self, storage: Storage, config: Mapping[str, Any]) -> None:
        self.storage = storage
        policy = LockoutPolicy(
            max_user_failures=int(config.get("max_user_failures", 10)),
            max_address_failures=int(config.get("max_address_failures", 50)),
            window=float(config.get("window", 30 * 60)),
        )
        hasher_args = {k: int(config[k]) for k in ("time_cost", "memory_cost", "parallelism") if k in config}
        self.hasher = PasswordHasher(**hasher_args)
        self.authenticator = Authenticator(storage, self.hasher, LoginLimiter(policy))

    async def validate(
        self, login_name: str, wire_password: str, address: str
    ) -> tuple[int, str, User | None]:
        """(result code, text, user on success)."""
        result = await self.authenticator.authenticate(login_name, wire_password, address)
        code = _CODES[result.outcome]
        if not result.ok or result.user_id is None:
            return int(code), result.outcome.value, None
        users = await self.storage.get_users([result.user_id])
        if not users:
            return int(ResultCode.UNKNOWN_USER), "unknown user", None
        return int(ResultCode.OK), "", users[0]
