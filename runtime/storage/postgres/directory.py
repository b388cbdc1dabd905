"""Storage layer (PostgreSQL): users, departments, push tokens and offline-file records (async operations)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from runtime.storage.errors import AccessDenied, Conflict, InvalidArgument, NotFound
from runtime.storage.models import (
    Credentials,
    Department,
    DeviceToken,
    NewUser,
    OfflineFile,
    User,
    UserPatch,
    UserStatus,
)
from runtime.storage.postgres.common import Conn, require_users
from runtime.storage.sqlite.context import OpContext, check_int, check_text
from runtime.storage.sqlite.directory import _PATCH_COLUMNS, MAX_TICKET_SESSION, _check_profile_value

_USER_COLUMNS = (
    "id, login_name, nick, real_name, gender, avatar, department_id, email, phone, domain, status, "
    "sign_info, push_shield, created, updated"
)
_SETTABLE = ("sign_info", "push_shield", "password_hash")  # whitelisted column names; values are bound


def _user(row: asyncpg.Record) -> User:
    return User(
        id=row["id"],
        login_name=row["login_name"],
        nick=row["nick"],
        real_name=row["real_name"],
        gender=row["gender"],
        avatar=row["avatar"],
        department_id=row["department_id"],
        email=row["email"],
        phone=row["phone"],
        domain=row["domain"],
        status=row["status"],
        sign_info=row["sign_info"],
        push_shield=bool(row["push_shield"]),
        created=row["created"],
        updated=row["updated"],
    )


def _no_nul(field: str, value: str) -> str:
    """PostgreSQL text cannot hold NUL characters (SQLite can): refused as bad input, nothing written."""
    if "\x00" in value:
        raise InvalidArgument(f"{field}: NUL characters are not allowed")
    return value


def _text(field: str, value: object, limit: int) -> str:
    return _no_nul(field, check_text(field, value, limit))  # type: ignore[arg-type]


async def get_user(conn: Conn, user_id: int) -> User:
    """One user; NotFound if absent."""
    check_int("user_id", user_id, 0, 2**63 - 1)
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound(f"user {user_id}")
    return _user(row)


def _profile(ctx: OpContext, field: str, value: object) -> object:
    checked = _check_profile_value(ctx, field, value)
    return _no_nul(field, checked) if isinstance(checked, str) else checked


async def create_user(conn: Conn, ctx: OpContext, new: NewUser) -> User:
    """Insert a user; Conflict if the login name is taken."""
    login = _text("login_name", new.login_name, ctx.limits.max_name)
    if not login:
        raise InvalidArgument("login_name: must not be empty")
    values = {f: _profile(ctx, f, getattr(new, f)) for f in _PATCH_COLUMNS}
    sign = _text("sign_info", new.sign_info, ctx.limits.max_text)
    pw = _text("password_hash", new.password_hash, ctx.limits.max_text)
    now = ctx.now()
    try:
        row = await conn.fetchrow(
            "INSERT INTO users (login_name, nick, real_name, gender, avatar, department_id, email, phone, "
            "domain, status, sign_info, push_shield, password_hash, created, updated) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0, $12, $13, $13) "
            f"RETURNING {_USER_COLUMNS}",
            login,
            values["nick"],
            values["real_name"],
            values["gender"],
            values["avatar"],
            values["department_id"],
            values["email"],
            values["phone"],
            values["domain"],
            values["status"],
            sign,
            pw,
            now,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"login name already taken: {login!r}") from exc
    return _user(row)


async def create_users(conn: Conn, ctx: OpContext, users: Sequence[NewUser]) -> list[User]:
    """Insert users in the caller's transaction: all of them, or (on the first error) none."""
    return [await create_user(conn, ctx, new) for new in users]


async def update_user(conn: Conn, ctx: OpContext, user_id: int, patch: UserPatch) -> User:
    """Apply the non-None fields of the patch and bump `updated`."""
    await get_user(conn, user_id)
    for column in _PATCH_COLUMNS:
        value = getattr(patch, column)
        if value is not None:
            checked = _profile(ctx, column, value)
            await conn.execute(f"UPDATE users SET {column} = $1 WHERE id = $2", checked, user_id)
    await conn.execute("UPDATE users SET updated = $1 WHERE id = $2", ctx.now(), user_id)
    return await get_user(conn, user_id)


