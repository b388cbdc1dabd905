"""Runtime services layer (biz): login validation, directory, sessions, sign info, push tokens and shield."""

from __future__ import annotations

import logging
from typing import Any

from runtime.dispatch import Context
from runtime.services.biz.convert import fill_department, fill_latest, fill_user, result_of
from runtime.services.contracts import ResultCode
from runtime.services.links import Proto
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import GroupVersion, SessionType, UserPatch, UserStatus

log = logging.getLogger("ttgen.biz")

MAX_IDS = 500  # user ids per users-info/stat/shield request
PUSH_NOT_CONFIGURED = 1  # PushResult.result_code: no push provider, nothing was sent


class DirectoryHandlers:
    """Everything about users that is not a message. Mixed into BizService."""

    storage: Storage
    proto: Proto
    auth: Any

    async def on_cid_other_validate_req(self, ctx: Context, msg: Any) -> Any:
        """Check a login: argon2id over the MD5hex the client sends; lockout per user and per address."""
        address = msg.attach_data.decode("utf-8", "replace") if msg.HasField("attach_data") else ""
        rsp: Any = self.proto.new("CID_OTHER_VALIDATE_RSP", user_name=msg.user_name)
        code, text, user = await self.auth.validate(msg.user_name, msg.password, address)
        rsp.result_code = int(code)
        rsp.result_string = text
        if user is not None and code == ResultCode.OK:
            if user.status == UserStatus.LEFT:
                rsp.result_code = int(ResultCode.DB_VALIDATE_FAILED)
                rsp.result_string = "account disabled"
            else:
                fill_user(rsp.user_info, user)
        return rsp

    async def on_cid_buddy_list_recent_contact_session_request(self, ctx: Context, msg: Any) -> Any:
        """Recent sessions updated after the given time, each with its last message."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE", user_id=user_id)
        for s in await self.storage.recent_sessions(user_id, msg.latest_update_time):
            info = rsp.contact_session_list.add()
            info.session_id = s.session_id
            info.session_type = int(s.session_type)
            info.session_status = s.status
            info.updated_time = s.updated
            fill_latest(info, s.latest)
        return rsp

    async def on_cid_buddy_list_user_info_request(self, ctx: Context, msg: Any) -> Any:
        """Profiles of the asked ids."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_BUDDY_LIST_USER_INFO_RESPONSE", user_id=user_id)
        for user in await self.storage.get_users(list(msg.user_id_list)[:MAX_IDS]):
            fill_user(rsp.user_info_list.add(), user)
        return rsp

    async def on_cid_buddy_list_remove_session_req(self, ctx: Context, msg: Any) -> Any:
        """Remove a recent session (msg then tells the user's other devices)."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new(
            "CID_BUDDY_LIST_REMOVE_SESSION_RES",
            user_id=user_id,
            session_type=msg.session_type,
            session_id=msg.session_id,
        )
        try:
            await self.storage.remove_session(user_id, SessionType(msg.session_type), msg.session_id)
            rsp.result_code = 0
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
        except ValueError:
            rsp.result_code = int(ResultCode.INVALID_ARGUMENT)
        return rsp

    async def on_cid_buddy_list_all_user_request(self, ctx: Context, msg: Any) -> Any:
        """Incremental company directory (departed users hidden)."""
        user_id = ctx.user_id
        users = await self.storage.list_users_since(msg.latest_update_time)
        latest = max([u.updated for u in users], default=msg.latest_update_time)
        rsp: Any = self.proto.new(
            "CID_BUDDY_LIST_ALL_USER_RESPONSE", user_id=user_id, latest_update_time=latest
        )
        for user in users:
            fill_user(rsp.user_list.add(), user)
        return rsp

    async def on_cid_buddy_list_department_request(self, ctx: Context, msg: Any) -> Any:
        """Incremental department tree."""
        user_id = ctx.user_id
        depts = await self.storage.list_departments_since(msg.latest_update_time)
        latest = max([d.updated for d in depts], default=msg.latest_update_time)
        rsp: Any = self.proto.new(
            "CID_BUDDY_LIST_DEPARTMENT_RESPONSE", user_id=user_id, latest_update_time=latest
        )
        for dept in depts:
            fill_department(rsp.dept_list.add(), dept)
        return rsp

    async def on_cid_buddy_list_change_sign_info_request(self, ctx: Context, msg: Any) -> Any:
        """Set the signature (msg broadcasts the change on success)."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE", user_id=user_id)
        try:
            await self.storage.set_sign_info(user_id, msg.sign_info)
            rsp.result_code = 0
            rsp.sign_info = msg.sign_info
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
        return rsp

    async def on_cid_buddy_list_change_avatar_request(self, ctx: Context, msg: Any) -> Any:
        """Change the avatar URL (TeamTalk declared this and never answered it)."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE", user_id=user_id)
        try:
            await self.storage.update_user(user_id, UserPatch(avatar=msg.avatar_url))
            rsp.result_code = 0
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
        return rsp

    async def on_cid_login_req_devicetoken(self, ctx: Context, msg: Any) -> Any:
        """Bind a push token to the user."""
        user_id = ctx.user_id
        try:
            await self.storage.set_device_token(user_id, msg.device_token, msg.client_type)
        except se.StorageError as exc:
            log.info("device token refused: %s", exc)
        return self.proto.new("CID_LOGIN_RES_DEVICETOKEN", user_id=user_id)

    async def on_cid_login_req_push_shield(self, ctx: Context, msg: Any) -> Any:
        """Set do-not-disturb."""
        user_id = ctx.user_id
        rsp: Any = self.proto.new("CID_LOGIN_RES_PUSH_SHIELD", user_id=user_id)
        if msg.shield_status not in (0, 1):
            rsp.result_code = int(ResultCode.INVALID_ARGUMENT)
            return rsp
        await self.storage.set_push_shield(user_id, bool(msg.shield_status))
        rsp.result_code = 0
        rsp.shield_status = msg.shield_status
        return rsp

    async def on_cid_login_req_query_push_shield(self, ctx: Context, msg: Any) -> Any:
        """Read do-not-disturb."""
        user_id = ctx.user_id
        shield = await self.storage.get_push_shield(user_id)
        return self.proto.new(
            "CID_LOGIN_RES_QUERY_PUSH_SHIELD",
            user_id=user_id,
            result_code=0,
            shield_status=1 if shield else 0,
        )

    async def on_cid_login_req_loginout(self, ctx: Context, msg: Any) -> Any:
        """Forget the push token on logout."""
        user_id = ctx.user_id
        await self.storage.clear_device_token(user_id)
        return self.proto.new("CID_LOGIN_RES_LOGINOUT", result_code=0)

    async def on_cid_other_get_device_token_req(self, ctx: Context, msg: Any) -> Any:
        """Push tokens with the badge (total unread) of each user (service call from msg)."""
        rsp: Any = self.proto.new("CID_OTHER_GET_DEVICE_TOKEN_RSP")
        for tok in await self.storage.get_device_tokens(list(msg.user_id)[:MAX_IDS]):
            summary = await self.storage.unread_summary(tok.user_id)
            info = rsp.user_token_info.add()
            info.user_id = tok.user_id
            info.user_type = tok.client_type
            info.token = tok.token
            info.push_count = summary.total
            info.push_type = 1
        return rsp

    async def on_cid_other_get_shield_req(self, ctx: Context, msg: Any) -> Any:
        """Which of the listed members muted the group (service call from msg, to decide whom to push): each
        member's own mute flag, read as that member; members not in the group are left out."""
        rsp: Any = self.proto.new("CID_OTHER_GET_SHIELD_RSP", group_id=msg.group_id)
        for uid in list(dict.fromkeys(msg.user_id))[:MAX_IDS]:
            try:
                groups = await self.storage.get_groups_info(uid, [GroupVersion(msg.group_id, 0)])
            except se.StorageError as exc:
                log.info("shield of user %d in group %d not read: %s", uid, msg.group_id, exc)
                continue
            if groups:
                s = rsp.shield_status_list.add()
                s.user_id, s.group_id, s.shield_status = uid, msg.group_id, 1 if groups[0].shield else 0
        return rsp

    async def on_cid_other_push_to_user_req(self, ctx: Context, msg: Any) -> Any:
        """Push notifications: this cluster has no push provider configured, so every token is answered
        with a failure code (PUSH_NOT_CONFIGURED) rather than reported as sent."""
        rsp: Any = self.proto.new("CID_OTHER_PUSH_TO_USER_RSP")
        for tok in list(msg.user_token_list)[:MAX_IDS]:
            r = rsp.push_result_list.add()
            r.user_token, r.result_code = tok.token, PUSH_NOT_CONFIGURED
        return rsp
