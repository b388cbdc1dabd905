"""Storage layer (SQLite): numbered schema migrations, applied in order inside one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.storage.errors import SchemaTooNew


@dataclass(frozen=True)
class Migration:
    """One schema step: its number and the statements (no values: DDL only)."""

    version: int
    statements: tuple[str, ...]


_V1 = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE departments (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0,
        parent_id INTEGER NOT NULL DEFAULT 0, status INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1)),
        created INTEGER NOT NULL, updated INTEGER NOT NULL)""",
    "CREATE INDEX departments_updated ON departments (updated)",
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY, login_name TEXT NOT NULL UNIQUE, nick TEXT NOT NULL, real_name TEXT NOT NULL,
        gender INTEGER NOT NULL CHECK (gender BETWEEN 0 AND 2), avatar TEXT NOT NULL,
        department_id INTEGER NOT NULL, email TEXT NOT NULL, phone TEXT NOT NULL, domain TEXT NOT NULL,
        status INTEGER NOT NULL CHECK (status BETWEEN 0 AND 4), sign_info TEXT NOT NULL,
        push_shield INTEGER NOT NULL DEFAULT 0, password_hash TEXT NOT NULL,
        created INTEGER NOT NULL, updated INTEGER NOT NULL)""",
    "CREATE INDEX users_updated ON users (updated)",
    # One row per user pair; last_msg_id is the pair's msg_id counter (TeamTalk kept it in Redis and lost it).
    """CREATE TABLE pairs (
        id INTEGER PRIMARY KEY, small_id INTEGER NOT NULL REFERENCES users (id),
        big_id INTEGER NOT NULL REFERENCES users (id), last_msg_id INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL, UNIQUE (small_id, big_id), CHECK (small_id < big_id))""",
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY, pair_id INTEGER NOT NULL REFERENCES pairs (id), msg_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL REFERENCES users (id), to_id INTEGER NOT NULL REFERENCES users (id),
        msg_type INTEGER NOT NULL, content BLOB NOT NULL, encrypted INTEGER NOT NULL,
        burn INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL, UNIQUE (pair_id, msg_id))""",
    """CREATE TABLE groups (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, avatar TEXT NOT NULL,
        creator_id INTEGER NOT NULL REFERENCES users (id),
        group_type INTEGER NOT NULL CHECK (group_type IN (1, 2)),
        status INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 1,
        last_msg_id INTEGER NOT NULL DEFAULT 0, last_chated INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL, updated INTEGER NOT NULL)""",
    # visible_from: messages with msg_id > visible_from are visible (the join point, exact to the message).
    """CREATE TABLE group_members (
        group_id INTEGER NOT NULL REFERENCES groups (id), user_id INTEGER NOT NULL REFERENCES users (id),
        status INTEGER NOT NULL DEFAULT 0 CHECK (status IN (0, 1)), joined INTEGER NOT NULL,
        visible_from INTEGER NOT NULL, read_msg_id INTEGER NOT NULL, shield INTEGER NOT NULL DEFAULT 0,
        updated INTEGER NOT NULL, PRIMARY KEY (group_id, user_id)) WITHOUT ROWID""",
    "CREATE INDEX group_members_user ON group_members (user_id, status)",
    """CREATE TABLE group_messages (
        id INTEGER PRIMARY KEY, group_id INTEGER NOT NULL REFERENCES groups (id), msg_id INTEGER NOT NULL,
        from_id INTEGER NOT NULL REFERENCES users (id), msg_type INTEGER NOT NULL, content BLOB NOT NULL,
        encrypted INTEGER NOT NULL, created INTEGER NOT NULL, UNIQUE (group_id, msg_id))""",
    """CREATE TABLE sessions (
        user_id INTEGER NOT NULL REFERENCES users (id),
        session_type INTEGER NOT NULL CHECK (session_type IN (1, 2)),
        peer_id INTEGER NOT NULL, status INTEGER NOT NULL DEFAULT 0, read_msg_id INTEGER NOT NULL DEFAULT 0,
        created INTEGER NOT NULL, updated INTEGER NOT NULL,
        PRIMARY KEY (user_id, session_type, peer_id)) WITHOUT ROWID""",
    "CREATE INDEX sessions_updated ON sessions (user_id, updated)",
    """CREATE TABLE dedup (
        sender_id INTEGER NOT NULL, session_type INTEGER NOT NULL, session_id INTEGER NOT NULL,
        dedup_key BLOB NOT NULL, msg_id INTEGER NOT NULL, created INTEGER NOT NULL,
        PRIMARY KEY (sender_id, session_type, session_id, dedup_key)) WITHOUT ROWID""",
    "CREATE INDEX dedup_created ON dedup (created)",
    """CREATE TABLE device_tokens (
        token TEXT PRIMARY KEY, user_id INTEGER NOT NULL UNIQUE REFERENCES users (id),
        client_type INTEGER NOT NULL, updated INTEGER NOT NULL)""",
    """CREATE TABLE offline_files (
        task_id TEXT PRIMARY KEY, from_id INTEGER NOT NULL REFERENCES users (id),
        to_id INTEGER NOT NULL REFERENCES users (id), file_name TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0), created INTEGER NOT NULL)""",
    "CREATE INDEX offline_files_to ON offline_files (to_id)",
)

