"""Storage layer (PostgreSQL): recent sessions and unread summaries (async reads, plus removal); the same
rules as the SQLite backend (a group session's time is the later of the member's row and the group's chat)."""

from __future__ import annotations

from runtime.storage.errors import InvalidArgument
from runtime.storage.models import RecentSession, SessionType, UnreadItem, UnreadSummary
from runtime.storage.postgres.common import Conn
from runtime.storage.postgres.messages import latest_message
from runtime.storage.sqlite.context import OpContext, check_int


async def recent_sessions(conn: Conn, ctx: OpContext, user_id: int, since: int) -> list[RecentSession]:
    """Sessions updated after `since`, newest first, capped at the page limit, with their last message."""
    check_int("latest_update_time", since, 0, 2**63 - 1)
    check_int("user_id", user_id, 0, 2**63 - 1)
    found: list[tuple[int, SessionType, int, int, str, int, int]] = []
    singles = await conn.fetch(
        "SELECT s.peer_id, s.status, s.updated, p.id FROM sessions s LEFT JOIN pairs p "
        "ON p.small_id = LEAST(s.user_id, s.peer_id) AND p.big_id = GREATEST(s.user_id, s.peer_id) "
        "WHERE s.user_id = $1 AND s.session_type = 1 AND s.updated > $2",
        user_id,
        since,
    )
    for peer, status, updated, pid in singles:
        found.append((updated, SessionType.SINGLE, peer, status, "s", pid or 0, 0))
    groups = await conn.fetch(
        "SELECT g.id, g.last_chated, m.visible_from, s.status, s.updated FROM group_members m "
        "JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "LEFT JOIN sessions s ON s.user_id = m.user_id AND s.session_type = 2 AND s.peer_id = m.group_id "
        "WHERE m.user_id = $1 AND m.status = 0 AND (g.last_chated > $2 OR s.updated > $2)",
        user_id,
        since,
    )
    for gid, chated, floor, s_status, s_updated in groups:
        own = s_updated or 0
        if own == 0 and chated == 0:
            continue
        status = s_status if s_status is not None and own >= chated else 0
        found.append((max(own, chated), SessionType.GROUP, gid, status, "g", gid, floor))
    found.sort(key=lambda f: (f[0], f[2]), reverse=True)
    out = []
    for updated, stype, sid, status, kind, scope, floor in found[: ctx.limits.max_page]:
        latest = await latest_message(conn, ctx, kind, scope, floor) if scope else None
        out.append(RecentSession(sid, stype, status, updated, latest))
    return out


async def remove_session(conn: Conn, ctx: OpContext, user_id: int, stype: SessionType, sid: int) -> None:
    """Mark the user's session removed (a later message brings it back)."""
    if stype not in (SessionType.SINGLE, SessionType.GROUP):
        raise InvalidArgument(f"unknown session type {stype!r}")
    check_int("session_id", sid, 1)
    check_int("user_id", user_id, 0, 2**63 - 1)
    await conn.execute(
        "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES ($1, $2, $3, 1, 0, $4, $4) ON CONFLICT (user_id, session_type, peer_id) "
        "DO UPDATE SET status = 1, updated = excluded.updated",
        user_id,
        int(stype),
        sid,
        ctx.now(),
    )


async def unread_summary(conn: Conn, ctx: OpContext, user_id: int) -> UnreadSummary:
    """Per-session unread counts with the latest message, and their total."""
    check_int("user_id", user_id, 0, 2**63 - 1)
    items: list[UnreadItem] = []
    singles = await conn.fetch(
        "SELECT s.peer_id, s.read_msg_id, p.id FROM sessions s JOIN pairs p "
        "ON p.small_id = LEAST(s.user_id, s.peer_id) AND p.big_id = GREATEST(s.user_id, s.peer_id) "
        "WHERE s.user_id = $1 AND s.session_type = 1 AND p.last_msg_id > s.read_msg_id",
        user_id,
    )
    for peer, read, pid in singles:
        count = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE pair_id = $1 AND msg_id > $2 AND from_id = $3",
            pid,
            read,
            peer,
        )
        if count:
            latest = await latest_message(conn, ctx, "s", pid, 0)
            items.append(UnreadItem(peer, SessionType.SINGLE, count, latest))
    groups = await conn.fetch(
        "SELECT m.group_id, m.visible_from, GREATEST(m.read_msg_id, m.visible_from) FROM group_members m "
        "JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "WHERE m.user_id = $1 AND m.status = 0 AND g.last_msg_id > GREATEST(m.read_msg_id, m.visible_from)",
        user_id,
    )
    for gid, floor, read in groups:
        count = await conn.fetchval(
            "SELECT count(*) FROM group_messages WHERE group_id = $1 AND msg_id > $2 AND from_id != $3",
            gid,
            read,
            user_id,
        )
        if count:
            latest = await latest_message(conn, ctx, "g", gid, floor)
            items.append(UnreadItem(gid, SessionType.GROUP, count, latest))
    items.sort(key=lambda i: (i.session_type, i.session_id))
    return UnreadSummary(sum(i.unread for i in items), items)
