"""Account security layer: AES-256-GCM records for internal links between hosts (sans-IO).

After the link handshake (runtime.auth.link_handshake) both ends hold the same link key; when the link is
sealed, every byte after the handshake travels in records: a 4-byte big-endian length, then the ciphertext and
its 16-byte tag. Each direction has its own key (derived from the link key and the direction) and nonce
counter (96 bits: 4 zero bytes, then a 64-bit record number), so a nonce never repeats under a key, records
cannot be reordered, replayed, dropped from the middle or reflected back to their sender: any of that fails
the tag and closes the link. `seal` takes the bytes one write would send; `open` takes whatever arrived and
returns the plaintext of the records completed so far (bytes of an unfinished record wait in a buffer bounded
by `max_record`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG = 16
_LEN = struct.Struct(">I")
_NONCE = struct.Struct(">4xQ")
DEFAULT_MAX_RECORD = (16 << 20) + 4096  # a link frame of 16 MiB and change, sealed


# Which links ask to be sealed (config key `link_seal`): every link, links whose peer is not on a loopback
# address (the default), or none. Either end asking seals the link; every link is authenticated anyway.
SEAL_POLICIES = ("always", "between_hosts", "never")


def wants_seal(policy: str, peer: str) -> bool:
    """Whether this end asks to seal a link to `peer` (`host:port`): always, never, or unless the peer is on
    a loopback address (the same host; the other end decides for itself too, and either one asking seals)."""
    if policy == "always":
        return True
    if policy == "never":
        return False
    host = peer.rsplit(":", 1)[0].strip("[]")
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


class SealError(Exception):
    """A record failed authentication or broke a limit (the link must close)."""


def _direction_key(link_key: bytes, direction: bytes) -> bytes:
    return hmac.new(link_key, b"ttgen link seal " + direction, hashlib.sha256).digest()


class LinkSealer:
    """One end's record layer. `dialer` says which direction this end sends in."""

    __slots__ = ("_buffer", "_in", "_in_count", "_out", "_out_count", "max_record")

    def __init__(self, link_key: bytes, *, dialer: bool, max_record: int = DEFAULT_MAX_RECORD) -> None:
        send, recv = (b"D>L", b"L>D") if dialer else (b"L>D", b"D>L")
        self._out = AESGCM(_direction_key(link_key, send))
        self._in = AESGCM(_direction_key(link_key, recv))
        self._out_count = 0
        self._in_count = 0
        self._buffer = bytearray()
        self.max_record = max_record

    def seal(self, data: bytes | bytearray | memoryview) -> bytes:
        """One record holding `data` (empty input: no record)."""
        if not data:
            return b""
        nonce = _NONCE.pack(self._out_count)
        self._out_count += 1
        sealed = self._out.encrypt(nonce, bytes(data), None)
        return _LEN.pack(len(sealed)) + sealed

    def open(self, data: bytes | bytearray | memoryview) -> bytes:
        """The plaintext of every record `data` completes (SealError on a forged, replayed, reordered or
        oversized record)."""
        buf = self._buffer
        buf += data
        out = bytearray()
        pos = 0
        while len(buf) - pos >= _LEN.size:
            (n,) = _LEN.unpack_from(buf, pos)
            if n < TAG or n > self.max_record:
                raise SealError(f"sealed record of {n} bytes (limit {self.max_record})")
            end = pos + _LEN.size + n
            if end > len(buf):
                break
            nonce = _NONCE.pack(self._in_count)
            try:
                out += self._in.decrypt(nonce, bytes(buf[pos + _LEN.size : end]), None)
            except InvalidTag:
                raise SealError("sealed record failed authentication") from None
            self._in_count += 1
            pos = end
        del buf[:pos]
        return bytes(out)

    @property
    def buffered(self) -> int:
        """Bytes of an unfinished record."""
        return len(self._buffer)
