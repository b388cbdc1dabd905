"""Runtime stage layer, store stage: the persistence policy storage consults (at-rest AEAD, retention)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.errors import IntegrityError
from runtime.stages.policy import choice, parse_duration

NONCE_BYTES = 12
AT_REST_VERSION = b"\x01"


class AtRestCipher:
    """AES-256-GCM for stored blobs: version byte || random 96-bit nonce || ciphertext+tag.

    Random nonces suit storage (many writers, no shared counter); the associated data binds a blob to its row
    (e.g. message id and session), so a ciphertext copied onto another row fails to open.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the at-rest key must be 32 bytes")
        self._aead = AESGCM(key)

    def encrypt(self, plaintext: bytes, ad: bytes = b"") -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return AT_REST_VERSION + nonce + self._aead.encrypt(nonce, plaintext, ad)

    def decrypt(self, blob: bytes, ad: bytes = b"") -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != AT_REST_VERSION:
            raise IntegrityError("stored blob is not an at-rest ciphertext", action="drop")
        try:
            return self._aead.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], ad)
        except InvalidTag:
            raise IntegrityError("stored blob failed authentication", action="drop") from None


@dataclass(frozen=True)
class StorePolicy:
    """A command's `store` policy: whether and how storage keeps its messages."""

    persist: bool = True
    encrypted: bool = False
    retention: float | None = None  # seconds; None = forever
    burn_after_reading: bool = False

    @classmethod
    def from_mapping(cls, policy: Mapping[str, Any]) -> StorePolicy:
        retention = policy.get("retention", "forever")
        return cls(
            persist=bool(policy.get("persist", True)),
            encrypted=choice(policy, "at_rest", ("plain", "encrypted"), "plain") == "encrypted",
            retention=None if retention in (None, "forever") else parse_duration(retention),
            burn_after_reading=bool(policy.get("burn_after_reading", False)),
        )

    def expires_at(self, created: float) -> float | None:
        """When a message created at `created` must be deleted (None: keep forever)."""
        return None if self.retention is None else created + self.retention

    def expired(self, created: float, now: float) -> bool:
        """True once retention has passed."""
        return self.retention is not None and now >= created + self.retention

    def seal(self, content: bytes, cipher: AtRestCipher | None, ad: bytes = b"") -> bytes:
        """What to write for `content` under this policy."""
        if not self.encrypted:
            return content
        if cipher is None:
            raise ValueError("policy requires encryption at rest but no at-rest key is configured")
        return cipher.encrypt(content, ad)

    def unseal(self, stored: bytes, cipher: AtRestCipher | None, ad: bytes = b"") -> bytes:
        """The content of a stored value under this policy."""
        if not self.encrypted:
            return stored
        if cipher is None:
            raise ValueError("policy requires encryption at rest but no at-rest key is configured")
        return cipher.decrypt(stored, ad)
