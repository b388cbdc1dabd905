"""Storage layer (SQLite): users, departments, push tokens and offline-file records (sync operations)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

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
from runtime.storage.sqlite.context import (
    OpContext,
    check_int,
    check_text,
    placeholders,
    require_users,
)

_USER_COLUMNS = (
    "id, login_name, nick, real_name, gender, avatar, department_id, email, phone, domain, status, "
    "sign_info, push_shield, created, updated"
)
_NAME_FIELDS = ("nick", "real_name")
_TEXT_FIELDS = ("avatar", "email", "phone", "domain")
# Whitelisted column names for UserPatch; values are always bound parameters.
_PATCH_COLUMNS = (
    "nick",
    "real_name",
    "gender",
    "avatar",
    "department_id",
    "email",
    "phone",
    "domain",
    "status",
)


def _user(row: sqlite3.Row) -> User:
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


def _check_profile_value(ctx: OpContext, field: str, value: object) -> object:
    lim = ctx.limits
    if field in _NAME_FIELDS:
        return check_text(field, value, lim.max_name)  # type: ignore[arg-type]
    if field in _TEXT_FIELDS:
        return check_text(field, value, lim.max_text)  # type: ignore[arg-type]
    if field == "gender":
        return check_int(field, value, 0, 2)  # type: ignore[arg-type]
    if field == "status":
        return check_int(field, value, 0, int(UserStatus.INTERN))  # type: ignore[arg-type]
    return check_int(field, value)  # type: ignore[arg-type]


def get_user(conn: sqlite3.Connection, user_id: int) -> User:
    """One user; NotFound if absent."""
    row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)).fetchone()
    if row is None:
        raise NotFound(f"user {user_id}")
    return _user(row)


def create_user(conn: sqlite3.Connection, ctx: OpContext, new: NewUser) -> User:
    """Insert a user; Conflict if the login name is taken."""
    login = check_text("login_name", new.login_name, ctx.limits.max_name)
    if not login:
        raise InvalidArgument("login_name: must not be empty")
    values = {f: _check_profile_value(ctx, f, getattr(new, f)) for f in _PATCH_COLUMNS}
    sign = check_text("sign_info", new.sign_info, ctx.limits.max_text)
    pw = check_text("password_hash", new.password_hash, ctx.limits.max_text)
    now = ctx.now()
    try:
        cur = conn.execute(
            "INSERT INTO users (login_name, nick, real_name, gender, avatar, department_id, email, phone, "
            "domain, status, sign_info, push_shield, password_hash, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
            (
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
                now,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"login name already taken: {login!r}") from exc
    assert cur.lastrowid is not None
    return get_user(conn, cur.lastrowid)


def create_users(conn: sqlite3.Connection, ctx: OpContext, users: Sequence[NewUser]) -> list[User]:
    """Insert users in the caller's transaction: all of them, or (on the first error) none."""
    return [create_user(conn, ctx, new) for new in users]


def update_user(conn: sqlite3.Connection, ctx: OpContext, user_id: int, patch: UserPatch) -> User:
    """Apply the non-None fields of the patch and bump `updated`."""
    get_user(conn, user_id)
    for column in _PATCH_COLUMNS:
        value = getattr(patch, column)
        if value is not None:
            checked = _check_profile_value(ctx, column, value)
            conn.execute(f"UPDATE users SET {column} = ? WHERE id = ?", (checked, user_id))
    conn.execute("UPDATE users SET updated = ? WHERE id = ?", (ctx.now(), user_id))
    return get_user(conn, user_id)


def set_user_field(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, column: str, value: object
) -> None:
    """Set sign_info, push_shield or password_hash (the whitelisted single-field updates)."""
    if column not in ("sign_info", "push_shield", "password_hash"):
        raise InvalidArgument(f"not a settable field: {column}")
    if column != "push_shield":
        value = check_text(column, value, ctx.limits.max_text)  # type: ignore[arg-type]
    cur = conn.execute(
        f"UPDATE users SET {column} = ?, updated = ? WHERE id = ?", (value, ctx.now(), user_id)
    )
    if cur.rowcount == 0:
        raise NotFound(f"user {user_id}")


def get_credentials_by_id(conn: sqlite3.Connection, user_id: int) -> Credentials | None:
    """Id, hash and status of a user id."""
    row = conn.execute("SELECT id, password_hash, status FROM users WHERE id = ?", (user_id,)).fetchone()
    return Credentials(row["id"], row["password_hash"], row["status"]) if row else None


MAX_TICKET_SESSION = 64


def consume_ticket_session(
    conn: sqlite3.Connection, session_id: bytes, user_id: int, expires: int, now: int
) -> bool:
    """Insert the ticket session id unless present (True if inserted); prune records expired before `now`."""
    if not session_id or len(session_id) > MAX_TICKET_SESSION:
        raise InvalidArgument("ticket session id must be 1..64 bytes")
    conn.execute("DELETE FROM ticket_sessions WHERE expires < ?", (now,))
    cur = conn.execute(
        "INSERT OR IGNORE INTO ticket_sessions (session_id, user_id, expires) VALUES (?, ?, ?)",
        (bytes(session_id), user_id, expires),
    )
    return cur.rowcount == 1


