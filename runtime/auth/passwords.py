"""Account security layer: argon2id password hashes over the legacy MD5 wire password.

TeamTalk clients send MD5hex(plaintext). We store argon2id(MD5hex(plaintext)), so legacy clients still log in
while the database holds nothing an attacker could replay on the wire (the MD5 value is never stored).
"""

from __future__ import annotations

import hashlib
import string

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_HEX = frozenset(string.hexdigits)
MAX_WIRE_PASSWORD = 1024  # longer inputs are refused before hashing (argon2 cost must not be attacker-driven)


def wire_password(plaintext: str) -> str:
    """What a TeamTalk client sends for a password: MD5 hex of the UTF-8 plaintext."""
    return hashlib.md5(plaintext.encode("utf-8"), usedforsecurity=False).hexdigest()


def normalize_wire(wire: str) -> str:
    """A 32-hex-digit MD5 value is compared case-insensitively; anything else is taken as given."""
    if len(wire) == 32 and all(ch in _HEX for ch in wire):
        return wire.lower()
    return wire


class PasswordHasher:
    """argon2id hashing and verification of wire passwords (RFC 9106 defaults unless configured)."""

    def __init__(self, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4) -> None:
        self._argon = _Argon2(
            time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism, type=Type.ID
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
        """Whether the stored hash used other parameters than this hasher (upgrade it after a login)."""
        try:
            return self._argon.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True
