"""Account security layer: argon2id password hashes over the legacy MD5 wire password, and the hash policy.

TeamTalk clients send MD5hex(plaintext). We store argon2id(MD5hex(plaintext)), so legacy clients still log in
while the database holds nothing an attacker could replay on the wire (the MD5 value is never stored).

The policy defaults to OWASP's argon2id baseline (19 MiB, t=2, p=1). A stored hash is re-hashed after a login
only when the configured policy is *stronger* than the stored hash's parameters (more memory, more passes, a
longer hash or salt): a stored hash made with stronger parameters is kept, never weakened, and a hash that
already meets the policy is never rewritten, so every hash is upgraded at most once per policy change.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from argon2 import Parameters, Type, extract_parameters
from argon2 import PasswordHasher as _Argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HEX = frozenset(string.hexdigits)
MAX_WIRE_PASSWORD = 1024  # longer inputs are refused before hashing (argon2 cost must not be attacker-driven)
MAX_PLAIN_PASSWORD = 256  # UTF-8 bytes of a password sent itself (IMPasswordLoginReq), before its MD5 hex
MIN_MEMORY_KIB, MAX_MEMORY_KIB = 1024, 4 * 1024 * 1024
MAX_TIME_COST, MAX_PARALLELISM = 64, 64


class PolicyError(ValueError):
    """A configured hash policy is out of range."""


@dataclass(frozen=True)
class HashPolicy:
    """argon2id parameters for new hashes (`memory_cost` in KiB). Defaults: OWASP's baseline."""

    time_cost: int = 2
    memory_cost: int = 19456
    parallelism: int = 1
    hash_len: int = 32
    salt_len: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.time_cost <= MAX_TIME_COST:
            raise PolicyError(f"time_cost must be 1..{MAX_TIME_COST}, got {self.time_cost}")
        if not 1 <= self.parallelism <= MAX_PARALLELISM:
            raise PolicyError(f"parallelism must be 1..{MAX_PARALLELISM}, got {self.parallelism}")
        if not max(MIN_MEMORY_KIB, 8 * self.parallelism) <= self.memory_cost <= MAX_MEMORY_KIB:
            raise PolicyError(
                f"memory_cost must be {max(MIN_MEMORY_KIB, 8 * self.parallelism)}..{MAX_MEMORY_KIB} KiB, "
                f"got {self.memory_cost}"
            )
        if not 16 <= self.hash_len <= 64 or not 16 <= self.salt_len <= 64:
            raise PolicyError("hash_len and salt_len must be 16..64 bytes")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> HashPolicy:
        """The policy of a `biz.auth` config section (keys `time_cost`, `memory_cost`, `parallelism`)."""
        config = config or {}
        args: dict[str, int] = {}
        for key in ("time_cost", "memory_cost", "parallelism"):
            if key in config:
                value = config[key]
                if isinstance(value, bool) or not isinstance(value, int | str):
                    raise PolicyError(f"{key} must be an integer, got {value!r}")
                try:
                    args[key] = int(value)
                except ValueError:
                    raise PolicyError(f"{key} must be an integer, got {value!r}") from None
        return cls(**args)

    def weaker_than_me(self, stored: Parameters) -> bool:
        """Whether a stored hash's parameters are weaker than this policy in any dimension an attacker pays
        for (parallelism is not one: it splits the same work into lanes)."""
        return (
            stored.type is not Type.ID
            or stored.version < 0x13
            or stored.memory_cost < self.memory_cost
            or stored.time_cost < self.time_cost
            or stored.hash_len < self.hash_len
            or stored.salt_len < self.salt_len
        )


def cluster_hash_policy(cluster_config: Mapping[str, Any]) -> HashPolicy:
    """The policy the cluster's biz service uses (`services.biz.auth`), for tools that create hashes (admin,
    demo, seeding) so that what they store never needs a re-hash at the first login."""
    services = cluster_config.get("services")
    biz = services.get("biz") if isinstance(services, Mapping) else None
    auth = biz.get("auth") if isinstance(biz, Mapping) else None
    return HashPolicy.from_config(auth if isinstance(auth, Mapping) else None)


