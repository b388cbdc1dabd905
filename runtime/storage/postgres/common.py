"""Storage layer (PostgreSQL): helpers every operation module uses (input checks come from the SQLite side,
where they are backend-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import asyncpg

from runtime.storage.errors import NotFound
from runtime.storage.models import Message
from runtime.storage.sqlite.context import OpContext

Conn: TypeAlias = asyncpg.Connection


async def require_users(conn: Conn, user_ids: Sequence[int]) -> None:
    """NotFound unless every id names an existing user."""
    wanted = set(user_ids)
    if not wanted:
        return
    rows = await conn.fetch("SELECT id FROM users WHERE id = ANY($1::bigint[])", list(wanted))
    missing = sorted(wanted - {r[0] for r in rows})
    if missing:
        raise NotFound(f"unknown user ids {missing}")


def message_from_record(ctx: OpContext, kind: str, scope_id: int, row: asyncpg.Record) -> Message:
    """A Message from a row with msg_id, from_id, created, msg_type, content, encrypted[, burn]."""
    return Message(
        msg_id=row["msg_id"],
        from_user_id=row["from_id"],
        created=row["created"],
        msg_type=row["msg_type"],
        content=ctx.unseal(kind, scope_id, row["msg_id"], row["content"], row["encrypted"]),
        burn=bool(row["burn"]) if "burn" in row.keys() else False,  # noqa: SIM118 (a Record iterates values)
    )
