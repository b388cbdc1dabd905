"""Storage layer: encryption at rest of message content (AES-256-GCM) under versioned keys.

Keys live in the key dir (`storage.key_dir`, default the storage folder): version 1 is `storage.key`, later
versions `storage.key.2`, `storage.key.3`, ... (32 raw bytes each, mode 0600). A row's `encrypted` column is
the version of the key that sealed it (0: clear). New rows are sealed with the highest version; a running
process looks for a new version at most once a second (a stat of the key dir), so `ttgen admin keys rotate`
(which adds the next version and re-seals older rows in batches) needs no restart. A row sealed with a version
the process does not hold makes it read the key dir again; still missing, the read fails with KeyMismatch.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime.auth import secret_files
from runtime.auth.secret_files import SecretFileError
from runtime.storage.errors import KeyMismatch

KEY_FILE_NAME = "storage.key"
_VERSIONED = re.compile(r"storage\.key(?:\.([1-9][0-9]{0,5}))?")
MAX_VERSION = 999_999
CHECK_SECONDS = 1.0
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


def key_file(key_dir: Path, version: int) -> Path:
    """The file of one key version."""
    return key_dir / (KEY_FILE_NAME if version == 1 else f"{KEY_FILE_NAME}.{version}")


def key_versions(key_dir: Path) -> list[int]:
    """The versions whose files are in the key dir, ascending."""
    try:
        names = os.listdir(key_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        m = _VERSIONED.fullmatch(name)
        if m:
            found.append(int(m.group(1) or 1))
    return sorted(found)


def load_keys(key_dir: Path, *, create: bool = True) -> dict[int, bytes]:
    """Every key version in the key dir; with none there, version 1 is created (if `create`). A file that
    is unusable (wrong size, readable by others) is a KeyMismatch naming it."""
    versions = key_versions(key_dir)
    if not versions:
        if not create:
            raise KeyMismatch(f"no at-rest key in {key_dir} (expected {KEY_FILE_NAME})")
        return {1: load_or_create_key(key_dir)}
    keys = {}
    for version in versions:
        try:
            keys[version] = secret_files.load_or_create_key(key_file(key_dir, version))
        except SecretFileError as exc:
            raise KeyMismatch(str(exc)) from None
    return keys


def add_key_version(key_dir: Path) -> int:
    """Create the next key version (0600) and return its number; the current keys must be readable."""
    current = max(load_keys(key_dir))
    if current >= MAX_VERSION:
        raise KeyMismatch(f"{key_dir}: no key version left after {current}")
    path = key_file(key_dir, current + 1)
    try:
        secret_files.load_or_create_key(path)
    except SecretFileError as exc:
        raise KeyMismatch(str(exc)) from None
    return current + 1


def key_id(key: bytes) -> str:
    """The id the database records for a key (a hash: the key itself is never stored)."""
    return hashlib.sha256(b"ttgen-at-rest-key-id\0" + key).hexdigest()[:32]


class ContentCipher:
    """Seals message content; the associated data binds a ciphertext to its row so rows cannot be swapped."""

    def __init__(self, key: bytes | Mapping[int, bytes], *, key_dir: Path | None = None) -> None:
        """One key (version 1), or versioned keys; with `key_dir`, versions added there later are picked up
        (the highest seals new rows)."""
        keys = {1: key} if isinstance(key, bytes) else dict(key)
        if not keys:
            raise KeyMismatch("no at-rest key given")
        self._aeads = {v: AESGCM(k) for v, k in keys.items()}
        self.key_ids = {v: key_id(k) for v, k in keys.items()}
        self.version = max(keys)
        self._aead = self._aeads[self.version]
        self.key_id = self.key_ids[self.version]
        self._key_dir = key_dir
        self._dir_stamp = self._stamp()
        self._next_check = time.monotonic() + CHECK_SECONDS
        self._keys_lock = threading.Lock()
        # Lookup digests (index) must not change when a key is added: they derive from the oldest key.
        self._index_key = hmac.new(keys[min(keys)], b"ttgen-at-rest-index", hashlib.sha256).digest()
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

    def _stamp(self) -> int:
        if self._key_dir is None:
            return 0
        try:
            return os.stat(self._key_dir).st_mtime_ns
        except OSError:
            return 0

    def refresh(self, *, force: bool = False) -> bool:
        """Take up key versions added to the key dir since; True if the sealing version changed."""
        if self._key_dir is None:
            return False
        with self._keys_lock:
            self._next_check = time.monotonic() + CHECK_SECONDS
            stamp = self._stamp()
            if stamp == self._dir_stamp and not force:
                return False
            self._dir_stamp = stamp
            keys = load_keys(self._key_dir, create=False)
            for version, key in keys.items():
                if version not in self._aeads:
                    self._aeads[version] = AESGCM(key)
                    self.key_ids[version] = key_id(key)
            newest = max(self._aeads)
            if newest == self.version:
                return False
            self.version, self._aead, self.key_id = newest, self._aeads[newest], self.key_ids[newest]
            return True

    def _sealing(self) -> tuple[AESGCM, int, bytes]:
        """The current key (after a due check for a newer one), its version and a fresh nonce."""
        if self._key_dir is not None and time.monotonic() >= self._next_check:
            self.refresh()
        try:
            nonce = next(self._nonces)
        except StopIteration:
            nonce = self._nonce()
        return self._aead, self.version, nonce

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """nonce || ciphertext+tag, under the current version (`self.version`, read right after)."""
        aead, _version, nonce = self._sealing()
        return nonce + aead.encrypt(nonce, plaintext, aad)

    def seal_versioned(self, plaintext: bytes, aad: bytes) -> tuple[bytes, int]:
        """The sealed bytes and the version that sealed them."""
        aead, version, nonce = self._sealing()
        return nonce + aead.encrypt(nonce, plaintext, aad), version

    def seal_row(self, kind: bytes, scope_id: int, msg_id: int, plaintext: bytes) -> tuple[bytearray, int]:
        """`seal_versioned(plaintext, message_aad(kind, scope_id, msg_id))` for a message row being stored,
        as a bytearray (what the SQLite write cache binds): the same bytes, with one copy fewer per message
        (`kind` as bytes: b"s" or b"g")."""
        aead, version, nonce = self._sealing()
        sealed = bytearray(nonce)
        sealed += aead.encrypt(nonce, plaintext, b"%s:%d:%d" % (kind, scope_id, msg_id))
        return sealed, version

    def open(self, sealed: bytes, aad: bytes, version: int = 1) -> bytes:
        """Decrypt and verify with key `version`; KeyMismatch if the key is missing or the tag does not
        verify."""
        aead = self._aeads.get(version)
        if aead is None:
            self.refresh(force=True)
            aead = self._aeads.get(version)
            if aead is None:
                where = f" in {self._key_dir}" if self._key_dir is not None else ""
                raise KeyMismatch(f"a row is sealed with at-rest key version {version}, which is not{where}")
        try:
            return aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag as exc:
            raise KeyMismatch("message content failed authentication (wrong key or tampered row)") from exc

    def index(self, value: str) -> str:
        """A keyed digest of a value (hex) that stands for it in a unique column: equal values find each
        other, and the value cannot be read back or confirmed from a guess without the key."""
        return hmac.new(self._index_key, value.encode(), hashlib.sha256).hexdigest()


def at_rest_cipher(key: bytes | None, key_dir: Path) -> ContentCipher:
    """The cipher of a store: an explicit key (tests, tools), or every version in the key dir."""
    if key is not None:
        return ContentCipher(key)
    return ContentCipher(load_keys(key_dir), key_dir=key_dir)


def key_id_name(version: int) -> str:
    """The meta row that records a key version's id."""
    return "at_rest_key_id" if version == 1 else f"at_rest_key_id.{version}"


def check_key_ids(
    cipher: ContentCipher, recorded_names: list[str], recorded: Callable[[str, str], str], where: str
) -> None:
    """Compare the cipher's key ids with what the database recorded (recording the new ones): a version
    whose key differs, or one the database knows and the key dir lacks, is a one-line KeyMismatch."""
    for version, kid in sorted(cipher.key_ids.items()):
        if recorded(key_id_name(version), kid) != kid:
            what = f"at-rest key version {version}" if version > 1 else "the at-rest key"
            raise KeyMismatch(f"{where}: {what} is not the key this database was encrypted with")
    known = {key_id_name(v) for v in cipher.key_ids}
    missing = sorted(n for n in set(recorded_names) if n not in known)
    if missing:
        versions = ", ".join(n.rpartition(".")[2] if "." in n else "1" for n in missing)
        raise KeyMismatch(f"{where}: at-rest key version(s) {versions} recorded, missing from the key dir")


def message_aad(kind: str, scope_id: int, msg_id: int) -> bytes:
    """Associated data for a message row: its table kind, pair/group id and msg_id."""
    return f"{kind}:{scope_id}:{msg_id}".encode()