def get_users(conn: sqlite3.Connection, user_ids: Sequence[int]) -> list[User]:
    """Existing users among the ids, in id order."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return []
    rows = conn.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ({placeholders(len(ids))}) ORDER BY id", ids
    ).fetchall()
    return [_user(r) for r in rows]


def get_user_by_login(conn: sqlite3.Connection, login_name: str) -> User | None:
    """The user with the login name, if any."""
    row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE login_name = ?", (login_name,)).fetchone()
    return _user(row) if row else None


def list_users_since(conn: sqlite3.Connection, since: int) -> list[User]:
    """Users updated after the time, departed users hidden."""
    rows = conn.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE updated > ? AND status != ? ORDER BY id",
        (since, int(UserStatus.LEFT)),
    ).fetchall()
    return [_user(r) for r in rows]


def get_credentials(conn: sqlite3.Connection, login_name: str) -> Credentials | None:
    """Id, hash and status for the login name."""
    row = conn.execute(
        "SELECT id, password_hash, status FROM users WHERE login_name = ?", (login_name,)
    ).fetchone()
    return Credentials(row["id"], row["password_hash"], row["status"]) if row else None


def create_department(
    conn: sqlite3.Connection, ctx: OpContext, name: str, priority: int, parent_id: int
) -> Department:
    """Insert a department under parent_id (0 = root)."""
    check_text("name", name, ctx.limits.max_name)
    check_int("priority", priority)
    check_int("parent_id", parent_id)
    if parent_id and conn.execute("SELECT 1 FROM departments WHERE id = ?", (parent_id,)).fetchone() is None:
        raise NotFound(f"department {parent_id}")
    now = ctx.now()
    cur = conn.execute(
        "INSERT INTO departments (name, priority, parent_id, status, created, updated) "
        "VALUES (?, ?, ?, 0, ?, ?)",
        (name, priority, parent_id, now, now),
    )
    assert cur.lastrowid is not None
    return Department(cur.lastrowid, name, priority, parent_id, 0, now)


def list_departments_since(conn: sqlite3.Connection, since: int) -> list[Department]:
    """Departments updated after the time."""
    rows = conn.execute(
        "SELECT id, name, priority, parent_id, status, updated FROM departments "
        "WHERE updated > ? ORDER BY id",
        (since,),
    ).fetchall()
    return [Department(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def set_device_token(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, token: str, client_type: int
) -> None:
    """Bind the token to the user: one user per token and one token per user."""
    check_text("token", token, ctx.limits.max_text)
    if not token:
        raise InvalidArgument("token: must not be empty")
    check_int("client_type", client_type)
    require_users(conn, [user_id])
    column, sealed = ctx.seal_token(token)
    conn.execute("DELETE FROM device_tokens WHERE token = ? OR user_id = ?", (column, user_id))
    conn.execute(
        "INSERT INTO device_tokens (token, user_id, client_type, updated, sealed) VALUES (?, ?, ?, ?, ?)",
        (column, user_id, client_type, ctx.now(), sealed),
    )


def get_device_tokens(conn: sqlite3.Connection, ctx: OpContext, user_ids: Sequence[int]) -> list[DeviceToken]:
    """Tokens of the users, in user order."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return []
    rows = conn.execute(
        "SELECT user_id, token, client_type, sealed FROM device_tokens "
        f"WHERE user_id IN ({placeholders(len(ids))}) ORDER BY user_id",
        ids,
    ).fetchall()
    return [DeviceToken(r[0], ctx.unseal_token(r[1], r[3]), r[2]) for r in rows]


def add_offline_file(conn: sqlite3.Connection, ctx: OpContext, rec: OfflineFile) -> OfflineFile:
    """Insert an offline file record; Conflict if the task id exists."""
    check_text("task_id", rec.task_id, ctx.limits.max_name)
    check_text("file_name", rec.file_name, ctx.limits.max_text)
    check_int("size", rec.size, 0, 2**63 - 1)
    if not rec.task_id:
        raise InvalidArgument("task_id: must not be empty")
    if rec.from_user_id == rec.to_user_id:
        raise InvalidArgument("an offline file needs two different users")
    require_users(conn, [rec.from_user_id, rec.to_user_id])
    now = ctx.now()
    try:
        conn.execute(
            "INSERT INTO offline_files (task_id, from_id, to_id, file_name, size, created) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (rec.task_id, rec.from_user_id, rec.to_user_id, rec.file_name, rec.size, now),
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"offline file task exists: {rec.task_id!r}") from exc
    return OfflineFile(rec.task_id, rec.from_user_id, rec.to_user_id, rec.file_name, rec.size, now)


def list_offline_files(conn: sqlite3.Connection, to_user_id: int) -> list[OfflineFile]:
    """Records waiting for the user, oldest first."""
    rows = conn.execute(
        "SELECT task_id, from_id, to_id, file_name, size, created FROM offline_files WHERE to_id = ? "
        "ORDER BY created, task_id",
        (to_user_id,),
    ).fetchall()
    return [OfflineFile(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


def delete_offline_file(conn: sqlite3.Connection, user_id: int, task_id: str) -> None:
    """Delete a record as its sender or receiver."""
    row = conn.execute("SELECT from_id, to_id FROM offline_files WHERE task_id = ?", (task_id,)).fetchone()
    if row is None:
        raise NotFound(f"offline file {task_id!r}")
    if user_id not in (row[0], row[1]):
        raise AccessDenied("only the sender or receiver may delete an offline file")
    conn.execute("DELETE FROM offline_files WHERE task_id = ?", (task_id,))
