"""Storage layer (SQLite): login failure counters and known logins (runtime.auth.lockout), sync operations
over the statements both backends share (runtime.storage.lockout_sql)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from runtime.storage import lockout_sql as q

D = q.SQLITE


def login_failures(
    conn: sqlite3.Connection, keys: Sequence[str], since: float
) -> dict[str, tuple[int, float]]:
    """(failures, last failure) of each key whose last failure is at or after `since`."""
    names = q.check_keys(keys)
    if not names:
        return {}
    rows = conn.execute(*q.select_failures(D, names, since)).fetchall()
    return {str(k): (int(n), float(t)) for k, n, t in rows}


def add_login_failure(conn: sqlite3.Connection, keys: Sequence[str], now: float, window: float) -> None:
    """Count one failure against each key (restarting counters idle for `window`); prune idle rows."""
    names = q.check_keys(keys)
    conn.execute(*q.prune_failures(D, now, window))
    conn.executemany(q.add_failure(D), [(k, now, now - window) for k in names])


def clear_login_failures(conn: sqlite3.Connection, keys: Sequence[str]) -> None:
    """Forget the keys' counters."""
    names = q.check_keys(keys)
    if names:
        conn.execute(*q.clear_failures(D, names))


def note_known_login(conn: sqlite3.Connection, key: str, now: float, keep: float) -> None:
    """Remember a successful login's key; forget ones not seen for `keep` seconds."""
    name = q.check_key(key)
    conn.execute(*q.prune_known(D, now, keep))
    conn.execute(*q.note_known(D, name, now))


def is_known_login(conn: sqlite3.Connection, key: str, since: float) -> bool:
    """Whether the key logged in successfully at or after `since`."""
    return conn.execute(*q.is_known(D, q.check_key(key), since)).fetchone() is not None
