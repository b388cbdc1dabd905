"""Runtime services layer (file): the on-disk format of offline files and the paths they live at.

An offline file is `<data_dir>/offline_file/<first 2 chars of task id>/<task id>`: a fixed 352-byte header
(magic, version, from, to, created, size, task id, file name) followed by the file's bytes, as TeamTalk's
file_server wrote it. An upload is written to `<task id>.part` and renamed into place (after fsync) only once
every byte has arrived, so a reader never sees a partial file under the final name.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"TTOF"
VERSION = 1
_HEADER = struct.Struct(">4sHHIIQQ64s256s")
HEADER_SIZE = _HEADER.size
_TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class OfflineFileError(Exception):
    """A missing, foreign or corrupt offline file."""


def valid_task_id(task_id: str) -> bool:
    """Task ids are lower-case UUIDs; anything else never names a path."""
    return bool(_TASK_ID.match(task_id))


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
    """An offline upload in progress: appends chunks at the expected offset, then publishes atomically."""

    def __init__(self, data_dir: Path, header: OfflineHeader) -> None:
        self.header = header
        self.final = offline_path(data_dir, header.task_id)
        self.partial = self.final.with_name(self.final.name + ".part")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.partial, "wb")  # noqa: SIM115 - closed in finish()/abort()
        self._fh.write(header.pack())
        self.received = 0

    def write(self, offset: int, data: bytes) -> None:
        """Append a chunk; it must start where the previous one ended and not pass the declared size."""
        if offset != self.received:
            raise OfflineFileError(f"chunk at {offset}, expected {self.received}")
        if self.received + len(data) > self.header.size:
            raise OfflineFileError("more data than the declared file size")
        self._fh.write(data)
        self.received += len(data)

    @property
    def complete(self) -> bool:
        """Every declared byte arrived."""
        return self.received == self.header.size

    def finish(self) -> None:
        """fsync and rename into place."""
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


def read_chunk(data_dir: Path, task_id: str, offset: int, size: int) -> bytes:
    """Up to `size` bytes of the file's content from `offset`."""
    with open(offline_path(data_dir, task_id), "rb") as fh:
        fh.seek(HEADER_SIZE + offset)
        return fh.read(size)


def delete_offline(data_dir: Path, task_id: str) -> bool:
    """Remove a stored offline file; False if it was absent."""
    try:
        offline_path(data_dir, task_id).unlink()
    except FileNotFoundError:
        return False
    return True
