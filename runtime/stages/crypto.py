"""Runtime stage layer, session crypto: X25519 + HKDF key agreement and counter-nonce AEAD of bodies."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from runtime.errors import IntegrityError

ALGORITHMS = ("aes-256-gcm", "chacha20-poly1305")
COUNTER = struct.Struct(">Q")
NONCE_PREFIX = b"\x00\x00\x00\x00"
# Associated data: every header field except the length, which the ciphertext length already fixes. Binding
# the command id and seq stops a valid ciphertext from being replayed under another command or reply.
HEADER_AD = struct.Struct(">HHHHH")
TAG_BYTES = 16
OVERHEAD = COUNTER.size + TAG_BYTES
HKDF_INFO = b"ttgen session keys v1"


def header_ad(version: int, flag: int, service_id: int, command_id: int, seq: int) -> bytes:
    """The associated data for a frame's body: its header fields."""
    return HEADER_AD.pack(version, flag, service_id, command_id, seq)


@dataclass(frozen=True)
class SessionKeys:
    """One key per direction, so both sides may count nonces from 0 without ever reusing one."""

    send_key: bytes
    recv_key: bytes


class KeyExchange:
    """One side of the X25519 agreement made at login: send `public_bytes`, then `derive` with the peer's."""

    def __init__(self, private_key: X25519PrivateKey | None = None) -> None:
        self._private = private_key or X25519PrivateKey.generate()

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte public key to send to the peer."""
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def derive(
        self, peer_public: bytes, *, initiator: bool, salt: bytes | None = None, context: bytes = b""
    ) -> SessionKeys:
        """Derive the session keys; the client is the initiator. `context` binds e.g. the user id."""
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:
            raise IntegrityError(f"bad peer public key: {exc}") from None
        okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=HKDF_INFO + context).derive(shared)
        c2s, s2c = okm[:32], okm[32:]
        return SessionKeys(c2s, s2c) if initiator else SessionKeys(s2c, c2s)


class SessionCipher:
    """Seals and opens frame bodies: body = 8-byte counter || ciphertext || 16-byte tag."""

    __slots__ = ("_open", "_seal", "algorithm", "send_counter")

    def __init__(self, keys: SessionKeys, algorithm: str = "aes-256-gcm") -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown AEAD {algorithm!r} (known: {', '.join(ALGORITHMS)})")
        aead = AESGCM if algorithm == "aes-256-gcm" else ChaCha20Poly1305
        self._seal = aead(keys.send_key).encrypt
        self._open = aead(keys.recv_key).decrypt
        self.algorithm = algorithm
        self.send_counter = 0

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """Encrypt with the next counter as nonce."""
        counter = self.send_counter
        if counter >= 1 << 64:
            raise OverflowError("nonce counter exhausted: the session must be re-keyed")
        self.send_counter = counter + 1
        prefix = COUNTER.pack(counter)
        return prefix + self._seal(NONCE_PREFIX + prefix, plaintext, ad)

    def open(self, data: bytes | memoryview, ad: bytes) -> tuple[int, bytes]:
        """Decrypt and authenticate; return (counter, plaintext). Tampering raises `IntegrityError`."""
        if len(data) < OVERHEAD:
            raise IntegrityError("encrypted body shorter than counter and tag")
        prefix = bytes(data[: COUNTER.size])
        try:
            plain = self._open(NONCE_PREFIX + prefix, bytes(data[COUNTER.size :]), ad)
        except InvalidTag:
            raise IntegrityError("authentication tag mismatch: tampered or wrong key") from None
        return COUNTER.unpack(prefix)[0], plain


def derive_session_keys(
    kx: KeyExchange, peer_public: bytes, client_nonce: bytes, server_nonce: bytes, *, initiator: bool
) -> SessionKeys:
    """Both sides' key schedule for the IM.Ext handshake: HKDF-SHA256 with salt client_nonce || server_nonce
    and context client_key || server_key (the client passes initiator=True)."""
    if len(peer_public) != 32:
        raise ValueError("public key must be 32 bytes")
    client_pub, server_pub = (kx.public_bytes, peer_public) if initiator else (peer_public, kx.public_bytes)
    return kx.derive(
        peer_public, initiator=initiator, salt=client_nonce + server_nonce, context=client_pub + server_pub
    )
