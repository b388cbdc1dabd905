"""Runtime stage layer, legacy codec: TeamTalk's AES-256-ECB text codec (PROTOCOL.md section 4), for interop.

It has no IV and no MAC: it is obfuscation compatible with TeamTalk clients, not confidentiality.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from google.protobuf.message import Message

from runtime.errors import IntegrityError

BLOCK = 16
_LENGTH = struct.Struct(">I")
TEAMTALK_DEFAULT_KEY = b"12345678901234567890123456789012"  # the value TeamTalk ships; configure your own


def _cipher(key: bytes) -> Cipher[modes.ECB]:
    if len(key) != 32:
        raise ValueError("the TeamTalk AES key must be exactly 32 bytes")
    return Cipher(algorithms.AES(key), modes.ECB())  # ECB: wire compatibility is the point


def padded_size(length: int) -> int:
    """Zero-fill to 16 with room for the 4-byte length: an extra block when length % 16 is 0 or above 12."""
    blocks = (length + BLOCK - 1) // BLOCK
    rem = length % BLOCK
    if rem == 0 or rem > BLOCK - _LENGTH.size:
        blocks += 1
    return blocks * BLOCK


def encrypt_text(plaintext: bytes, key: bytes) -> bytes:
    """Encrypt like TeamTalk: pad, store the length in the last 4 bytes, AES-256-ECB, then base64."""
    size = padded_size(len(plaintext))
    buf = bytearray(size)
    buf[: len(plaintext)] = plaintext
    buf[size - _LENGTH.size :] = _LENGTH.pack(len(plaintext))
    enc = _cipher(key).encryptor()
    return base64.b64encode(enc.update(bytes(buf)) + enc.finalize())


def decrypt_text(data: bytes, key: bytes) -> bytes:
    """Reverse `encrypt_text`; malformed input raises `IntegrityError`."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError("legacy codec: not base64", action="drop") from None
    if not raw or len(raw) % BLOCK:
        raise IntegrityError("legacy codec: ciphertext is not a whole number of blocks", action="drop")
    dec = _cipher(key).decryptor()
    plain = dec.update(raw) + dec.finalize()
    (length,) = _LENGTH.unpack_from(plain, len(plain) - _LENGTH.size)
    if length > len(plain) - _LENGTH.size or padded_size(length) != len(plain):
        raise IntegrityError("legacy codec: bad length trailer (wrong key?)", action="drop")
    return plain[:length]


class LegacyTextCodec:
    """Applies the codec to named bytes/string fields of a message (e.g. IMMsgData.msg_data)."""

    def __init__(self, key: bytes, fields: Iterable[str] = ("msg_data",)) -> None:
        _cipher(key)
        self.key = key
        self.fields = tuple(fields)

    def encode(self, msg: Message) -> None:
        """Encrypt the fields in place."""
        for name in self.fields:
            value = getattr(msg, name)
            if isinstance(value, str):
                setattr(msg, name, encrypt_text(value.encode(), self.key).decode("ascii"))
            else:
                setattr(msg, name, encrypt_text(value, self.key))

    def decode(self, msg: Message) -> None:
        """Decrypt the fields in place."""
        for name in self.fields:
            value = getattr(msg, name)
            if isinstance(value, str):
                setattr(msg, name, decrypt_text(value.encode("ascii"), self.key).decode("utf-8", "replace"))
            else:
                setattr(msg, name, decrypt_text(value, self.key))
