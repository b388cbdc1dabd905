"""Runtime services layer (biz): group handlers: lists, versioned info, create, member changes, mute."""

from __future__ import annotations

import logging
from typing import Any

from runtime.dispatch import Context
from runtime.services.biz.convert import fill_group, result_of
from runtime.services.contracts import ResultCode
from runtime.services.links import Proto
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import GroupModify, GroupType, GroupVersion

log = logging.getLogger("ttgen.biz")


class GroupHandlers:
    """Group commands. Mixed into BizService; keeps the member cache of MessageHandlers current."""

    storage: Storage
    proto: Proto
    _group_cache: dict[int, tuple[int, list[int]]]

    async def on_cid_group_normal_list_request(self, ctx: Context, msg: Any) -> Any:
        """The NORMAL groups the user belongs to, with versions."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_GROUP_NORMAL_LIST_RESPONSE", user_id=user_id)
        for gv in await self.storage.list_user_groups(user_id, GroupType.NORMAL):
            info = rsp.group_version_list.add()
            info.group_id, info.version = gv.group_id, gv.version
        return rsp

    async def on_cid_group_info_request(self, ctx: Context, msg: Any) -> Any:
        """Info of the user's groups whose version is above the one the client knows."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_GROUP_INFO_RESPONSE", user_id=user_id)
        known = [GroupVersion(v.group_id, v.version) for v in msg.group_version_list][:500]
        try:
            groups = await self.storage.get_groups_info(user_id, known)
        except se.StorageError as exc:
            log.info("group info refused: %s", exc)
            return rsp
        for g in groups:
            fill_group(rsp.group_info_list.add(), g)
        return rsp

    async def on_cid_group_create_request(self, ctx: Context, msg: Any) -> Any:
        """Create a TMP group (clients may not create NORMAL groups: refused with ACCESS_DENIED)."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_GROUP_CREATE_RESPONSE", user_id=user_id, group_name=msg.group_name)
        if msg.group_type != GroupType.TMP:
            rsp.result_code = int(ResultCode.ACCESS_DENIED)
            return rsp
        try:
            group = await self.storage.create_group(
                user_id, msg.group_name, GroupType.TMP, list(msg.member_id_list), avatar=msg.group_avatar
            )
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
            return rsp
        members = sorted(m.user_id for m in group.members)
        self._group_cache[group.id] = (group.version, members)
        rsp.result_code = 0
        rsp.group_id = group.id
        rsp.user_id_list.extend(members)
        return rsp

    async def on_cid_group_change_member_request(self, ctx: Context, msg: Any) -> Any:
        """Add or remove members under the permission rules; bumps the version."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new(
            "CID_GROUP_CHANGE_MEMBER_RESPONSE",
            user_id=user_id,
            change_type=msg.change_type,
            group_id=msg.group_id,
        )
        try:
            change = await self.storage.change_group_members(
                user_id, msg.group_id, GroupModify(msg.change_type), list(msg.member_id_list)
            )
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
            return rsp
        except ValueError:
            rsp.result_code = int(ResultCode.INVALID_ARGUMENT)
            return rsp
        self._group_cache[change.group_id] = (change.version, sorted(change.members))
        rsp.result_code = 0
        rsp.cur_user_id_list.extend(change.members)
        rsp.chg_user_id_list.extend(change.changed)
        return rsp

    async def on_cid_group_shield_group_request(self, ctx: Context, msg: Any) -> Any:
        """Mute or unmute a group for the asking member."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_GROUP_SHIELD_GROUP_RESPONSE", user_id=user_id, group_id=msg.group_id)
        if msg.shield_status not in (0, 1):
            rsp.result_code = int(ResultCode.INVALID_ARGUMENT)
            return rsp
        try:
            await self.storage.set_group_shield(user_id, msg.group_id, bool(msg.shield_status))
            rsp.result_code = 0
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
        return rsp