# `services.biz.auth.md5_login`: where a login with TeamTalk's MD5-hex credential is accepted. The MD5 hex
# of the password is a password equivalent: whoever captures it (a clear-text TeamTalk login, a fake server)
# logs in with it. Our clients log in with the password itself inside the secure session
# (CID_EXT_PASSWORD_LOGIN_REQ) and never send it. "allow": everywhere (TeamTalk's behaviour, the default);
# "secure_only": only inside a secure session (nothing to capture off the wire; original TeamTalk clients,
# which never open one, are refused); "refuse": nowhere (a harvested MD5 value is worthless; only our
# clients and tickets log in).
MD5_LOGIN_POLICIES = ("allow", "secure_only", "refuse")


def md5_login_policy(cluster_config: Mapping[str, Any]) -> str:
    """The cluster's `services.biz.auth.md5_login` (default "allow"); PolicyError names a bad value."""
    services = cluster_config.get("services")
    biz = services.get("biz") if isinstance(services, Mapping) else None
    auth = biz.get("auth") if isinstance(biz, Mapping) else None
    value = auth.get("md5_login", "allow") if isinstance(auth, Mapping) else "allow"
    if value not in MD5_LOGIN_POLICIES:
        raise PolicyError(
            f"services.biz.auth.md5_login must be one of {', '.join(MD5_LOGIN_POLICIES)} (got {value!r})"
        )
    return str(value)


def wire_password(plaintext: str) -> str:
    """What a TeamTalk client sends for a password: MD5 hex of the UTF-8 plaintext."""
    return hashlib.md5(plaintext.encode("utf-8"), usedforsecurity=False).hexdigest()


def normalize_wire(wire: str) -> str:
    """A 32-hex-digit MD5 value is compared case-insensitively; anything else is taken as given."""
    if len(wire) == 32 and all(ch in _HEX for ch in wire):
        return wire.lower()
    return wire


class PasswordHasher:
    """argon2id hashing and verification of wire passwords under a `HashPolicy`."""

    def __init__(
        self,
        time_cost: int | None = None,
        memory_cost: int | None = None,
        parallelism: int | None = None,
        *,
        policy: HashPolicy | None = None,
    ) -> None:
        """Either a policy, or single parameters over the default policy (kept for callers and tests)."""
        if policy is None:
            base = HashPolicy()
            policy = HashPolicy(
                time_cost=base.time_cost if time_cost is None else time_cost,
                memory_cost=base.memory_cost if memory_cost is None else memory_cost,
                parallelism=base.parallelism if parallelism is None else parallelism,
            )
        self.policy = policy
        self._argon = _Argon2(
            time_cost=policy.time_cost,
            memory_cost=policy.memory_cost,
            parallelism=policy.parallelism,
            hash_len=policy.hash_len,
            salt_len=policy.salt_len,
            type=Type.ID,
        )
        # Verifying against this costs the same as a real hash, so unknown users take as long as known ones.
        self._dummy = self._argon.hash("ttgen-dummy-password-for-unknown-users")

    def hash_wire(self, wire: str) -> str:
        """The argon2id hash to store for a wire password (MD5hex of the plaintext)."""
        if len(wire) > MAX_WIRE_PASSWORD:
            raise ValueError("wire password too long")
        return self._argon.hash(normalize_wire(wire))

    def hash_plaintext(self, plaintext: str) -> str:
        """The hash to store for a plaintext password (admin tools): argon2id(MD5hex(plaintext))."""
        return self.hash_wire(wire_password(plaintext))

    def verify_wire(self, stored_hash: str, wire: str) -> bool:
        """Whether the wire password matches the stored hash; a malformed hash or input is a mismatch."""
        if len(wire) > MAX_WIRE_PASSWORD or not stored_hash:
            self.verify_dummy(wire[:MAX_WIRE_PASSWORD])
            return False
        try:
            return self._argon.verify(stored_hash, normalize_wire(wire))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, wire: str) -> None:
        """Spend one verification's time and memory, for an unknown user; always fails."""
        try:
            self._argon.verify(self._dummy, "x" + normalize_wire(wire))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            pass

    def needs_rehash(self, stored_hash: str) -> bool:
        """Whether the stored hash is weaker than the policy (upgrade it after a successful login). A hash
        made with stronger or merely different-but-not-weaker parameters is left alone."""
        try:
            stored = extract_parameters(stored_hash)
        except (InvalidHashError, ValueError):
            return True
        return self.policy.weaker_than_me(stored)
