"""Storage layer (SQLite): the embedded default backend, implementing runtime.storage.base.Storage.

Durability: WAL journal with `synchronous=FULL`, so every commit is fsynced before a sender is acked (NORMAL
in WAL mode may lose the last commits on power loss, breaking "an ack means durably stored"). The cost of
FULL is paid once per batch by the group-commit writer, not once per message. `secure_delete` overwrites
deleted rows so burn and recall leave no bytes behind, and a burn/recall batch truncates the WAL after commit.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

from runtime.storage.at_rest import at_rest_cipher, check_key_ids
from runtime.storage.base import Storage
from runtime.storage.errors import InvalidArgument, StorageClosed
from runtime.storage.models import (
    Credentials,
    Department,
    DeviceToken,
    Group,
    GroupMember,
    GroupModify,
    GroupType,
    GroupVersion,
    Limits,
    MemberChange,
    Message,
    NewUser,
    OfflineFile,
    ReadResult,
    RecentSession,
    SendResult,
    SessionType,
    Tombstone,
    UnreadSummary,
    User,
    UserPatch,
)
from runtime.storage.sqlite import directory, groups, lockout, messages, sessions
from runtime.storage.sqlite.context import OpContext, check_int
from runtime.storage.sqlite.readers import ReaderPool, connect
from runtime.storage.sqlite.schema import MIGRATIONS, Migration, migrate
from runtime.storage.sqlite.write_cache import WriteCache
from runtime.storage.sqlite.writer import Callback, GroupCommitWriter

T = TypeVar("T")
DB_FILE_NAME = "ttgen.db"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRUNE_EVERY = 4096  # sends between dedup-table prunes
_log = logging.getLogger(__name__)


class SqliteStorage(Storage):
    """SQLite backend: one group-commit writer thread, a pool of reader threads, optional AES-GCM at rest."""

    commit_callbacks = True  # send_single_nowait

    def __init__(
        self,
        data_dir: Path,
        *,
        encrypt_at_rest: bool = False,
        at_rest_key: bytes | None = None,
        key_dir: Path | None = None,
        group_commit: bool = True,
        max_batch: int = 1024,
        readers: int = 2,
        synchronous: str = "FULL",
        limits: Limits | None = None,
        dedup_window: int = 600,
        recall_window: int = 120,
        edit_window: int = 900,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        """`group_commit=False` commits every write alone (max_batch 1): the benchmark baseline."""
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise InvalidArgument(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DB_FILE_NAME
        self._encrypt = encrypt_at_rest
        self._key = at_rest_key
        self.key_dir = Path(key_dir) if key_dir is not None else self.data_dir
        self._max_batch = max_batch if group_commit else 1
        self._n_readers = readers
        self._synchronous = synchronous.upper()
        self._migrations = migrations
        self._ctx = OpContext(limits or Limits(), None, clock, dedup_window, recall_window)
        self._ctx.edit_window = edit_window
        self._writer: GroupCommitWriter | None = None
        self._readers: ReaderPool | None = None
        self._wconn: sqlite3.Connection | None = None
        self._sends = 0
        self.schema_version = 0

    # lifecycle -------------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Create the data dir and database, migrate, check the at-rest key, start writer and readers."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The database is created 0600 (SQLite gives its -wal and -shm files the database's mode).
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        if self._encrypt:
            self._ctx.cipher = at_rest_cipher(self._key, self.key_dir)
        conn = connect(self.path, read_only=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")  # validated keyword, not a value
            conn.execute("PRAGMA secure_delete = ON")
            self.schema_version = migrate(conn, self._migrations)
            self._check_key(conn)
        except BaseException:
            conn.close()
            raise
        self._wconn = conn
        cache = self._ctx.cache = WriteCache()
        self._writer = GroupCommitWriter(conn, self._max_batch, after_commit=self._after_commit, cache=cache)
        self._writer.start()
        self._readers = ReaderPool(self.path, self._n_readers)

    def _check_key(self, conn: sqlite3.Connection) -> None:
        cipher = self._ctx.cipher
        if cipher is None:
            return

        def recorded(name: str, value: str) -> str:
            # OR IGNORE: another process opening the same database may record it first; re-read what won.
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (name, value))
            return str(conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()[0])

        names = conn.execute("SELECT key FROM meta WHERE key LIKE 'at_rest_key_id%'").fetchall()
        check_key_ids(cipher, [n[0] for n in names], recorded, str(self.path))

    async def reseal(self, limit: int = 500) -> int:
        self._need_cipher()
        return await self._write(lambda c: messages.reseal(c, self._ctx, limit))

    async def key_usage(self) -> dict[int, int]:
        return await self._read(messages.key_usage)

    def _need_cipher(self) -> None:
        if self._ctx.cipher is None:
            raise InvalidArgument("this database is not encrypted at rest (storage.encrypt_at_rest)")

    def _after_commit(self, conn: sqlite3.Connection) -> None:
        if self._ctx.checkpoint_wanted:
            self._ctx.checkpoint_wanted = False
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def close(self) -> None:
        """Drain the writer, then close readers and the write connection (which checkpoints the WAL)."""
        if self._writer is not None:
            await self._writer.close()
        if self._readers is not None:
            await self._readers.close()
        if self._wconn is not None:
            self._wconn.close()
        self._writer = self._readers = self._wconn = None

    @property
    def writer(self) -> GroupCommitWriter:
        """The group-commit writer (its batch counters are useful to benchmarks)."""
        if self._writer is None:
            raise StorageClosed("storage is not open")
        return self._writer

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.submit(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._readers is None:
            raise StorageClosed("storage is not open")
        return await self._readers.run(fn)

    # directory -------------------------------------------------------------------------------------------
    async def create_user(self, user: NewUser) -> User:
        return await self._write(lambda c: directory.create_user(c, self._ctx, user))

    async def create_users(self, users: Sequence[NewUser]) -> list[User]:
        batch = list(users)
        return await self._write(lambda c: directory.create_users(c, self._ctx, batch))

    async def update_user(self, user_id: int, patch: UserPatch) -> User:
        return await self._write(lambda c: directory.update_user(c, self._ctx, user_id, patch))

    async def get_users(self, user_ids: Sequence[int]) -> list[User]:
        ids = list(user_ids)
        if len(ids) > self._ctx.limits.max_group_members:
            raise InvalidArgument(f"too many user ids ({len(ids)})")
        return await self._read(lambda c: directory.get_users(c, ids))

    async def get_user_by_login(self, login_name: str) -> User | None:
        return await self._read(lambda c: directory.get_user_by_login(c, login_name))

    async def list_users_since(self, latest_update_time: int) -> list[User]:
        return await self._read(lambda c: directory.list_users_since(c, latest_update_time))

    async def get_credentials(self, login_name: str) -> Credentials | None:
        return await self._read(lambda c: directory.get_credentials(c, login_name))

    async def get_credentials_by_id(self, user_id: int) -> Credentials | None:
        return await self._read(lambda c: directory.get_credentials_by_id(c, user_id))

    async def consume_ticket_session(self, session_id: bytes, user_id: int, expires: int, now: int) -> bool:
        return await self._write(
            lambda c: directory.consume_ticket_session(c, session_id, user_id, expires, now)
        )

    async def ticket_session_used(self, session_id: bytes, now: int) -> bool:
        return await self._read(
            lambda c: (
                c.execute(
                    "SELECT 1 FROM ticket_sessions WHERE session_id = ? AND expires >= ?",
                    (bytes(session_id), now),
                ).fetchone()
                is not None
            )
        )

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._write(
            lambda c: directory.set_user_field(c, self._ctx, user_id, "password_hash", password_hash)
        )

    async def set_sign_info(self, user_id: int, sign_info: str) -> None:
        await self._write(lambda c: directory.set_user_field(c, self._ctx, user_id, "sign_info", sign_info))

    async def set_push_shield(self, user_id: int, shield: bool) -> None:
        await self._write(
            lambda c: directory.set_user_field(c, self._ctx, user_id, "push_shield", int(shield))
        )

    async def get_push_shield(self, user_id: int) -> bool:
        return (await self._read(lambda c: directory.get_user(c, user_id))).push_shield

    async def create_department(self, name: str, priority: int = 0, parent_id: int = 0) -> Department:
        return await self._write(
            lambda c: directory.create_department(c, self._ctx, name, priority, parent_id)
        )

    async def list_departments_since(self, latest_update_time: int) -> list[Department]:
        return await self._read(lambda c: directory.list_departments_since(c, latest_update_time))

    # messages --------------------------------------------------------------------------------------------
    def _count_send(self, writer: GroupCommitWriter) -> None:
        """Every `_PRUNE_EVERY` sends, queue a prune of expired dedup keys as an operation of its own, so
        no send carries it (nor fails because of it). It only deletes dedup rows, which the write cache does
        not hold, so it runs as a cached operation (no flush, no cache reset)."""
        self._sends += 1
        if self._sends % _PRUNE_EVERY == 0:
            writer.submit_nowait(self._prune_dedup, _log_prune_failure, cached=True)

    def _prune_dedup(self, conn: sqlite3.Connection) -> int:
        return messages.prune_dedup(conn, self._ctx)

    async def send_single(
        self,
        from_id: int,
        to_id: int,
        msg_type: int,
        content: bytes,
        *,
        dedup_key: bytes | None = None,
        burn: bool = False,
        token: int = 0,
        resend: bool = False,
    ) -> SendResult:
        writer = self.writer
        self._count_send(writer)
        op = messages.resend_single_op if resend else messages.send_single_op
        return await writer.submit(
            partial(op, self._ctx, from_id, to_id, msg_type, content, dedup_key, burn, token), cached=True
        )

    def send_single_nowait(
        self,
        from_id: int,
        to_id: int,
        msg_type: int,
        content: bytes,
        callback: Callback,
        *,
        dedup_key: bytes | None = None,
        burn: bool = False,
        token: int = 0,
    ) -> None:
        """`send_single` without a future: `callback(SendResult | None, error | None)` runs on this loop once
        the message is committed (or refused). For the hot path of biz (first sends: a resend goes through
        `send_single`); raises StorageClosed when closed."""
        writer = self._writer
        if writer is None:
            raise StorageClosed("storage is not open")
        self._count_send(writer)
        writer.submit_nowait(
            partial(
                messages.send_single_op, self._ctx, from_id, to_id, msg_type, content, dedup_key, burn, token
            ),
            callback,
            cached=True,
        )

    async def send_group(
        self,
        from_id: int,
        group_id: int,
        msg_type: int,
        content: bytes,
        *,
        dedup_key: bytes | None = None,
        token: int = 0,
        resend: bool = False,
    ) -> SendResult:
        writer = self.writer
        self._count_send(writer)
        return await writer.submit(
            lambda c: messages.send_group(
                c, self._ctx, from_id, group_id, msg_type, content, dedup_key, token, resend
            )
        )

    async def get_history(
        self, user_id: int, session_type: SessionType, session_id: int, msg_id_begin: int, count: int
    ) -> list[Message]:
        return await self._read(
            lambda c: messages.get_history(
                c, self._ctx, user_id, session_type, session_id, msg_id_begin, count
            )
        )

    async def get_messages_by_ids(
        self, user_id: int, session_type: SessionType, session_id: int, msg_ids: Sequence[int]
    ) -> list[Message]:
        ids = list(msg_ids)
        return await self._read(
            lambda c: messages.get_by_ids(c, self._ctx, user_id, session_type, session_id, ids)
        )

    async def latest_msg_id(self, user_id: int, session_type: SessionType, session_id: int) -> int:
        return await self._read(lambda c: messages.latest_msg_id(c, user_id, session_type, session_id))

    async def mark_read(
        self, user_id: int, session_type: SessionType, session_id: int, up_to_msg_id: int = 0
    ) -> ReadResult:
        return await self._write(
            lambda c: messages.mark_read(c, self._ctx, user_id, session_type, session_id, up_to_msg_id)
        )

    async def unread_summary(self, user_id: int) -> UnreadSummary:
        return await self._read(lambda c: sessions.unread_summary(c, self._ctx, user_id))

    async def list_tombstones(self, since: int = 0, limit: int = 1000) -> list[Tombstone]:
        check_int("limit", limit, 1, 100_000)
        return await self._read(lambda c: messages.list_tombstones(c, since, limit))

    async def edit_message(
        self, user_id: int, session_type: SessionType, session_id: int, msg_id: int, content: bytes
    ) -> int:
        return await self._write(
            lambda c: messages.edit(c, self._ctx, user_id, session_type, session_id, msg_id, content)
        )

    async def recall(self, user_id: int, session_type: SessionType, session_id: int, msg_id: int) -> None:
        await self._write(lambda c: messages.recall(c, self._ctx, user_id, session_type, session_id, msg_id))

    # sessions --------------------------------------------------------------------------------------------
    async def recent_sessions(self, user_id: int, latest_update_time: int = 0) -> list[RecentSession]:
        return await self._read(lambda c: sessions.recent_sessions(c, self._ctx, user_id, latest_update_time))

    async def remove_session(self, user_id: int, session_type: SessionType, session_id: int) -> None:
        await self._write(lambda c: sessions.remove_session(c, self._ctx, user_id, session_type, session_id))

    # groups ----------------------------------------------------------------------------------------------
    async def create_group(
        self,
        creator_id: int,
        name: str,
        group_type: GroupType,
        member_ids: Sequence[int],
        *,
        avatar: str = "",
        by_admin: bool = False,
    ) -> Group:
        members = list(member_ids)

        def op(c: sqlite3.Connection) -> Group:
            gid = groups.create_group(c, self._ctx, creator_id, name, group_type, members, avatar, by_admin)
            return groups.get_group(c, None, gid)

        return await self._write(op)

    async def change_group_members(
        self, actor_id: int | None, group_id: int, modify: GroupModify, user_ids: Sequence[int]
    ) -> MemberChange:
        ids = list(user_ids)
        return await self._write(
            lambda c: groups.change_members(c, self._ctx, actor_id, group_id, modify, ids)
        )

    async def get_group_members(self, group_id: int) -> list[GroupMember]:
        return await self._read(lambda c: groups.get_members(c, group_id))

    async def list_user_groups(self, user_id: int, group_type: GroupType | None = None) -> list[GroupVersion]:
        return await self._read(lambda c: groups.list_user_groups(c, user_id, group_type))

    async def get_groups_info(self, user_id: int, known: Sequence[GroupVersion]) -> list[Group]:
        items = list(known)
        return await self._read(lambda c: groups.groups_info(c, self._ctx, user_id, items))

    async def set_group_shield(self, user_id: int, group_id: int, shield: bool) -> None:
        await self._write(lambda c: groups.set_shield(c, user_id, group_id, shield))

    async def is_group_member(self, user_id: int, group_id: int) -> bool:
        return await self._read(lambda c: groups.is_member(c, user_id, group_id))

    # push tokens -----------------------------------------------------------------------------------------
    async def set_device_token(self, user_id: int, token: str, client_type: int) -> None:
        await self._write(lambda c: directory.set_device_token(c, self._ctx, user_id, token, client_type))

    async def clear_device_token(self, user_id: int) -> None:
        await self._write(lambda c: c.execute("DELETE FROM device_tokens WHERE user_id = ?", (user_id,)))

    async def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        return await self._read(lambda c: lockout.login_failures(c, keys, since))

    async def add_login_failure(self, keys: Sequence[str], now: float, window: float) -> None:
        await self._write(lambda c: lockout.add_login_failure(c, keys, now, window))

    async def clear_login_failures(self, keys: Sequence[str]) -> None:
        await self._write(lambda c: lockout.clear_login_failures(c, keys))

    async def note_known_login(self, key: str, now: float, keep: float) -> None:
        await self._write(lambda c: lockout.note_known_login(c, key, now, keep))

    async def is_known_login(self, key: str, since: float) -> bool:
        return await self._read(lambda c: lockout.is_known_login(c, key, since))

    async def get_device_tokens(self, user_ids: Sequence[int]) -> list[DeviceToken]:
        ids = list(user_ids)
        return await self._read(lambda c: directory.get_device_tokens(c, self._ctx, ids))

    # offline files ---------------------------------------------------------------------------------------
    async def add_offline_file(self, record: OfflineFile) -> OfflineFile:
        return await self._write(lambda c: directory.add_offline_file(c, self._ctx, record))

    async def list_offline_files(self, to_user_id: int) -> list[OfflineFile]:
        return await self._read(lambda c: directory.list_offline_files(c, to_user_id))

    async def delete_offline_file(self, user_id: int, task_id: str) -> None:
        await self._write(lambda c: directory.delete_offline_file(c, user_id, task_id))

    # inspection ------------------------------------------------------------------------------------------
    async def find_bytes(self, needle: bytes) -> list[str]:
        """Scan every column of every table for the raw bytes (stored form: ciphertext when encrypted)."""
        if not needle:
            raise InvalidArgument("needle must not be empty")
        return await self._read(lambda c: _scan(c, needle))


def _log_prune_failure(_result: object, error: BaseException | None) -> None:
    if error is not None:
        _log.warning("pruning expired dedup keys failed (tried again later): %s", error)


def _scan(conn: sqlite3.Connection, needle: bytes) -> list[str]:
    hits = []
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    for table in tables:
        if not _IDENT.match(table):
            continue
        for col in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
            column = col[1]
            if not _IDENT.match(column):
                continue
            found = conn.execute(
                f'SELECT 1 FROM "{table}" WHERE instr(CAST("{column}" AS BLOB), ?) > 0 LIMIT 1', (needle,)
            ).fetchone()
            if found:
                hits.append(f"{table}.{column}")
    return hits
