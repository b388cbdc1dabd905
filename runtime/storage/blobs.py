"""Storage layer: a small content-addressed blob store on disk for images, voice and avatars."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from runtime.storage.errors import InvalidArgument, NotFound, ValueTooLarge

MAX_FILE_BYTES = 5 * 1024 * 1024  # per stored file (msfs)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # per upload request (msfs)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class BlobStore:
    """Blobs named by their SHA-256 under `<root>/<2 hex>/<64 hex>`; writes are atomic and fsynced."""

    def __init__(
        self, root: Path, max_file: int = MAX_FILE_BYTES, max_upload: int = MAX_UPLOAD_BYTES
    ) -> None:
        self.root = root
        self.max_file = max_file
        self.max_upload = max_upload

    def _path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise InvalidArgument(f"not a blob digest: {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store the bytes (idempotent) and return their hex digest."""
        if len(data) > self.max_file:
            raise ValueTooLarge("blob", len(data), self.max_file)
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.{id(data)}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return digest

    def put_upload(self, files: Sequence[bytes]) -> list[str]:
        """Store the files of one upload; the whole upload is refused if it exceeds the upload limit."""
        total = sum(len(f) for f in files)
        if total > self.max_upload:
            raise ValueTooLarge("upload", total, self.max_upload)
        for f in files:  # check every file before writing any
            if len(f) > self.max_file:
                raise ValueTooLarge("blob", len(f), self.max_file)
        return [self.put(f) for f in files]

    def get(self, digest: str) -> bytes:
        """The blob's bytes; NotFound if absent."""
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest}") from None

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored."""
        return self._path(digest).exists()

    def delete(self, digest: str) -> bool:
        """Remove a blob; False if it was absent."""
        try:
            self._path(digest).unlink()
        except FileNotFoundError:
            return False
        return True
