"""Storage layer: encryption at rest of message content (AES-256-GCM, a per-database key file)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import struct
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.auth import secret_files
from runtime.auth.secret_files import SecretFileError
from runtime.storage.errors import KeyMismatch

KEY_FILE_NAME = "storage.key"
_NONCE = 12
_PREFIX = 11  # random bytes that open every nonce of a series
_SERIES_LEN = 256  # nonces per series: the one-byte counter that follows the prefix
_SERIES = struct.Struct(">11sB")  # nonce = prefix || counter
_ciphers: weakref.WeakSet[ContentCipher] = weakref.WeakSet()


def _new_series() -> Iterator[bytes]:
    """A fresh nonce series: prefix || 0, prefix || 1, ... prefix || 255, with a new random prefix."""
    return map(_SERIES.pack, itertools.repeat(os.urandom(_PREFIX)), range(_SERIES_LEN))


def _forked() -> None:
    """In a forked child: every cipher starts a new series, so the child never reuses its parent's nonces
    (and gets a fresh lock, in case a thread of the parent held it at the fork)."""
    for cipher in list(_ciphers):
        cipher._nonces = _new_series()
        cipher._series_lock = threading.Lock()


os.register_at_fork(after_in_child=_forked)


def load_or_create_key(data_dir: Path) -> bytes:
    """Read the 32-byte key from `<data_dir>/storage.key`, creating it (mode 0600) if absent; processes
    opening one database together (several biz instances) all read the one key that won. An unusable file
    (wrong size, readable by other users) is a `KeyMismatch` naming it."""
    try:
        return secret_files.load_or_create_key(data_dir / KEY_FILE_NAME)
    except SecretFileError as exc:
        raise KeyMismatch(str(exc)) from None


class ContentCipher:
    """Seals message content; the associated data binds a ciphertext to its row so rows cannot be swapped."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"ttgen-at-rest-key-id\0" + key).hexdigest()[:32]
        self._index_key = hmac.new(key, b"ttgen-at-rest-index", hashlib.sha256).digest()
        # Nonces come in series of 256: 88 random bits from the OS, then a one-byte counter 0..255. Why a
        # nonce never repeats under this key:
        # - within a series each counter value is yielded once: a series is a chain of C iterators (map over
        #   repeat and range, calling struct.pack), so one `next` runs no Python code and cannot interleave
        #   with another thread's `next` under the GIL; no lock per nonce. A spent series never yields again;
        #   the next one (a new random prefix) is made once, under a lock.
        # - a forked child starts a new series in `_forked` (os.register_at_fork) before it runs anything
        #   else, so it never continues its parent's series; a restart, or another process opening the same
        #   database, draws series of its own.
        # - two series can share a nonce only if they drew the same 88-bit prefix: over N messages (N / 256
        #   series) the chance is about (N / 256)**2 / 2**89 = N**2 / 2**105, below the N**2 / 2**97 of 96
        #   fresh random bits per nonce. A copy of the process memory (a VM snapshot) can replay at most the
        #   rest of one series.
        # Cost: one C-level `next` per message (no lock), one os.urandom per 256 messages.
        self._nonces = _new_series()
        self._series_lock = threading.Lock()
        _ciphers.add(self)

    def _nonce(self) -> bytes:
        while True:
            series = self._nonces
            try:
                return next(series)
            except StopIteration:  # spent (after 256 nonces): start a new series, once
                with self._series_lock:
                    if self._nonces is series:
                        self._nonces = _new_series()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """nonce || ciphertext+tag."""
        try:
            nonce = next(self._nonces)
        except StopIteration:
            nonce = self._nonce()
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt and verify; KeyMismatch if the tag does not verify."""
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag as exc:
            raise KeyMismatch("message content failed authentication (wrong key or tampered row)") from exc

    def index(self, value: str) -> str:
        """A keyed digest of a value (hex) that stands for it in a unique column: equal values find each
        other, and the value cannot be read back or confirmed from a guess without the key."""
        return hmac.new(self._index_key, value.encode(), hashlib.sha256).hexdigest()


def message_aad(kind: str, scope_id: int, msg_id: int) -> bytes:
    """Associated data for a message row: its table kind, pair/group id and msg_id."""
    return f"{kind}:{scope_id}:{msg_id}".encode()
