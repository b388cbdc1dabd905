"""Runtime services layer (file): the on-disk format of offline files and the paths they live at.

An offline file is `<data_dir>/offline_file/<first 2 chars of task id>/<task id>`: a fixed 352-byte header
(magic, version, from, to, created, size, task id, file name), then the content sealed at rest: an 8-byte
random prefix, then the content in segments of 64 KiB, each sealed with AES-256-GCM (nonce: the prefix and
the segment's number; associated data: the task id, the segment's number and the number of segments, so
segments cannot be reordered, swapped between files or cut off). Reads decrypt only the segments a chunk
touches. The key is `<data_dir>/offline.key` (mode 0600, runtime.auth.secret_files). An upload is written to
`<task id>.part` and renamed into place (after fsync) only once every byte has arrived, so a reader never sees
a partial file under the final name. Folders are 0700 and files 0600.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.auth.secret_files import load_or_create_key

MAGIC = b"TTOF"
VERSION = 2  # 1: TeamTalk's plain content; 2: sealed segments
KEY_FILE_NAME = "offline.key"
SEGMENT = 64 * 1024
_TAG = 16
_PREFIX = 8
_HEADER = struct.Struct(">4sHHIIQQ64s256s")
HEADER_SIZE = _HEADER.size
_TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class OfflineFileError(Exception):
    """A missing, foreign or corrupt offline file."""


def valid_task_id(task_id: str) -> bool:
    """Task ids are lower-case UUIDs; anything else never names a path."""
    return bool(_TASK_ID.match(task_id))


class OfflineCipher:
    """Seals and opens the segments of offline files under one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> OfflineCipher:
        """The cipher of `<data_dir>/offline.key` (created on first use)."""
        return cls(load_or_create_key(data_dir / KEY_FILE_NAME))

    @staticmethod
    def segments(size: int) -> int:
        """How many segments a file of `size` bytes has (one, empty, for an empty file)."""
        return max(1, -(-size // SEGMENT))

    def seal(self, prefix: bytes, task_id: str, index: int, total: int, data: bytes) -> bytes:
        return self._aead.encrypt(prefix + index.to_bytes(4, "big"), data, _aad(task_id, index, total))

    def open(self, prefix: bytes, task_id: str, index: int, total: int, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(prefix + index.to_bytes(4, "big"), sealed, _aad(task_id, index, total))
        except InvalidTag:
            raise OfflineFileError(f"offline file {task_id}: segment {index} failed authentication") from None


def _aad(task_id: str, index: int, total: int) -> bytes:
    return f"ttgen offline file|{task_id}|{index}|{total}".encode()


def offline_root(data_dir: Path) -> Path:
    """The folder of every offline file."""
    return data_dir / "offline_file"


def offline_path(data_dir: Path, task_id: str) -> Path:
    """Where the offline file of a task lives (OfflineFileError for a malformed task id)."""
    if not valid_task_id(task_id):
        raise OfflineFileError(f"not a task id: {task_id!r}")
    return offline_root(data_dir) / task_id[:2] / task_id


@dataclass(frozen=True)
class OfflineHeader:
    """The fixed header of an offline file."""

    task_id: str
    from_user_id: int
    to_user_id: int
    created: int
    size: int
    file_name: str

    def pack(self) -> bytes:
        """The header's bytes."""
        name = self.file_name.encode("utf-8")[:256]
        return _HEADER.pack(
            MAGIC,
            VERSION,
            HEADER_SIZE,
            self.from_user_id,
            self.to_user_id,
            self.created,
            self.size,
            self.task_id.encode("ascii"),
            name,
        )

    @classmethod
    def unpack(cls, data: bytes) -> OfflineHeader:
        """Parse a header (OfflineFileError if it is not one)."""
        if len(data) < HEADER_SIZE:
            raise OfflineFileError("truncated offline file header")
        magic, version, size_field, from_id, to_id, created, size, task, name = _HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or size_field != HEADER_SIZE:
            raise OfflineFileError("not an offline file")
        return cls(
            task.rstrip(b"\0").decode("ascii", "replace"),
            from_id,
            to_id,
            created,
            size,
            name.rstrip(b"\0").decode("utf-8", "replace"),
        )


class Upload:
    """An offline upload in progress: appends chunks at the expected offset (sealing each full segment), then
    publishes atomically."""

    def __init__(self, data_dir: Path, header: OfflineHeader, cipher: OfflineCipher) -> None:
        self.header = header
        self.final = offline_path(data_dir, header.task_id)
        self.partial = self.final.with_name(self.final.name + ".part")
        self.final.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.final.parent.mkdir(exist_ok=True, mode=0o700)
        self._cipher = cipher
        self._total = OfflineCipher.segments(header.size)
        self._prefix = secrets.token_bytes(_PREFIX)
        self._pending = bytearray()
        self._index = 0
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._fh.write(header.pack() + self._prefix)
        self.received = 0

    def write(self, offset: int, data: bytes) -> None:
        """Append a chunk; it must start where the previous one ended and not pass the declared size."""
        if offset != self.received:
            raise OfflineFileError(f"chunk at {offset}, expected {self.received}")
        if self.received + len(data) > self.header.size:
            raise OfflineFileError("more data than the declared file size")
        self._pending += data
        self.received += len(data)
        while len(self._pending) >= SEGMENT and self._index < self._total - 1:
            self._seal(bytes(self._pending[:SEGMENT]))
            del self._pending[:SEGMENT]

    def _seal(self, segment: bytes) -> None:
        task = self.header.task_id
        self._fh.write(self._cipher.seal(self._prefix, task, self._index, self._total, segment))
        self._index += 1

    @property
    def complete(self) -> bool:
        """Every declared byte arrived."""
        return self.received == self.header.size

    def finish(self) -> None:
        """Seal the last segment, fsync and rename into place."""
        self._seal(bytes(self._pending))
        self._pending.clear()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self.partial, self.final)

    def abort(self) -> None:
        """Drop the partial file."""
        if not self._fh.closed:
            self._fh.close()
        self.partial.unlink(missing_ok=True)


def read_header(data_dir: Path, task_id: str) -> OfflineHeader:
    """The header of a stored offline file (OfflineFileError if absent or corrupt)."""
    try:
        with open(offline_path(data_dir, task_id), "rb") as fh:
            header = OfflineHeader.unpack(fh.read(HEADER_SIZE))
    except FileNotFoundError:
        raise OfflineFileError(f"no offline file for task {task_id}") from None
    if header.task_id != task_id:
        raise OfflineFileError("offline file header names another task")
    return header


def read_chunk(data_dir: Path, task_id: str, offset: int, size: int, cipher: OfflineCipher) -> bytes:
    """Up to `size` bytes of the file's content from `offset` (only the segments they touch are opened)."""
    with open(offline_path(data_dir, task_id), "rb") as fh:
        header = OfflineHeader.unpack(fh.read(HEADER_SIZE))
        prefix = fh.read(_PREFIX)
        end = min(header.size, offset + max(0, size))
        if offset >= end:
            return b""
        total = OfflineCipher.segments(header.size)
        out = bytearray()
        first, last = offset // SEGMENT, (end - 1) // SEGMENT
        for index in range(first, last + 1):
            fh.seek(HEADER_SIZE + _PREFIX + index * (SEGMENT + _TAG))
            plain_len = min(SEGMENT, header.size - index * SEGMENT)
            sealed = fh.read(plain_len + _TAG)
            if len(sealed) != plain_len + _TAG:
                raise OfflineFileError(f"offline file {task_id} is truncated")
            out += cipher.open(prefix, task_id, index, total, sealed)
        start = offset - first * SEGMENT
        return bytes(out[start : start + (end - offset)])


def delete_offline(data_dir: Path, task_id: str) -> bool:
    """Remove a stored offline file; False if it was absent."""
    try:
        offline_path(data_dir, task_id).unlink()
    except FileNotFoundError:
        return False
    return True
