"""Storage layer (PostgreSQL): groups, membership rules, versions and per-member mute (async operations).

A member change locks the group row first (`FOR UPDATE`), so two writers changing one group's members
serialize, and the version goes up exactly once per change."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from runtime.storage.errors import AccessDenied, InvalidArgument, NotFound, ValueTooLarge
from runtime.storage.models import Group, GroupMember, GroupModify, GroupType, GroupVersion, MemberChange
from runtime.storage.postgres.common import Conn, require_users
from runtime.storage.sqlite.context import OpContext, check_ids, check_int, check_text


async def _active_members(conn: Conn, group_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT user_id FROM group_members WHERE group_id = $1 AND status = 0 ORDER BY user_id", group_id
    )
    return [r[0] for r in rows]


async def create_group(
    conn: Conn,
    ctx: OpContext,
    creator_id: int,
    name: str,
    group_type: GroupType,
    member_ids: Sequence[int],
    avatar: str,
    by_admin: bool,
) -> int:
    """Insert a group with its creator and members; returns its id. Users may only create TMP groups."""
    for field, value, limit in (("name", name, ctx.limits.max_name), ("avatar", avatar, ctx.limits.max_text)):
        if "\x00" in check_text(field, value, limit):
            raise InvalidArgument(f"{field}: NUL characters are not allowed")
    if group_type not in (GroupType.NORMAL, GroupType.TMP):
        raise InvalidArgument(f"unknown group type {group_type!r}")
    if group_type == GroupType.NORMAL and not by_admin:
        raise AccessDenied("only an administrator may create a NORMAL group")
    members = check_ids("member_ids", [creator_id, *member_ids], ctx.limits.max_group_members)
    members = [check_int("member_ids", m, 1, 2**63 - 1) for m in members]
    await require_users(conn, members)
    now = ctx.now()
    gid: int = await conn.fetchval(
        "INSERT INTO groups (name, avatar, creator_id, group_type, status, version, last_msg_id, "
        "last_chated, created, updated) VALUES ($1, $2, $3, $4, 0, 1, 0, 0, $5, $5) RETURNING id",
        name,
        avatar,
        creator_id,
        int(group_type),
        now,
    )
    await conn.execute(
        "INSERT INTO group_members (group_id, user_id, status, joined, visible_from, read_msg_id, shield, "
        "updated) SELECT $1, u, 0, $2, 0, 0, 0, $2 FROM unnest($3::bigint[]) AS t (u)",
        gid,
        now,
        members,
    )
    return gid


async def _group_row(conn: Conn, group_id: int, *, lock: bool = False) -> asyncpg.Record:
    check_int("group_id", group_id, 0, 2**63 - 1)
    row = await conn.fetchrow(
        "SELECT id, name, avatar, creator_id, group_type, version, last_msg_id, created FROM groups "
        "WHERE id = $1 AND status = 0" + (" FOR UPDATE" if lock else ""),
        group_id,
    )
    if row is None:
        raise NotFound(f"group {group_id}")
    return row


async def change_members(
    conn: Conn,
    ctx: OpContext,
    actor_id: int | None,
    group_id: int,
    modify: GroupModify,
    user_ids: Sequence[int],
) -> MemberChange:
    """Add or remove members under TeamTalk's rules (see the SQLite backend); the version goes up when
    anything changed."""
    if modify not in (GroupModify.ADD, GroupModify.DEL):
        raise InvalidArgument(f"unknown modify type {modify!r}")
    ids = check_ids("user_ids", user_ids, ctx.limits.max_group_members)
    ids = [check_int("user_ids", u, 1, 2**63 - 1) for u in ids]
    group = await _group_row(conn, group_id, lock=True)
    current = set(await _active_members(conn, group_id))
    if actor_id is not None:
        tmp_add = group["group_type"] == GroupType.TMP and modify == GroupModify.ADD and actor_id in current
        if not tmp_add and actor_id != group["creator_id"]:
            raise AccessDenied("only the group creator may change these members")
    now = ctx.now()
    if modify == GroupModify.ADD:
        await require_users(conn, ids)
        changed = [u for u in ids if u not in current]
        if len(current) + len(changed) > ctx.limits.max_group_members:
            raise ValueTooLarge("group members", len(current) + len(changed), ctx.limits.max_group_members)
        last = group["last_msg_id"]
        await conn.execute(
            "INSERT INTO group_members (group_id, user_id, status, joined, visible_from, read_msg_id, "
            "shield, updated) SELECT $1, u, 0, $2, $3, $3, 0, $2 FROM unnest($4::bigint[]) AS t (u) "
            "ON CONFLICT (group_id, user_id) DO UPDATE SET status = 0, joined = excluded.joined, "
            "visible_from = excluded.visible_from, read_msg_id = excluded.read_msg_id, shield = 0, "
            "updated = excluded.updated",
            group_id,
            now,
            last,
            changed,
        )
    else:
        changed = [u for u in ids if u in current]
        await conn.execute(
            "UPDATE group_members SET status = 1, updated = $1 "
            "WHERE group_id = $2 AND user_id = ANY($3::bigint[])",
            now,
            group_id,
            changed,
        )
    version = group["version"]
    if changed:
        version = await conn.fetchval(
            "UPDATE groups SET version = version + 1, updated = $1 WHERE id = $2 RETURNING version",
            now,
            group_id,
        )
    return MemberChange(group_id, version, await _active_members(conn, group_id), changed)


async def get_members(conn: Conn, group_id: int) -> list[GroupMember]:
    """Current members with join time and mute flag."""
    await _group_row(conn, group_id)
    rows = await conn.fetch(
        "SELECT user_id, joined, shield FROM group_members WHERE group_id = $1 AND status = 0 "
        "ORDER BY user_id",
        group_id,
    )
    return [GroupMember(r[0], r[1], bool(r[2])) for r in rows]


async def get_group(conn: Conn, user_id: int | None, group_id: int) -> Group:
    """Full group info; with a user, only for an active member (AccessDenied otherwise)."""
    row = await _group_row(conn, group_id)
    members = await get_members(conn, group_id)
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


async def list_user_groups(conn: Conn, user_id: int, group_type: GroupType | None) -> list[GroupVersion]:
    """The user's groups (optionally of one type) with versions."""
    check_int("user_id", user_id, 0, 2**63 - 1)
    rows = await conn.fetch(
        "SELECT g.id, g.version FROM group_members m JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "WHERE m.user_id = $1 AND m.status = 0 AND ($2::int IS NULL OR g.group_type = $2::int) ORDER BY g.id",
        user_id,
        None if group_type is None else int(group_type),
    )
    return [GroupVersion(r[0], r[1]) for r in rows]


