"""Storage layer (PostgreSQL): login failure counters and known logins (runtime.auth.lockout), over the
statements both backends share (runtime.storage.lockout_sql)."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.storage import lockout_sql as q
from runtime.storage.postgres.common import Conn

D = q.POSTGRES


async def login_failures(conn: Conn, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
    """(failures, last failure) of each key whose last failure is at or after `since`."""
    names = q.check_keys(keys)
    if not names:
        return {}
    sql, args = q.select_failures(D, names, since)
    return {str(r[0]): (int(r[1]), float(r[2])) for r in await conn.fetch(sql, *args)}


async def add_login_failure(conn: Conn, keys: Sequence[str], now: float, window: float) -> None:
    """Count one failure against each key (restarting counters idle for `window`); prune idle rows."""
    names = q.check_keys(keys)
    sql, args = q.prune_failures(D, now, window)
    await conn.execute(sql, *args)
    await conn.executemany(q.add_failure(D), [(k, now, now - window) for k in names])


async def clear_login_failures(conn: Conn, keys: Sequence[str]) -> None:
    """Forget the keys' counters."""
    names = q.check_keys(keys)
    if names:
        sql, args = q.clear_failures(D, names)
        await conn.execute(sql, *args)


async def note_known_login(conn: Conn, key: str, now: float, keep: float) -> None:
    """Remember a successful login's key; forget ones not seen for `keep` seconds."""
    name = q.check_key(key)
    for sql, args in (q.prune_known(D, now, keep), q.note_known(D, name, now)):
        await conn.execute(sql, *args)


async def is_known_login(conn: Conn, key: str, since: float) -> bool:
    """Whether the key logged in successfully at or after `since`."""
    sql, args = q.is_known(D, q.check_key(key), since)
    return await conn.fetchval(sql, *args) is not None
