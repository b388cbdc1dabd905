"""Storage layer (SQLite): groups, membership rules, versions and per-member mute (sync operations)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from runtime.storage.errors import AccessDenied, InvalidArgument, NotFound, ValueTooLarge
from runtime.storage.models import (
    Group,
    GroupMember,
    GroupModify,
    GroupType,
    GroupVersion,
    MemberChange,
)
from runtime.storage.sqlite.context import OpContext, check_ids, check_int, check_text, require_users


def _active_members(conn: sqlite3.Connection, group_id: int) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT user_id FROM group_members WHERE group_id = ? AND status = 0 ORDER BY user_id",
            (group_id,),
        )
    ]


def create_group(
    conn: sqlite3.Connection,
    ctx: OpContext,
    creator_id: int,
    name: str,
    group_type: GroupType,
    member_ids: Sequence[int],
    avatar: str,
    by_admin: bool,
) -> int:
    """Insert a group with its creator and members; returns its id. Users may only create TMP groups."""
    check_text("name", name, ctx.limits.max_name)
    check_text("avatar", avatar, ctx.limits.max_text)
    if group_type not in (GroupType.NORMAL, GroupType.TMP):
        raise InvalidArgument(f"unknown group type {group_type!r}")
    if group_type == GroupType.NORMAL and not by_admin:
        raise AccessDenied("only an administrator may create a NORMAL group")
    members = check_ids("member_ids", [creator_id, *member_ids], ctx.limits.max_group_members)
    require_users(conn, members)
    now = ctx.now()
    cur = conn.execute(
        "INSERT INTO groups (name, avatar, creator_id, group_type, status, version, last_msg_id, "
        "last_chated, created, updated) VALUES (?, ?, ?, ?, 0, 1, 0, 0, ?, ?)",
        (name, avatar, creator_id, int(group_type), now, now),
    )
    gid = cur.lastrowid
    assert gid is not None
    conn.executemany(
        "INSERT INTO group_members (group_id, user_id, status, joined, visible_from, read_msg_id, "
        "shield, updated) VALUES (?, ?, 0, ?, 0, 0, 0, ?)",
        [(gid, uid, now, now) for uid in members],
    )
    return gid


def _group_row(conn: sqlite3.Connection, group_id: int) -> sqlite3.Row:
    row = conn.execute(
        "SELECT id, name, avatar, creator_id, group_type, version, last_msg_id, created FROM groups "
        "WHERE id = ? AND status = 0",
        (group_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"group {group_id}")
    return row  # type: ignore[no-any-return]


def change_members(
    conn: sqlite3.Connection,
    ctx: OpContext,
    actor_id: int | None,
    group_id: int,
    modify: GroupModify,
    user_ids: Sequence[int],
) -> MemberChange:
    """Add or remove members under TeamTalk's rules; the version goes up when anything changed.

    Rules: any current member may ADD to a TMP group; every other change needs the creator; actor None (the
    admin/system caller) bypasses both.
    """
    if modify not in (GroupModify.ADD, GroupModify.DEL):
        raise InvalidArgument(f"unknown modify type {modify!r}")
    ids = check_ids("user_ids", user_ids, ctx.limits.max_group_members)
    group = _group_row(conn, group_id)
    current = set(_active_members(conn, group_id))
    if actor_id is not None:
        tmp_add = group["group_type"] == GroupType.TMP and modify == GroupModify.ADD and actor_id in current
        if not tmp_add and actor_id != group["creator_id"]:
            raise AccessDenied("only the group creator may change these members")
    now = ctx.now()
    changed: list[int] = []
    if modify == GroupModify.ADD:
        require_users(conn, ids)
        changed = [u for u in ids if u not in current]
        if len(current) + len(changed) > ctx.limits.max_group_members:
            raise ValueTooLarge("group members", len(current) + len(changed), ctx.limits.max_group_members)
        last = group["last_msg_id"]
        # A (re)joining member sees only messages after this point, and starts with nothing unread.
        conn.executemany(
            "INSERT INTO group_members (group_id, user_id, status, joined, visible_from, read_msg_id, "
            "shield, updated) VALUES (?, ?, 0, ?, ?, ?, 0, ?) ON CONFLICT DO UPDATE SET status = 0, "
            "joined = excluded.joined, visible_from = excluded.visible_from, "
            "read_msg_id = excluded.read_msg_id, "
            "shield = 0, updated = excluded.updated",
            [(group_id, u, now, last, last, now) for u in changed],
        )
    else:
        changed = [u for u in ids if u in current]
        conn.executemany(
            "UPDATE group_members SET status = 1, updated = ? WHERE group_id = ? AND user_id = ?",
            [(now, group_id, u) for u in changed],
        )
    version = group["version"]
    if changed:
        (version,) = conn.execute(
            "UPDATE groups SET version = version + 1, updated = ? WHERE id = ? RETURNING version",
            (now, group_id),
        ).fetchone()
    return MemberChange(group_id, version, _active_members(conn, group_id), changed)


def get_members(conn: sqlite3.Connection, group_id: int) -> list[GroupMember]:
    """Current members with join time and mute flag."""
    _group_row(conn, group_id)
    rows = conn.execute(
        "SELECT user_id, joined, shield FROM group_members WHERE group_id = ? AND status = 0 "
        "ORDER BY user_id",
        (group_id,),
    ).fetchall()
    return [GroupMember(r[0], r[1], bool(r[2])) for r in rows]


def get_group(conn: sqlite3.Connection, user_id: int | None, group_id: int) -> Group:
    """Full group info; with a user, only for an active member (AccessDenied otherwise)."""
    row = _group_row(conn, group_id)
    members = get_members(conn, group_id)
    shield = False
    if user_id is not None:
        mine = [m for m in members if m.user_id == user_id]
        if not mine:
            raise AccessDenied(f"user {user_id} is not a member of group {group_id}")
        shield = mine[0].shield
    return Group(
        id=row["id"],
        name=row["name"],
        avatar=row["avatar"],
        creator_id=row["creator_id"],
        group_type=GroupType(row["group_type"]),
        version=row["version"],
        created=row["created"],
        members=members,
        shield=shield,
    )


def list_user_groups(
    conn: sqlite3.Connection, user_id: int, group_type: GroupType | None
) -> list[GroupVersion]:
    """The user's groups (optionally of one type) with versions."""
    rows = conn.execute(
        "SELECT g.id, g.version FROM group_members m JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "WHERE m.user_id = ? AND m.status = 0 AND (? IS NULL OR g.group_type = ?) ORDER BY g.id",
        (
            user_id,
            None if group_type is None else int(group_type),
            None if group_type is None else int(group_type),
        ),
    ).fetchall()
    return [GroupVersion(r[0], r[1]) for r in rows]