async def set_user_field(conn: Conn, ctx: OpContext, user_id: int, column: str, value: object) -> None:
    """Set sign_info, push_shield or password_hash (the whitelisted single-field updates)."""
    if column not in _SETTABLE:
        raise InvalidArgument(f"not a settable field: {column}")
    if column != "push_shield":
        value = _text(column, value, ctx.limits.max_text)
    check_int("user_id", user_id, 0, 2**63 - 1)
    status = await conn.execute(
        f"UPDATE users SET {column} = $1, updated = $2 WHERE id = $3", value, ctx.now(), user_id
    )
    if status.endswith(" 0"):
        raise NotFound(f"user {user_id}")


def _ids(user_ids: Sequence[int]) -> list[int]:
    return [check_int("user_id", u, 0, 2**63 - 1) for u in dict.fromkeys(user_ids)]


async def get_users(conn: Conn, user_ids: Sequence[int]) -> list[User]:
    """Existing users among the ids, in id order."""
    ids = _ids(user_ids)
    if not ids:
        return []
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = ANY($1::bigint[]) ORDER BY id", ids
    )
    return [_user(r) for r in rows]


async def get_user_by_login(conn: Conn, login_name: str) -> User | None:
    """The user with the login name, if any."""
    if "\x00" in login_name:
        return None
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE login_name = $1", login_name)
    return _user(row) if row else None


async def list_users_since(conn: Conn, since: int) -> list[User]:
    """Users updated after the time, departed users hidden."""
    check_int("latest_update_time", since, -(2**63), 2**63 - 1)
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users WHERE updated > $1 AND status != $2 ORDER BY id",
        since,
        int(UserStatus.LEFT),
    )
    return [_user(r) for r in rows]


async def get_credentials(conn: Conn, login_name: str) -> Credentials | None:
    """Id, hash and status for the login name."""
    if "\x00" in login_name:
        return None
    row = await conn.fetchrow("SELECT id, password_hash, status FROM users WHERE login_name = $1", login_name)
    return Credentials(row["id"], row["password_hash"], row["status"]) if row else None


async def get_credentials_by_id(conn: Conn, user_id: int) -> Credentials | None:
    """Id, hash and status of a user id."""
    check_int("user_id", user_id)
    row = await conn.fetchrow("SELECT id, password_hash, status FROM users WHERE id = $1", user_id)
    return Credentials(row["id"], row["password_hash"], row["status"]) if row else None


async def consume_ticket_session(conn: Conn, session_id: bytes, user_id: int, expires: int, now: int) -> bool:
    """Record the ticket session id unless present (True if recorded: the ticket's one use); prune records
    of tickets expired before `now`. Two biz instances consuming one id at once: one insert wins."""
    if not session_id or len(session_id) > MAX_TICKET_SESSION:
        raise InvalidArgument("ticket session id must be 1..64 bytes")
    await conn.execute("DELETE FROM ticket_sessions WHERE expires < $1", now)
    row = await conn.fetchrow(
        "INSERT INTO ticket_sessions (session_id, user_id, expires) VALUES ($1, $2, $3) "
        "ON CONFLICT (session_id) DO NOTHING RETURNING 1",
        bytes(session_id),
        user_id,
        expires,
    )
    return row is not None


async def create_department(
    conn: Conn, ctx: OpContext, name: str, priority: int, parent_id: int
) -> Department:
    """Insert a department under parent_id (0 = root)."""
    _text("name", name, ctx.limits.max_name)
    check_int("priority", priority)
    check_int("parent_id", parent_id)
    if parent_id and await conn.fetchval("SELECT 1 FROM departments WHERE id = $1", parent_id) is None:
        raise NotFound(f"department {parent_id}")
    now = ctx.now()
    dept_id = await conn.fetchval(
        "INSERT INTO departments (name, priority, parent_id, status, created, updated) "
        "VALUES ($1, $2, $3, 0, $4, $4) RETURNING id",
        name,
        priority,
        parent_id,
        now,
    )
    return Department(dept_id, name, priority, parent_id, 0, now)


