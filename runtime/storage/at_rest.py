"""Storage layer: encryption at rest of message content (AES-256-GCM, a per-database key file)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.storage.errors import KeyMismatch

KEY_FILE_NAME = "storage.key"
_NONCE = 12
_NONCE_BLOCK = 256
_fork_generation = 0  # bumped in a forked child, so it never reuses nonces drawn by its parent


def _forked() -> None:
    global _fork_generation
    _fork_generation += 1


os.register_at_fork(after_in_child=_forked)


def load_or_create_key(data_dir: Path) -> bytes:
    """Read the 32-byte key from `<data_dir>/storage.key`, creating it (mode 0600) if absent.

    The key is written to a private temporary file first and linked into place, so the file appears
    complete or not at all: processes opening one database together (several biz instances) all read the one
    key that won, never a half-written file."""
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        key = AESGCM.generate_key(bit_length=256)
        tmp = data_dir / f".{KEY_FILE_NAME}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process created it first: use its key
            else:
                return key
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    key = path.read_bytes()
    if len(key) != 32:
        raise KeyMismatch(f"{path}: expected a 32-byte key, found {len(key)} bytes")
    return key


class ContentCipher:
    """Seals message content; the associated data binds a ciphertext to its row so rows cannot be swapped."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"ttgen-at-rest-key-id\0" + key).hexdigest()[:32]
        # Random nonces are drawn from the OS in blocks: one getrandom call per _NONCE_BLOCK messages instead
        # of one per message (a syscall was a tenth of the storage writer's time). Each nonce is still 96
        # fresh random bits, used once.
        self._nonces = b""
        self._next = 0
        self._generation = _fork_generation
        self._lock = threading.Lock()

    def _nonce(self) -> bytes:
        with self._lock:
            pos = self._next
            if pos >= len(self._nonces) or self._generation != _fork_generation:
                self._nonces = os.urandom(_NONCE * _NONCE_BLOCK)
                self._generation = _fork_generation
                pos = 0
            self._next = pos + _NONCE
            return self._nonces[pos : pos + _NONCE]

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """nonce || ciphertext+tag."""
        nonce = self._nonce()
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt and verify; KeyMismatch if the tag does not verify."""
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag as exc:
            raise KeyMismatch("message content failed authentication (wrong key or tampered row)") from exc


def message_aad(kind: str, scope_id: int, msg_id: int) -> bytes:
    """Associated data for a message row: its table kind, pair/group id and msg_id."""
    return f"{kind}:{scope_id}:{msg_id}".encode()