async def groups_info(conn: Conn, ctx: OpContext, user_id: int, known: Sequence[GroupVersion]) -> list[Group]:
    """Info of the user's groups among `known` whose stored version is above the client's."""
    if len(known) > ctx.limits.max_page:
        raise ValueTooLarge("group_version_list", len(known), ctx.limits.max_page)
    mine = {g.group_id: g.version for g in await list_user_groups(conn, user_id, None)}
    out = []
    for item in known:
        check_int("version", item.version)
        stored = mine.get(item.group_id)
        if stored is not None and stored > item.version:
            out.append(await get_group(conn, user_id, item.group_id))
    return out


async def set_shield(conn: Conn, user_id: int, group_id: int, shield: bool) -> None:
    """Mute or unmute the group for an active member."""
    check_int("group_id", group_id, 0, 2**63 - 1)
    check_int("user_id", user_id, 0, 2**63 - 1)
    status = await conn.execute(
        "UPDATE group_members SET shield = $1 WHERE group_id = $2 AND user_id = $3 AND status = 0",
        int(shield),
        group_id,
        user_id,
    )
    if status.endswith(" 0"):
        await _group_row(conn, group_id)
        raise AccessDenied(f"user {user_id} is not a member of group {group_id}")


async def is_member(conn: Conn, user_id: int, group_id: int) -> bool:
    """Whether the user is an active member of a live group."""
    check_int("group_id", group_id, 0, 2**63 - 1)
    check_int("user_id", user_id, 0, 2**63 - 1)
    row = await conn.fetchval(
        "SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id AND g.status = 0 "
        "WHERE m.group_id = $1 AND m.user_id = $2 AND m.status = 0",
        group_id,
        user_id,
    )
    return row is not None