def groups_info(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, known: Sequence[GroupVersion]
) -> list[Group]:
    """Info of the user's groups among `known` whose stored version is above the client's."""
    if len(known) > ctx.limits.max_page:
        raise ValueTooLarge("group_version_list", len(known), ctx.limits.max_page)
    mine = {g.group_id: g.version for g in list_user_groups(conn, user_id, None)}
    out = []
    for item in known:
        check_int("version", item.version)
        stored = mine.get(item.group_id)
        if stored is not None and stored > item.version:
            out.append(get_group(conn, user_id, item.group_id))
    return out


def set_shield(conn: sqlite3.Connection, user_id: int, group_id: int, shield: bool) -> None:
    """Mute or unmute the group for an active member."""
    cur = conn.execute(
        "UPDATE group_members SET shield = ? WHERE group_id = ? AND user_id = ? AND status = 0",
        (int(shield), group_id, user_id),
    )
    if cur.rowcount == 0:
        _group_row(conn, group_id)
        raise AccessDenied(f"user {user_id} is not a member of group {group_id}")


def is_member(conn: sqlite3.Connection, user_id: int, group_id: int) -> bool:
    """Whether the user is an active member of a live group."""
    row = conn.execute(
        "SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "WHERE m.group_id = ? AND m.user_id = ? AND m.status = 0",
        (group_id, user_id),
    ).fetchone()
    return row is not None
