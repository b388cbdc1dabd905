"""Groups: creation rules, member-change permissions, versions, mute, lists and versioned info."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from runtime.storage import AccessDenied, GroupModify, GroupType, GroupVersion, NotFound, SessionType, User
from runtime.storage.sqlite import SqliteStorage

MkUsers = Callable[..., Awaitable[list[User]]]
ADD, DEL = GroupModify.ADD, GroupModify.DEL


def test_create_rules(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            with pytest.raises(AccessDenied, match="NORMAL"):
                await s.create_group(a.id, "dept", GroupType.NORMAL, [b.id])
            normal = await s.create_group(a.id, "dept", GroupType.NORMAL, [b.id], by_admin=True)
            tmp = await s.create_group(b.id, "chat", GroupType.TMP, [a.id, a.id], avatar="http://x/y.png")
            assert [m.user_id for m in tmp.members] == [a.id, b.id]  # creator included, duplicates dropped
            assert (tmp.version, tmp.creator_id, tmp.avatar) == (1, b.id, "http://x/y.png")
            with pytest.raises(NotFound):
                await s.create_group(a.id, "ghosts", GroupType.TMP, [12345])
            assert await s.list_user_groups(b.id) == [GroupVersion(normal.id, 1), GroupVersion(tmp.id, 1)]
            assert await s.list_user_groups(b.id, GroupType.NORMAL) == [GroupVersion(normal.id, 1)]

    asyncio.run(body())


def test_member_change_permissions(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            owner, member, outsider, x, y = await mk_users(s, "owner", "member", "outsider", "x", "y")
            tmp = await s.create_group(owner.id, "t", GroupType.TMP, [member.id])
            normal = await s.create_group(owner.id, "n", GroupType.NORMAL, [member.id], by_admin=True)
            # any member may add to a TMP group
            change = await s.change_group_members(member.id, tmp.id, ADD, [x.id])
            assert (change.version, change.changed, change.members) == (
                2,
                [x.id],
                [owner.id, member.id, x.id],
            )
            # an outsider may not (a deliberate tightening: TeamTalk let anyone add)
            with pytest.raises(AccessDenied):
                await s.change_group_members(outsider.id, tmp.id, ADD, [y.id])
            # only the creator removes, and only the creator changes a NORMAL group
            with pytest.raises(AccessDenied):
                await s.change_group_members(member.id, tmp.id, DEL, [x.id])
            with pytest.raises(AccessDenied):
                await s.change_group_members(member.id, normal.id, ADD, [y.id])
            removed = await s.change_group_members(owner.id, tmp.id, DEL, [x.id])
            assert (removed.version, removed.changed) == (3, [x.id])
            # the admin/system caller (None) bypasses the rules
            admin = await s.change_group_members(None, normal.id, ADD, [y.id, outsider.id])
            assert admin.version == 2 and sorted(admin.changed) == sorted([y.id, outsider.id])
            # a change that changes nothing does not bump the version
            same = await s.change_group_members(None, normal.id, ADD, [y.id])
            assert (same.version, same.changed) == (2, [])
            with pytest.raises(NotFound):
                await s.change_group_members(None, 999, ADD, [y.id])

    asyncio.run(body())


def test_info_by_version_and_shield(make_store: Callable[..., SqliteStorage], mk_users: MkUsers) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b, c = await mk_users(s, "a", "b", "c")
            g1 = await s.create_group(a.id, "one", GroupType.TMP, [b.id])
            g2 = await s.create_group(a.id, "two", GroupType.TMP, [b.id])
            known = [GroupVersion(g1.id, 1), GroupVersion(g2.id, 0)]
            assert [g.id for g in await s.get_groups_info(b.id, known)] == [g2.id]  # g1 is current
            await s.change_group_members(a.id, g1.id, ADD, [c.id])
            info = await s.get_groups_info(b.id, known)
            assert [(g.id, g.version) for g in info] == [(g1.id, 2), (g2.id, 1)]
            assert [m.user_id for m in info[0].members] == [a.id, b.id, c.id]
            await s.set_group_shield(b.id, g1.id, True)
            mine = await s.get_groups_info(b.id, [GroupVersion(g1.id, 0)])
            assert mine[0].shield is True
            theirs = await s.get_groups_info(a.id, [GroupVersion(g1.id, 0)])
            assert theirs[0].shield is False
            shields = {m.user_id: m.shield for m in await s.get_group_members(g1.id)}
            assert shields == {a.id: False, b.id: True, c.id: False}
            assert await s.is_group_member(c.id, g1.id) and not await s.is_group_member(c.id, g2.id)

    asyncio.run(body())


def test_rejoin_resets_visibility_and_shield(
    make_store: Callable[..., SqliteStorage], mk_users: MkUsers
) -> None:
    async def body() -> None:
        async with make_store() as s:
            a, b = await mk_users(s, "a", "b")
            g = await s.create_group(a.id, "g", GroupType.TMP, [b.id])
            await s.set_group_shield(b.id, g.id, True)
            await s.send_group(a.id, g.id, 0x11, b"1")
            await s.change_group_members(a.id, g.id, DEL, [b.id])
            assert not await s.is_group_member(b.id, g.id)
            await s.send_group(a.id, g.id, 0x11, b"2 while away")
            await s.change_group_members(a.id, g.id, ADD, [b.id])
            await s.send_group(a.id, g.id, 0x11, b"3")
            assert [m.content for m in await s.get_history(b.id, SessionType.GROUP, g.id, 0, 10)] == [b"3"]
            assert [m.shield for m in await s.get_group_members(g.id) if m.user_id == b.id] == [False]

    asyncio.run(body())
