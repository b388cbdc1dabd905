"""Account security layer: secrets kept in files only their owner may read (cluster secret, keys, API keys).

Each secret is 32 random bytes in a file of mode 0600: as hex text (`read_or_create_secret`: the cluster
secret, API keys, which operators copy and paste) or raw (`load_or_create_key`: the at-rest and ticket keys).
The first process to need one creates it, atomically; every other process (here, or on another host where the
operator copied the file) reads the same file. A file that other users may read is refused: whoever reads the
cluster secret can join the cluster, whoever reads the ticket key can log in as anyone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

SECRET_BYTES = 32


class SecretFileError(RuntimeError):
    """A secret file is unusable (a one-line reason naming the file)."""


def read_or_create_secret(path: Path) -> str:
    """The hex secret in `path`, created (mode 0600) if the file does not exist yet."""
    with contextlib.suppress(FileNotFoundError):
        return _text(_read(path), path)
    _create(path, (secrets.token_hex(SECRET_BYTES) + "\n").encode("ascii"))
    return _text(_read(path), path)


def load_or_create_key(path: Path, size: int = SECRET_BYTES) -> bytes:
    """The raw `size`-byte key in `path`, created (random, mode 0600) if the file does not exist yet."""
    try:
        key = _read(path)
    except FileNotFoundError:
        _create(path, secrets.token_bytes(size))
        key = _read(path)
    if len(key) != size:
        raise SecretFileError(f"{path}: does not hold a {size}-byte key (found {len(key)} bytes)")
    return key


def _create(path: Path, data: bytes) -> None:
    """Write `path` atomically and exclusively (a private temporary file, then a link into place), so
    processes starting together all end up with the one file that won, never a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its file
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cluster_secret(path: Path) -> bytes:
    """The cluster secret (the key internal links prove they hold) in `path`, created if absent."""
    text = read_or_create_secret(path)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < SECRET_BYTES:
        raise SecretFileError(
            f"{path}: not a cluster secret (expected {2 * SECRET_BYTES} hex digits); copy the file from a "
            "host of the cluster, or remove it to make a new one (then every host needs the new file)"
        )
    return key


def _read(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)  # FileNotFoundError when missing
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretFileError(
                f"{path}: this secret is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                f"run `chmod 600 {path}`"
            )
        return fh.read(4096)


def _text(data: bytes, path: Path) -> str:
    text = data.decode("ascii", errors="replace").strip()
    if not text:
        raise SecretFileError(f"{path}: the secret file is empty; remove it to make a new one")
    return text
