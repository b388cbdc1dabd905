"""Storage layer (PostgreSQL): login failure counters and known logins (runtime.auth.lockout)."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.storage.postgres.common import Conn
from runtime.storage.sqlite.lockout import check_keys


async def login_failures(conn: Conn, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
    """(failures, last failure) of each key whose last failure is at or after `since`."""
    names = check_keys(keys)
    if not names:
        return {}
    rows = await conn.fetch(
        "SELECT key, failures, last_failure FROM login_failures WHERE key = ANY($1::text[]) "
        "AND last_failure >= $2",
        names,
        since,
    )
    return {str(r[0]): (int(r[1]), float(r[2])) for r in rows}


async def add_login_failure(conn: Conn, keys: Sequence[str], now: float, window: float) -> None:
    """Count one failure against each key (restarting counters idle for `window`); prune idle rows."""
    names = check_keys(keys)
    await conn.execute("DELETE FROM login_failures WHERE last_failure < $1", now - window)
    for name in names:
        await conn.execute(
            "INSERT INTO login_failures (key, failures, last_failure) VALUES ($1, 1, $2) "
            "ON CONFLICT (key) DO UPDATE SET failures = CASE WHEN login_failures.last_failure < $3 THEN 1 "
            "ELSE login_failures.failures + 1 END, last_failure = EXCLUDED.last_failure",
            name,
            now,
            now - window,
        )


async def clear_login_failures(conn: Conn, keys: Sequence[str]) -> None:
    """Forget the keys' counters."""
    names = check_keys(keys)
    if names:
        await conn.execute("DELETE FROM login_failures WHERE key = ANY($1::text[])", names)


async def note_known_login(conn: Conn, key: str, now: float, keep: float) -> None:
    """Remember a successful login's key; forget ones not seen for `keep` seconds."""
    (name,) = check_keys([key])
    await conn.execute("DELETE FROM known_logins WHERE last_seen < $1", now - keep)
    await conn.execute(
        "INSERT INTO known_logins (key, last_seen) VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET last_seen = EXCLUDED.last_seen",
        name,
        now,
    )


async def is_known_login(conn: Conn, key: str, since: float) -> bool:
    """Whether the key logged in successfully at or after `since`."""
    (name,) = check_keys([key])
    row = await conn.fetchval("SELECT 1 FROM known_logins WHERE key = $1 AND last_seen >= $2", name, since)
    return row is not None
