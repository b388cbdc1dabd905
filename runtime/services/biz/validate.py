"""Runtime services layer (biz): login validation over runtime.auth, mapped to TeamTalk result codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.auth import (
    MD5_LOGIN_POLICIES,
    Authenticator,
    HashPolicy,
    LockoutPolicy,
    LoginLimiter,
    LoginOutcome,
    PasswordHasher,
    PolicyError,
    VerifyPool,
)
from runtime.monitor.metrics import Metrics
from runtime.services.contracts import ResultCode
from runtime.storage.base import Storage
from runtime.storage.models import User

_CODES: dict[LoginOutcome, ResultCode] = {
    LoginOutcome.OK: ResultCode.OK,
    LoginOutcome.BAD_CREDENTIALS: ResultCode.DB_VALIDATE_FAILED,
    LoginOutcome.LOCKED_USER: ResultCode.LOCKED_OUT,
    LoginOutcome.LOCKED_ADDRESS: ResultCode.LOCKED_OUT,
    LoginOutcome.DISABLED: ResultCode.DB_VALIDATE_FAILED,
    # TeamTalk's "server full": clients wait and try again, which is what a saturated verify pool needs.
    LoginOutcome.BUSY: ResultCode.MSG_SERVER_FULL,
}


class Validator:
    """Checks a login and loads the user's profile. Config keys (`biz.auth`): lockout (runtime.auth.lockout,
    counters persisted in storage) `pair_free_failures` (5), `address_free_failures` (50),
    `user_free_failures` (20), `base_delay` (1 s), `max_delay` (900 s), `window` (1800 s), `known_days` (90);
    `time_cost`, `memory_cost` (KiB), `parallelism` (argon2id policy, default OWASP's 2 / 19456 / 1),
    `verify_workers` (default: the cores), `verify_queue` (waiting verifications beyond which logins are
    answered busy, default 32 per worker), `max_pending_per_address` (verifications one client address may
    have waiting or running, default 16); `md5_login` (allow | secure_only | refuse: where TeamTalk's MD5-hex
    login is accepted, read by msg and the gateway: runtime.auth.passwords.MD5_LOGIN_POLICIES)."""

    def __init__(self, storage: Storage, config: Mapping[str, Any]) -> None:
        self.storage = storage
        if config.get("md5_login", "allow") not in MD5_LOGIN_POLICIES:
            raise PolicyError(
                f"md5_login must be one of {', '.join(MD5_LOGIN_POLICIES)} (got {config.get('md5_login')!r})"
            )
        policy = LockoutPolicy(
            pair_free=int(config.get("pair_free_failures", 5)),
            address_free=int(config.get("address_free_failures", 50)),
            user_free=int(config.get("user_free_failures", 20)),
            base_delay=float(config.get("base_delay", 1.0)),
            max_delay=float(config.get("max_delay", 15 * 60)),
            window=float(config.get("window", 30 * 60)),
            known_for=float(config.get("known_days", 90)) * 24 * 3600,
        )
        self.hasher = PasswordHasher(policy=HashPolicy.from_config(config))
        workers = config.get("verify_workers")
        queue = config.get("verify_queue")
        self.pool = VerifyPool(
            int(workers) if workers is not None else None, int(queue) if queue is not None else None
        )
        self.authenticator = Authenticator(
            storage,
            self.hasher,
            LoginLimiter(policy, storage),
            pool=self.pool,
            max_pending_per_address=int(config.get("max_pending_per_address", 16)),
        )
        self._m_busy: Any = None
        self._m_rehash: Any = None

    def bind_metrics(self, metrics: Metrics) -> None:
        """Publish the verify pool's figures with the service's metrics."""
        self._m_busy = metrics.counter("biz_logins_busy_total", "password logins answered busy (pool full)")
        self._m_rehash = metrics.counter("biz_password_rehash_total", "stored hashes upgraded to the policy")
        self._g_capacity = metrics.gauge("biz_verify_capacity", "verifications per second the pool sustains")
        self._g_pending = metrics.gauge("biz_verify_pending", "password verifications running or waiting")

    def pool_report(self) -> dict[str, Any]:
        """The verify pool's state, for health."""
        p = self.pool
        return {
            "workers": p.workers,
            "pending": p.pending,
            "max_queue": p.max_queue,
            "capacity_per_s": round(p.capacity_per_second, 1),
            "refused": p.refused,
        }

    def close(self) -> None:
        """Stop the pool's threads."""
        self.pool.close()

    async def validate(
        self, login_name: str, wire_password: str, address: str
    ) -> tuple[int, str, User | None]:
        """(result code, text, user on success)."""
        rehashes = self.authenticator.rehashes
        result = await self.authenticator.authenticate(login_name, wire_password, address)
        if self._m_busy is not None:
            if result.outcome is LoginOutcome.BUSY:
                self._m_busy.inc()
            self._m_rehash.inc(self.authenticator.rehashes - rehashes)
            self._g_capacity.set(self.pool.capacity_per_second)
            self._g_pending.set(self.pool.pending)
        code = _CODES[result.outcome]
        if not result.ok or result.user_id is None:
            return int(code), result.outcome.value, None
        users = await self.storage.get_users([result.user_id])
        if not users:
            return int(ResultCode.UNKNOWN_USER), "unknown user", None
        return int(ResultCode.OK), "", users[0]
