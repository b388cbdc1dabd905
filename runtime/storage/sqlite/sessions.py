"""Storage layer (SQLite): recent sessions and unread summaries (sync read operations, plus removal).

Group chats appear in every member's recent sessions without a per-member write on each message: a group
session's time is the later of the member's own session row and the group's last chat time.
"""

from __future__ import annotations

import sqlite3

from runtime.storage.errors import InvalidArgument
from runtime.storage.models import RecentSession, SessionType, UnreadItem, UnreadSummary
from runtime.storage.sqlite.context import OpContext, check_int
from runtime.storage.sqlite.messages import latest_message


def recent_sessions(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, since: int
) -> list[RecentSession]:
    """Sessions updated after `since`, newest first, capped at the page limit, with their last message."""
    check_int("latest_update_time", since, 0, 2**63 - 1)
    found: list[tuple[int, SessionType, int, int, str, int, int]] = []  # updated, type, id, status, kind,...
    singles = conn.execute(
        "SELECT s.peer_id, s.status, s.updated, p.id FROM sessions s LEFT JOIN pairs p "
        "ON p.small_id = min(s.user_id, s.peer_id) AND p.big_id = max(s.user_id, s.peer_id) "
        "WHERE s.user_id = ? AND s.session_type = 1 AND s.updated > ?",
        (user_id, since),
    ).fetchall()
    for peer, status, updated, pid in singles:
        found.append((updated, SessionType.SINGLE, peer, status, "s", pid or 0, 0))
    groups = conn.execute(
        "SELECT g.id, g.last_chated, m.visible_from, s.status, s.updated FROM group_members m "
        "JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "LEFT JOIN sessions s ON s.user_id = m.user_id AND s.session_type = 2 AND s.peer_id = m.group_id "
        "WHERE m.user_id = ? AND m.status = 0 AND (g.last_chated > ? OR s.updated > ?)",
        (user_id, since, since),
    ).fetchall()
    for gid, chated, floor, s_status, s_updated in groups:
        own = s_updated or 0
        if own == 0 and chated == 0:
            continue
        # A removal sticks until the group chats again after it.
        status = s_status if s_status is not None and own >= chated else 0
        found.append((max(own, chated), SessionType.GROUP, gid, status, "g", gid, floor))
    found.sort(key=lambda f: (f[0], f[2]), reverse=True)
    out = []
    for updated, stype, sid, status, kind, scope, floor in found[: ctx.limits.max_page]:
        latest = latest_message(conn, ctx, kind, scope, floor) if scope else None
        out.append(RecentSession(sid, stype, status, updated, latest))
    return out


def remove_session(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, stype: SessionType, sid: int
) -> None:
    """Mark the user's session removed (a later message brings it back)."""
    if stype not in (SessionType.SINGLE, SessionType.GROUP):
        raise InvalidArgument(f"unknown session type {stype!r}")
    check_int("session_id", sid, 1)
    now = ctx.now()
    conn.execute(
        "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES (?, ?, ?, 1, 0, ?, ?) ON CONFLICT DO UPDATE SET status = 1, updated = excluded.updated",
        (user_id, int(stype), sid, now, now),
    )


def unread_summary(conn: sqlite3.Connection, ctx: OpContext, user_id: int) -> UnreadSummary:
    """Per-session unread counts with the latest message, and their total."""
    items: list[UnreadItem] = []
    singles = conn.execute(
        "SELECT s.peer_id, s.read_msg_id, p.id FROM sessions s JOIN pairs p "
        "ON p.small_id = min(s.user_id, s.peer_id) AND p.big_id = max(s.user_id, s.peer_id) "
        "WHERE s.user_id = ? AND s.session_type = 1 AND p.last_msg_id > s.read_msg_id",
        (user_id,),
    ).fetchall()
    for peer, read, pid in singles:
        (count,) = conn.execute(
            "SELECT count(*) FROM messages WHERE pair_id = ? AND msg_id > ? AND from_id = ?",
            (pid, read, peer),
        ).fetchone()
        if count:
            items.append(UnreadItem(peer, SessionType.SINGLE, count, latest_message(conn, ctx, "s", pid, 0)))
    groups = conn.execute(
        "SELECT m.group_id, m.visible_from, max(m.read_msg_id, m.visible_from) FROM group_members m "
        "JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "WHERE m.user_id = ? AND m.status = 0 AND g.last_msg_id > max(m.read_msg_id, m.visible_from)",
        (user_id,),
    ).fetchall()
    for gid, floor, read in groups:
        (count,) = conn.execute(
            "SELECT count(*) FROM group_messages WHERE group_id = ? AND msg_id > ? AND from_id != ?",
            (gid, read, user_id),
        ).fetchone()
        if count:
            items.append(
                UnreadItem(gid, SessionType.GROUP, count, latest_message(conn, ctx, "g", gid, floor))
            )
    items.sort(key=lambda i: (i.session_type, i.session_id))
    return UnreadSummary(sum(i.unread for i in items), items)