async def list_departments_since(conn: Conn, since: int) -> list[Department]:
    """Departments updated after the time."""
    check_int("latest_update_time", since, -(2**63), 2**63 - 1)
    rows = await conn.fetch(
        "SELECT id, name, priority, parent_id, status, updated FROM departments "
        "WHERE updated > $1 ORDER BY id",
        since,
    )
    return [Department(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def set_device_token(conn: Conn, ctx: OpContext, user_id: int, token: str, client_type: int) -> None:
    """Bind the token to the user: one user per token and one token per user."""
    _text("token", token, ctx.limits.max_text)
    if not token:
        raise InvalidArgument("token: must not be empty")
    check_int("client_type", client_type)
    check_int("user_id", user_id, 0, 2**63 - 1)
    await require_users(conn, [user_id])
    column, sealed = ctx.seal_token(token)
    await conn.execute("DELETE FROM device_tokens WHERE token = $1 OR user_id = $2", column, user_id)
    await conn.execute(
        "INSERT INTO device_tokens (token, user_id, client_type, updated, sealed) "
        "VALUES ($1, $2, $3, $4, $5)",
        column,
        user_id,
        client_type,
        ctx.now(),
        sealed,
    )


async def clear_device_token(conn: Conn, user_id: int) -> None:
    """Forget the user's push token."""
    check_int("user_id", user_id, 0, 2**63 - 1)
    await conn.execute("DELETE FROM device_tokens WHERE user_id = $1", user_id)


async def get_device_tokens(conn: Conn, ctx: OpContext, user_ids: Sequence[int]) -> list[DeviceToken]:
    """Tokens of the users, in user order."""
    ids = _ids(user_ids)
    if not ids:
        return []
    rows = await conn.fetch(
        "SELECT user_id, token, client_type, sealed FROM device_tokens WHERE user_id = ANY($1::bigint[]) "
        "ORDER BY user_id",
        ids,
    )
    return [DeviceToken(r[0], ctx.unseal_token(r[1], r[3]), r[2]) for r in rows]


async def add_offline_file(conn: Conn, ctx: OpContext, rec: OfflineFile) -> OfflineFile:
    """Insert an offline file record; Conflict if the task id exists."""
    _text("task_id", rec.task_id, ctx.limits.max_name)
    _text("file_name", rec.file_name, ctx.limits.max_text)
    check_int("size", rec.size, 0, 2**63 - 1)
    if not rec.task_id:
        raise InvalidArgument("task_id: must not be empty")
    if rec.from_user_id == rec.to_user_id:
        raise InvalidArgument("an offline file needs two different users")
    check_int("from_user_id", rec.from_user_id, 0, 2**63 - 1)
    check_int("to_user_id", rec.to_user_id, 0, 2**63 - 1)
    await require_users(conn, [rec.from_user_id, rec.to_user_id])
    now = ctx.now()
    try:
        await conn.execute(
            "INSERT INTO offline_files (task_id, from_id, to_id, file_name, size, created) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            rec.task_id,
            rec.from_user_id,
            rec.to_user_id,
            rec.file_name,
            rec.size,
            now,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"offline file task exists: {rec.task_id!r}") from exc
    return OfflineFile(rec.task_id, rec.from_user_id, rec.to_user_id, rec.file_name, rec.size, now)


async def list_offline_files(conn: Conn, to_user_id: int) -> list[OfflineFile]:
    """Records waiting for the user, oldest first."""
    check_int("to_user_id", to_user_id, 0, 2**63 - 1)
    rows = await conn.fetch(
        "SELECT task_id, from_id, to_id, file_name, size, created FROM offline_files WHERE to_id = $1 "
        "ORDER BY created, task_id",
        to_user_id,
    )
    return [OfflineFile(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def delete_offline_file(conn: Conn, user_id: int, task_id: str) -> None:
    """Delete a record as its sender or receiver."""
    if "\x00" in task_id:
        raise NotFound(f"offline file {task_id!r}")
    row = await conn.fetchrow("SELECT from_id, to_id FROM offline_files WHERE task_id = $1", task_id)
    if row is None:
        raise NotFound(f"offline file {task_id!r}")
    if user_id not in (row[0], row[1]):
        raise AccessDenied("only the sender or receiver may delete an offline file")
    await conn.execute("DELETE FROM offline_files WHERE task_id = $1", task_id)
