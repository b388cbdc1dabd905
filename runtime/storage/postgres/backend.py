"""Storage layer (PostgreSQL): the scale-out backend, implementing runtime.storage.base.Storage with asyncpg.

One group-commit writer (a task and its own connection) and a pool of read connections per storage instance;
several instances (biz, file and gateway processes, on one host or many) write one database at once: msg ids
come from per-conversation counter rows, locked only for the transaction that stores the message. The at-rest
key is the same file as on SQLite (`<dir>/storage.key`); every host must hold the same key, and the database
records the key's id (a wrong key is refused). The database also records which cluster owns it: a second
cluster pointed at it by mistake is refused with ClusterMismatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import asyncpg

from runtime.storage.at_rest import at_rest_cipher, check_key_ids, key_id_name
from runtime.storage.base import Storage
from runtime.storage.errors import ClusterMismatch, InvalidArgument, StorageClosed, StorageError
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
from runtime.storage.postgres import directory, groups, lockout, messages, sessions
from runtime.storage.postgres.common import Conn
from runtime.storage.postgres.schema import MIGRATIONS, migrate
from runtime.storage.postgres.writer import CONNECTION_ERRORS, Callback, PgWriter, unavailable
from runtime.storage.sqlite.context import OpContext, check_int
from runtime.storage.sqlite.schema import Migration

T = TypeVar("T")
CLUSTER_ID_FILE = "cluster.id"
_PRUNE_EVERY = 4096  # sends between dedup-table prunes
_log = logging.getLogger(__name__)


async def _keep_session(_conn: Conn) -> None:
    """Pool release: asyncpg still rolls back a transaction left open, but skips its reset query (advisory
    unlock, CLOSE ALL, UNLISTEN, RESET ALL: a round trip per read). Reads take no advisory lock, open no
    cursor, listen to nothing and set nothing, so there is no session state to reset."""


def load_or_create_cluster_id(folder: Path) -> str:
    """This cluster's id, from `<folder>/cluster.id`, created (atomically, like the at-rest key) if absent."""
    path = folder / CLUSTER_ID_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{CLUSTER_ID_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
        tmp.write_text(uuid.uuid4().hex + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process of this cluster made it first
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return path.read_text().strip()


class PostgresStorage(Storage):
    """PostgreSQL backend: a group-commit writer task, a pool of readers, optional AES-GCM at rest."""

    commit_callbacks = True  # send_single_nowait

    def __init__(
        self,
        dsn: str,
        data_dir: Path,
        *,
        encrypt_at_rest: bool = False,
        at_rest_key: bytes | None = None,
        key_dir: Path | None = None,
        cluster_id: str | None = None,
        group_commit: bool = True,
        max_batch: int = 1024,
        readers: int = 4,
        limits: Limits | None = None,
        dedup_window: int = 600,
        recall_window: int = 120,
        edit_window: int = 900,
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        commit_pipeline: int = 2,
    ) -> None:
        """`data_dir` holds the at-rest key and the cluster id file (unless `cluster_id` is given);
        `group_commit=False` commits every write alone (the benchmark baseline); `commit_pipeline` is how many
        batches may be committing at once (1: each batch waits for the previous COMMIT)."""
        if not isinstance(dsn, str) or not dsn:
            raise InvalidArgument("storage.dsn: a PostgreSQL connection string is required")
        self.dsn = dsn
        self.data_dir = Path(data_dir)
        self._encrypt = encrypt_at_rest
        self._key = at_rest_key
        self.key_dir = Path(key_dir) if key_dir is not None else self.data_dir
        self._cluster_id = cluster_id
        self._max_batch = max_batch if group_commit else 1
        self._n_readers = max(1, readers)
        self._migrations = migrations
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pipeline = max(1, int(commit_pipeline)) if group_commit else 1
        self._ctx = OpContext(limits or Limits(), None, clock, dedup_window, recall_window)
        self._ctx.edit_window = edit_window
        self._writer: PgWriter | None = None
        self._pool: asyncpg.Pool | None = None
        self._sends = 0
        self.schema_version = 0

    # lifecycle -------------------------------------------------------------------------------------------
    async def _connect(self) -> Conn:
        return await asyncpg.connect(
            self.dsn, timeout=self._connect_timeout, command_timeout=self._command_timeout
        )

    async def open(self) -> None:
        """Connect, migrate, check the at-rest key and the owning cluster, start the writer and readers."""
        if self._encrypt:
            self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._ctx.cipher = at_rest_cipher(self._key, self.key_dir)
        cluster = self._cluster_id or load_or_create_cluster_id(self.data_dir)
        try:
            conn = await self._connect()
        except CONNECTION_ERRORS as exc:
            raise unavailable(exc) from exc
        try:
            self.schema_version = await migrate(conn, self._migrations)
            await self._check_owner(conn, cluster)
            await self._check_key(conn)
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._n_readers,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
                reset=_keep_session,
            )
        except CONNECTION_ERRORS as exc:
            await _close_quietly(conn)
            raise unavailable(exc) from exc
        except BaseException:
            await _close_quietly(conn)
            raise
        self._pool = pool
        self._writer = PgWriter(self._connect, self._ctx, conn, self._max_batch, self._pipeline)
        self._writer.start()

    async def _meta(self, conn: Conn, key: str, value: str) -> str:
        """The stored value of a meta key, recording `value` if it has none (the first writer wins)."""
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING", key, value
        )
        stored: str = await conn.fetchval("SELECT value FROM meta WHERE key = $1", key)
        return stored

    async def _check_owner(self, conn: Conn, cluster: str) -> None:
        owner = await self._meta(conn, "cluster_id", cluster)
        if owner != cluster:
            database = await conn.fetchval("SELECT current_database()")
            raise ClusterMismatch(
                f"database {database!r} belongs to cluster {owner}, not to this cluster ({cluster}, from "
                f"{self.data_dir / CLUSTER_ID_FILE if self._cluster_id is None else 'storage.cluster_id'}): "
                "refusing to share it. Point storage.dsn at this cluster's own database, or set "
                "storage.cluster_id (or copy cluster.id) if both really are one cluster."
            )

    async def _check_key(self, conn: Conn) -> None:
        cipher = self._ctx.cipher
        if cipher is None:
            return
        names = [r[0] for r in await conn.fetch("SELECT key FROM meta WHERE key LIKE 'at_rest_key_id%'")]
        stored = {}
        for version, kid in cipher.key_ids.items():
            name = key_id_name(version)
            stored[name] = await self._meta(conn, name, kid)
        check_key_ids(cipher, [*names, *stored], lambda name, _value: stored[name], "the database")

    async def reseal(self, limit: int = 500) -> int:
        if self._ctx.cipher is None:
            raise InvalidArgument("this database is not encrypted at rest (storage.encrypt_at_rest)")
        return await self._write(lambda c: messages.reseal(c, self._ctx, limit))

    async def key_usage(self) -> dict[int, int]:
        return await self._read(messages.key_usage)

    async def close(self) -> None:
        """Drain the writer, then close the readers."""
        if self._writer is not None:
            await self._writer.close()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except Exception:
                self._pool.terminate()
        self._writer = None
        self._pool = None

    @property
    def writer(self) -> PgWriter:
        """The group-commit writer (its batch counters are useful to benchmarks)."""
        if self._writer is None:
            raise StorageClosed("storage is not open")
        return self._writer

    async def _write(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return await self.writer.submit(fn)

    async def _read(self, fn: Callable[[Conn], Awaitable[T]], *, single: bool = False) -> T:
        """Run a read in one snapshot (repeatable read, read only); a connection that died while idle in the
        pool (the server restarted) is replaced and the read tried once more. `single`: `fn` runs one SELECT,
        which is a snapshot of its own, so it runs without BEGIN and COMMIT (two round trips fewer)."""
        for attempt in (1, 2):
            pool = self._pool
            if pool is None:
                raise StorageClosed("storage is not open")
            try:
                async with pool.acquire(timeout=self._connect_timeout) as conn:
                    if single:
                        return await fn(conn)
                    async with conn.transaction(isolation="repeatable_read", readonly=True):
                        return await fn(conn)
            except StorageError:
                raise
            except CONNECTION_ERRORS as exc:
                if attempt == 2:
                    raise unavailable(exc) from exc
        raise AssertionError("unreachable")

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
        return await self._read(lambda c: directory.get_users(c, ids), single=True)

    async def get_user_by_login(self, login_name: str) -> User | None:
        return await self._read(lambda c: directory.get_user_by_login(c, login_name), single=True)

    async def list_users_since(self, latest_update_time: int) -> list[User]:
        return await self._read(lambda c: directory.list_users_since(c, latest_update_time), single=True)

    async def get_credentials(self, login_name: str) -> Credentials | None:
        return await self._read(lambda c: directory.get_credentials(c, login_name), single=True)

    async def get_credentials_by_id(self, user_id: int) -> Credentials | None:
        return await self._read(lambda c: directory.get_credentials_by_id(c, user_id), single=True)

    async def consume_ticket_session(self, session_id: bytes, user_id: int, expires: int, now: int) -> bool:
        return await self._write(
            lambda c: directory.consume_ticket_session(c, session_id, user_id, expires, now)
        )

    async def ticket_session_used(self, session_id: bytes, now: int) -> bool:
        async def op(c: Conn) -> bool:
            row = await c.fetchval(
                "SELECT 1 FROM ticket_sessions WHERE session_id = $1 AND expires >= $2",
                bytes(session_id),
                now,
            )
            return row is not None

        return await self._read(op, single=True)

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
        return (await self._read(lambda c: directory.get_user(c, user_id), single=True)).push_shield

    async def create_department(self, name: str, priority: int = 0, parent_id: int = 0) -> Department:
        return await self._write(
            lambda c: directory.create_department(c, self._ctx, name, priority, parent_id)
        )

    async def list_departments_since(self, latest_update_time: int) -> list[Department]:
        return await self._read(
            lambda c: directory.list_departments_since(c, latest_update_time), single=True
        )

    # messages --------------------------------------------------------------------------------------------
    def _count_send(self, writer: PgWriter) -> None:
        """Every `_PRUNE_EVERY` sends, queue a prune of expired dedup keys as an operation of its own."""
        self._sends += 1
        if self._sends % _PRUNE_EVERY == 0:
            writer.submit_nowait(lambda c: messages.prune_dedup(c, self._ctx), _log_prune_failure)

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
        send = messages.check_single(
            self._ctx, from_id, to_id, msg_type, content, dedup_key, burn, token, resend
        )
        self._count_send(writer)
        future: asyncio.Future[SendResult] = asyncio.get_running_loop().create_future()
        writer.submit_send(send, future)
        return await future

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
        the message is committed (or refused); bad input is refused through the callback too."""
        writer = self._writer
        if writer is None:
            raise StorageClosed("storage is not open")
        try:
            send = messages.check_single(
                self._ctx, from_id, to_id, msg_type, content, dedup_key, burn, token, False
            )
        except StorageError as exc:
            callback(None, exc)
            return
        self._count_send(writer)
        writer.submit_send(send, callback)

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
                c, self._ctx, from_id, group_id, msg_type, content, dedup_key, token
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

        async def op(c: Conn) -> Group:
            gid = await groups.create_group(
                c, self._ctx, creator_id, name, group_type, members, avatar, by_admin
            )
            return await groups.get_group(c, None, gid)

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
        await self._write(lambda c: directory.clear_device_token(c, user_id))

    async def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        return await self._read(lambda c: lockout.login_failures(c, keys, since), single=True)

    async def add_login_failure(self, keys: Sequence[str], now: float, window: float) -> None:
        await self._write(lambda c: lockout.add_login_failure(c, keys, now, window))

    async def clear_login_failures(self, keys: Sequence[str]) -> None:
        await self._write(lambda c: lockout.clear_login_failures(c, keys))

    async def note_known_login(self, key: str, now: float, keep: float) -> None:
        await self._write(lambda c: lockout.note_known_login(c, key, now, keep))

    async def is_known_login(self, key: str, since: float) -> bool:
        return await self._read(lambda c: lockout.is_known_login(c, key, since), single=True)

    async def get_device_tokens(self, user_ids: Sequence[int]) -> list[DeviceToken]:
        ids = list(user_ids)
        return await self._read(lambda c: directory.get_device_tokens(c, self._ctx, ids), single=True)

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


async def _columns(conn: Conn) -> list[tuple[str, str, str]]:
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' "
        "ORDER BY c.table_name, c.ordinal_position"
    )
    return [(r[0], r[1], r[2]) for r in rows]


def _ident(name: str) -> str:
    """A quoted identifier (names come from the catalog, never from input; identifiers cannot be bound)."""
    return '"' + name.replace('"', '""') + '"'


async def _scan(conn: Conn, needle: bytes) -> list[str]:
    hits = []
    for table, column, data_type in await _columns(conn):
        value = _ident(column) if data_type == "bytea" else f"convert_to({_ident(column)}::text, 'UTF8')"
        found = await conn.fetchval(
            f"SELECT 1 FROM {_ident(table)} WHERE position($1::bytea in {value}) > 0 LIMIT 1", needle
        )
        if found:
            hits.append(f"{table}.{column}")
    return hits


async def database_digest(dsn: str) -> str:
    """SHA-256 over every row of every table of the database, read in one snapshot (as the SQLite
    `database_digest`: tests compare it before and after refused input)."""
    digest = hashlib.sha256()
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            tables = sorted({t for t, _, _ in await _columns(conn)})
            for table in tables:
                digest.update(table.encode())
                rows = await conn.fetch(f"SELECT * FROM {_ident(table)}")
                for text in sorted(repr(tuple(r.values())) for r in rows):
                    digest.update(text.encode())
    finally:
        await conn.close()
    return digest.hexdigest()


async def _close_quietly(conn: Conn) -> None:
    try:
        await conn.close(timeout=2)
    except Exception:
        conn.terminate()
