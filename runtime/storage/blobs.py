"""Storage layer: a small content-addressed blob store on disk for images, voice and avatars, sealed at rest.

A blob's name is HMAC-SHA256(name key, SHA-256(content)) in hex: the same content always gets the same name
(uploads are deduplicated), but without the store's key nobody can compute the name of a guessed file, so
a URL reveals nothing and cannot be guessed. The file holds a random 12-byte nonce, then the content sealed
with AES-256-GCM (associated data: the name, so files cannot be swapped). Both keys derive from one 32-byte
key file (`<data_dir>/blob.key`, mode 0600, runtime.auth.secret_files). Folders are 0700 and files 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.storage.errors import InvalidArgument, KeyMismatch, NotFound, ValueTooLarge

MAX_FILE_BYTES = 5 * 1024 * 1024  # per stored file (msfs)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per upload request (msfs)
KEY_FILE_NAME = "blob.key"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_NONCE = 12


class BlobStore:
    """Blobs under `<root>/<2 hex>/<64 hex name>`, sealed; writes are atomic and fsynced."""

    def __init__(
        self, root: Path, key: bytes, max_file: int = MAX_FILE_BYTES, max_upload: int = MAX_UPLOAD_BYTES
    ) -> None:
        if len(key) != 32:
            raise ValueError("a blob store key has 32 bytes")
        self.root = root
        self.max_file = max_file
        self.max_upload = max_upload
        self._name_key = hmac.new(key, b"ttgen blob name", hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(key, b"ttgen blob seal", hashlib.sha256).digest())

    def name_of(self, data: bytes) -> str:
        """The name the content is stored under."""
        return hmac.new(self._name_key, hashlib.sha256(data).digest(), hashlib.sha256).hexdigest()

    def _path(self, name: str) -> Path:
        if not _DIGEST.match(name):
            raise InvalidArgument(f"not a blob name: {name!r}")
        return self.root / name[:2] / name

    def put(self, data: bytes) -> str:
        """Store the bytes (idempotent) and return their name."""
        if len(data) > self.max_file:
            raise ValueTooLarge("blob", len(data), self.max_file)
        name = self.name_of(data)
        path = self._path(name)
        if path.exists():
            return name
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.parent.mkdir(exist_ok=True, mode=0o700)
        nonce = secrets.token_bytes(_NONCE)
        sealed = nonce + self._aead.encrypt(nonce, data, name.encode())
        tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(sealed)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return name

    def put_upload(self, files: Sequence[bytes]) -> list[str]:
        """Store the files of one upload; the whole upload is refused if it exceeds the upload limit."""
        total = sum(len(f) for f in files)
        if total > self.max_upload:
            raise ValueTooLarge("upload", total, self.max_upload)
        for f in files:  # check every file before writing any
            if len(f) > self.max_file:
                raise ValueTooLarge("blob", len(f), self.max_file)
        return [self.put(f) for f in files]

    def get(self, name: str) -> bytes:
        """The blob's bytes; NotFound if absent, KeyMismatch if it does not open under this key."""
        try:
            sealed = self._path(name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {name}") from None
        try:
            return self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], name.encode())
        except InvalidTag:
            raise KeyMismatch(f"blob {name} failed authentication (wrong key or tampered file)") from None

    def exists(self, name: str) -> bool:
        """Whether the blob is stored."""
        return self._path(name).exists()

    def delete(self, name: str) -> bool:
        """Remove a blob; False if it was absent."""
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        return True
