"""Account security layer: the mutual challenge-response that opens every internal link (sans-IO).

Both ends send HELLO (a magic, a fresh 16-byte nonce and a flags byte: bit 0 asks for sealed records) as
soon as the connection is up. On the peer's HELLO each answers PROOF = HMAC-SHA256(secret, label | own role |
peer nonce | own nonce | peer flags | own flags), so a man in the middle cannot strip the request to seal.
Each verifies the peer's proof against its own nonce, so a proof is fresh (no replay), bound to the direction
(the dialer's proof is never a valid listener proof: no reflection) and shows the peer holds the cluster
secret without revealing it. Nothing but the handshake is accepted before both proofs are verified. Both ends
then derive the same link key from the secret and both nonces; the link is sealed (runtime.auth.link_seal)
when either end asked.
"""

from __future__ import annotations

import hashlib
import hmac
import os

MAGIC = b"TTL2"  # TTL1: without the flags byte
NONCE_BYTES = 16
PROOF_BYTES = 32
SEAL = 0x01  # HELLO flag: seal this link's records (runtime.auth.link_seal)
_LABEL = b"ttgen internal link v1"
_DIALER, _LISTENER = b"D", b"L"


class LinkAuthError(Exception):
    """The peer failed the handshake (a one-line reason)."""


class LinkHandshake:
    """One end's handshake state. `hello()` first; feed the peer's HELLO to `on_hello` (send what it returns),
    and the peer's PROOF to `on_proof`; `done` once the peer is verified."""

    __slots__ = ("_flags", "_nonce", "_peer_flags", "_peer_nonce", "_role", "_secret", "done")

    def __init__(
        self, secret: bytes, *, dialer: bool, nonce: bytes | None = None, seal: bool = False
    ) -> None:
        self._secret = secret
        self._role = _DIALER if dialer else _LISTENER
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self._flags = bytes([SEAL if seal else 0])
        self._peer_nonce: bytes | None = None
        self._peer_flags = b"\0"
        self.done = False

    @property
    def dialer(self) -> bool:
        """Whether this end dialed the link."""
        return self._role == _DIALER

    @property
    def sealed(self) -> bool:
        """Whether the link is sealed from the end of the handshake (either end asked; after `done`)."""
        return self.done and bool((self._flags[0] | self._peer_flags[0]) & SEAL)

    def hello(self) -> bytes:
        """The body of this end's HELLO."""
        return MAGIC + self._nonce + self._flags

    def on_hello(self, body: bytes) -> bytes:
        """Take the peer's HELLO; returns the body of this end's PROOF."""
        if self._peer_nonce is not None:
            raise LinkAuthError("second HELLO")
        if len(body) != len(MAGIC) + NONCE_BYTES + 1 or not body.startswith(MAGIC):
            raise LinkAuthError("malformed HELLO (not a ttgen internal link, or another version)")
        self._peer_nonce = body[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
        self._peer_flags = body[-1:]
        if self._peer_flags[0] & ~SEAL:
            raise LinkAuthError("HELLO with unknown flags")
        if self._peer_nonce == self._nonce:
            raise LinkAuthError("HELLO echoes our own nonce")
        return self._proof(self._role, self._peer_nonce, self._nonce, self._peer_flags + self._flags)

    def on_proof(self, body: bytes) -> None:
        """Verify the peer's PROOF (after its HELLO); LinkAuthError when it lacks the secret."""
        if self._peer_nonce is None:
            raise LinkAuthError("PROOF before HELLO")
        if self.done:
            raise LinkAuthError("second PROOF")
        peer_role = _LISTENER if self._role == _DIALER else _DIALER
        expected = self._proof(peer_role, self._nonce, self._peer_nonce, self._flags + self._peer_flags)
        if len(body) != PROOF_BYTES or not hmac.compare_digest(body, expected):
            raise LinkAuthError("wrong PROOF: the peer does not hold this cluster's secret")
        self.done = True

    def link_key(self) -> bytes:
        """A key for this link alone, the same at both ends (after `done`)."""
        if not self.done or self._peer_nonce is None:
            raise LinkAuthError("handshake not complete")
        d_nonce, l_nonce = (
            (self._nonce, self._peer_nonce) if self._role == _DIALER else (self._peer_nonce, self._nonce)
        )
        return hmac.new(self._secret, _LABEL + b" key" + d_nonce + l_nonce, hashlib.sha256).digest()

    def _proof(self, role: bytes, verifier_nonce: bytes, prover_nonce: bytes, flags: bytes) -> bytes:
        msg = _LABEL + role + verifier_nonce + prover_nonce + flags
        return hmac.new(self._secret, msg, hashlib.sha256).digest()
