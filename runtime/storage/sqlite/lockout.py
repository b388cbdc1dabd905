"""Storage layer (SQLite): login failure counters and known logins (runtime.auth.lockout), sync operations."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from runtime.storage.errors import InvalidArgument
from runtime.storage.sqlite.context import placeholders

MAX_KEYS = 8  # keys one operation may name (the limiter uses three)
MAX_KEY_LEN = 80


def check_keys(keys: Sequence[str]) -> list[str]:
    if len(keys) > MAX_KEYS or any(not k or len(k) > MAX_KEY_LEN for k in keys):
        raise InvalidArgument(f"at most {MAX_KEYS} lockout keys of 1..{MAX_KEY_LEN} characters")
    return list(dict.fromkeys(keys))


def login_failures(
    conn: sqlite3.Connection, keys: Sequence[str], since: float
) -> dict[str, tuple[int, float]]:
    """(failures, last failure) of each key whose last failure is at or after `since`."""
    names = check_keys(keys)
    if not names:
        return {}
    rows = conn.execute(
        f"SELECT key, failures, last_failure FROM login_failures WHERE key IN ({placeholders(len(names))}) "
        "AND last_failure >= ?",
        (*names, since),
    ).fetchall()
    return {str(k): (int(n), float(t)) for k, n, t in rows}


def add_login_failure(conn: sqlite3.Connection, keys: Sequence[str], now: float, window: float) -> None:
    """Count one failure against each key; a counter whose last failure is older than `window` restarts at 1.
    Rows idle for longer than the window are pruned."""
    names = check_keys(keys)
    conn.execute("DELETE FROM login_failures WHERE last_failure < ?", (now - window,))
    conn.executemany(
        "INSERT INTO login_failures (key, failures, last_failure) VALUES (?, 1, ?) "
        "ON CONFLICT (key) DO UPDATE SET failures = CASE WHEN last_failure < ? THEN 1 ELSE failures + 1 END, "
        "last_failure = excluded.last_failure",
        [(k, now, now - window) for k in names],
    )


def clear_login_failures(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    """Forget the keys' counters."""
    names = check_keys(keys)
    if names:
        conn.execute(f"DELETE FROM login_failures WHERE key IN ({placeholders(len(names))})", names)


def note_known_login(conn: sqlite3.Connection, key: str, now: float, keep: float) -> None:
    """Remember a successful login's key; forget ones not seen for `keep` seconds."""
    (name,) = check_keys([key])
    conn.execute("DELETE FROM known_logins WHERE last_seen < ?", (now - keep,))
    conn.execute(
        "INSERT INTO known_logins (key, last_seen) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET last_seen = excluded.last_seen",
        (name, now),
    )


def is_known_login(conn: sqlite3.Connection, key: str, since: float) -> bool:
    """Whether the key logged in successfully at or after `since`."""
    (name,) = check_keys([key])
    row = conn.execute(
        "SELECT 1 FROM known_logins WHERE key = ? AND last_seen >= ?", (name, since)
    ).fetchone()
    return row is not None