# msg's request token of a message stored without a client msg id (runtime.services.biz.convert
# .pack_store_request), 0 for none: a resend of a store whose answer was lost is recognized by it even after
# biz restarted (messages.find_token). An INTEGER, not a BLOB: sqlite3 binds an int directly, a bytes value
# (and None) only after an adapter lookup that costs more than the whole column on the multi-row insert; a 0
# takes no bytes in the record. No index: a lookup scans the newest rows of one conversation (resends only).
_V2 = (
    "ALTER TABLE messages ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE group_messages ADD COLUMN token INTEGER NOT NULL DEFAULT 0",
)

# Resumption tickets (runtime.auth.tickets) whose session id was used, or whose session logged out or was
# kicked, until the ticket would have expired anyway; every biz instance consults the same table.
_V3 = (
    """CREATE TABLE ticket_sessions (session_id BLOB PRIMARY KEY, user_id INTEGER NOT NULL,
        expires INTEGER NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX ticket_sessions_expires ON ticket_sessions (expires)",
)

# Login failure counters and known (login, address) pairs of runtime.auth.lockout, persisted so a restart does
# not forget them and every biz instance sees the same ones. Keys are digests (runtime.auth.lockout.key):
# neither login names nor addresses are stored in clear; rows age out with the lockout window.
_V4 = (
    """CREATE TABLE login_failures (key TEXT PRIMARY KEY, failures INTEGER NOT NULL,
        last_failure REAL NOT NULL) WITHOUT ROWID""",
    "CREATE INDEX login_failures_last ON login_failures (last_failure)",
    "CREATE TABLE known_logins (key TEXT PRIMARY KEY, last_seen REAL NOT NULL) WITHOUT ROWID",
    "CREATE INDEX known_logins_last ON known_logins (last_seen)",
    # Push tokens sealed at rest: `token` then holds a keyed digest, `sealed` the token (NULL: stored plain).
    "ALTER TABLE device_tokens ADD COLUMN sealed BLOB",
)

# Content-free records of recalled and burned messages, for audit: which message (session, msg_id), whose,
# who removed it and when; never its content (docs/teamtalk-extensions.md).
_V5 = (
    """CREATE TABLE tombstones (
        id INTEGER PRIMARY KEY, session_type INTEGER NOT NULL CHECK (session_type IN (1, 2)),
        session_id INTEGER NOT NULL, msg_id INTEGER NOT NULL, from_id INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('recall', 'burn')), actor_id INTEGER NOT NULL,
        sent INTEGER NOT NULL, removed INTEGER NOT NULL)""",
    "CREATE INDEX tombstones_removed ON tombstones (removed)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, _V1),
    Migration(2, _V2),
    Migration(3, _V3),
    Migration(4, _V4),
    Migration(5, _V5),
)


def current_version(conn: sqlite3.Connection) -> int:
    """The database's schema version; 0 for an empty database."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    found = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return int(found[0]) if found else 0


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema up to the newest migration in one transaction; returns the resulting version.

    Raises SchemaTooNew when the database is ahead of this code; a failing migration rolls back entirely.
    The connection must be in autocommit mode (isolation_level=None) so the explicit BEGIN governs DDL too.
    """
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {numbers}")
    latest = len(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY CHECK (id = 1), "
            "version INTEGER NOT NULL)"
        )
        version = current_version(conn)
        if version > latest:
            raise SchemaTooNew(version, latest)
        for migration in migrations[version:]:
            for statement in migration.statements:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (id, version) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (latest,),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return latest
