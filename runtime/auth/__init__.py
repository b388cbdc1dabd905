"""Account security layer: argon2id password hashing over the legacy MD5 wire value, and login lockout."""

from runtime.auth.authenticator import Authenticator, CredentialStore, LoginOutcome, LoginResult
from runtime.auth.lockout import Lock, LockoutPolicy, LoginLimiter
from runtime.auth.passwords import PasswordHasher, normalize_wire, wire_password

__all__ = [
    "Authenticator",
    "CredentialStore",
    "Lock",
    "LockoutPolicy",
    "LoginLimiter",
    "LoginOutcome",
    "LoginResult",
    "PasswordHasher",
    "normalize_wire",
    "wire_password",
]
