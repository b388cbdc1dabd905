"""Account security layer: argon2id password hashing over the legacy MD5 wire value (policy, bounded verify
pool), login lockout, and resumption tickets (runtime.auth.tickets)."""

from runtime.auth.authenticator import Authenticator, CredentialStore, LoginOutcome, LoginResult
from runtime.auth.lockout import Lock, LockoutPolicy, LoginLimiter
from runtime.auth.passwords import (
    MD5_LOGIN_POLICIES,
    HashPolicy,
    PasswordHasher,
    PolicyError,
    cluster_hash_policy,
    md5_login_policy,
    normalize_wire,
    wire_password,
)
from runtime.auth.pool import PoolBusy, VerifyPool

__all__ = [
    "MD5_LOGIN_POLICIES",
    "Authenticator",
    "CredentialStore",
    "HashPolicy",
    "Lock",
    "LockoutPolicy",
    "LoginLimiter",
    "LoginOutcome",
    "LoginResult",
    "PasswordHasher",
    "PolicyError",
    "PoolBusy",
    "VerifyPool",
    "cluster_hash_policy",
    "md5_login_policy",
    "normalize_wire",
    "wire_password",
]
