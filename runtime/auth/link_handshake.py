"""Account security layer: the mutual challenge-response that opens every internal link (sans-IO).

Both ends send HELLO (a magic and a fresh 16-byte nonce) as soon as the connection is up. On the peer's HELLO
each answers PROOF = HMAC-SHA256(secret, label | own role | peer nonce | own nonce). Each verifies the peer's
proof against its own nonce, so a proof is fresh (no replay), bound to the direction (the dialer's proof is
never a valid listener proof: no reflection) and shows the peer holds the cluster secret without revealing
it. Nothing but the handshake is accepted before both proofs are verified. Both ends then derive the same
link key from the secret and both nonces (for sealing links between hosts).
"""

from __future__ import annotations

import hashlib
import hmac
import os

MAGIC = b"TTL1"
NONCE_BYTES = 16
PROOF_BYTES = 32
_LABEL = b"ttgen internal link v1"
_DIALER, _LISTENER = b"D", b"L"


class LinkAuthError(Exception):
    """The peer failed the handshake (a one-line reason)."""


class LinkHandshake:
    """One end's handshake state. `hello()` first; feed the peer's HELLO to `on_hello` (send what it returns),
    and the peer's PROOF to `on_proof`; `done` once the peer is verified."""

    __slots__ = ("_nonce", "_peer_nonce", "_role", "_secret", "done")

    def __init__(self, secret: bytes, *, dialer: bool, nonce: bytes | None = None) -> None:
        self._secret = secret
        self._role = _DIALER if dialer else _LISTENER
        self._nonce = nonce if nonce is not None else os.urandom(NONCE_BYTES)
        self._peer_nonce: bytes | None = None
        self.done = False

    def hello(self) -> bytes:
        """The body of this end's HELLO."""
        return MAGIC + self._nonce

    def on_hello(self, body: bytes) -> bytes:
        """Take the peer's HELLO; returns the body of this end's PROOF."""
        if self._peer_nonce is not None:
            raise LinkAuthError("second HELLO")
        if len(body) != len(MAGIC) + NONCE_BYTES or not body.startswith(MAGIC):
            raise LinkAuthError("malformed HELLO (not a ttgen internal link, or another version)")
        self._peer_nonce = body[len(MAGIC) :]
        if self._peer_nonce == self._nonce:
            raise LinkAuthError("HELLO echoes our own nonce")
        return self._proof(self._role, self._peer_nonce, self._nonce)

    def on_proof(self, body: bytes) -> None:
        """Verify the peer's PROOF (after its HELLO); LinkAuthError when it lacks the secret."""
        if self._peer_nonce is None:
            raise LinkAuthError("PROOF before HELLO")
        if self.done:
            raise LinkAuthError("second PROOF")
        peer_role = _LISTENER if self._role == _DIALER else _DIALER
        expected = self._proof(peer_role, self._nonce, self._peer_nonce)
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

    def _proof(self, role: bytes, verifier_nonce: bytes, prover_nonce: bytes) -> bytes:
        msg = _LABEL + role + verifier_nonce + prover_nonce
        return hmac.new(self._secret, msg, hashlib.sha256).digest()
