"""Runtime services layer (biz): login validation, directory, sessions, sign info, push tokens and shield."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from runtime.services.biz.convert import fill_department, fill_latest, fill_user, result_of
from runtime.services.links import Link, Proto, ResultCode
from runtime.storage import errors as se
from runtime.storage.base import Storage
from runtime.storage.models import SessionType, UserPatch, UserStatus

log = logging.getLogger("ttgen.biz")

MAX_IDS = 500  # user ids per users-info/stat request


class DirectoryHandlers:
    """Everything about users that is not a message. Mixed into BizService."""

    HANDLES: ClassVar[dict[str, str]] = {
        "CID_OTHER_VALIDATE_REQ": "h_validate",
        "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST": "h_recent",
        "CID_BUDDY_LIST_USER_INFO_REQUEST": "h_users_info",
        "CID_BUDDY_LIST_REMOVE_SESSION_REQ": "h_remove_session",
        "CID_BUDDY_LIST_ALL_USER_REQUEST": "h_all_users",
        "CID_BUDDY_LIST_DEPARTMENT_REQUEST": "h_departments",
        "CID_BUDDY_LIST_CHANGE_SIGN_INFO_REQUEST": "h_sign_info",
        "CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST": "h_avatar",
        "CID_LOGIN_REQ_DEVICETOKEN": "h_device_token",
        "CID_LOGIN_REQ_PUSH_SHIELD": "h_push_shield",
        "CID_LOGIN_REQ_QUERY_PUSH_SHIELD": "h_query_push_shield",
        "CID_LOGIN_REQ_LOGINOUT": "h_logout",
        "CID_OTHER_GET_DEVICE_TOKEN_REQ": "h_get_tokens",
    }
    storage: Storage
    proto: Proto
    auth: Any

    async def h_validate(self, user_id: int, msg: Any, link: Link) -> Any:
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

    async def h_recent(self, user_id: int, msg: Any, link: Link) -> Any:
        """Recent sessions updated after the given time, each with its last message."""
        rsp: Any = self.proto.new("CID_BUDDY_LIST_RECENT_CONTACT_SESSION_RESPONSE", user_id=user_id)
        for s in await self.storage.recent_sessions(user_id, msg.latest_update_time):
            info = rsp.contact_session_list.add()
            info.session_id = s.session_id
            info.session_type = int(s.session_type)
            info.session_status = s.status
            info.updated_time = s.updated
            fill_latest(info, s.latest)
        return rsp

    async def h_users_info(self, user_id: int, msg: Any, link: Link) -> Any:
        """Profiles of the asked ids."""
        rsp: Any = self.proto.new("CID_BUDDY_LIST_USER_INFO_RESPONSE", user_id=user_id)
        for user in await self.storage.get_users(list(msg.user_id_list)[:MAX_IDS]):
            fill_user(rsp.user_info_list.add(), user)
        return rsp

    async def h_remove_session(self, user_id: int, msg: Any, link: Link) -> Any:
        """Remove a recent session (msg then tells the user's other devices)."""
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

    async def h_all_users(self, user_id: int, msg: Any, link: Link) -> Any:
        """Incremental company directory (departed users hidden)."""
        users = await self.storage.list_users_since(msg.latest_update_time)
        latest = max([u.updated for u in users], default=msg.latest_update_time)
        rsp: Any = self.proto.new(
            "CID_BUDDY_LIST_ALL_USER_RESPONSE", user_id=user_id, latest_update_time=latest
        )
        for user in users:
            fill_user(rsp.user_list.add(), user)
        return rsp

    async def h_departments(self, user_id: int, msg: Any, link: Link) -> Any:
        """Incremental department tree."""
        depts = await self.storage.list_departments_since(msg.latest_update_time)
        latest = max([d.updated for d in depts], default=msg.latest_update_time)
        rsp: Any = self.proto.new(
            "CID_BUDDY_LIST_DEPARTMENT_RESPONSE", user_id=user_id, latest_update_time=latest
        )
        for dept in depts:
            fill_department(rsp.dept_list.add(), dept)
        return rsp

    async def h_sign_info(self, user_id: int, msg: Any, link: Link) -> Any:
        """Set the signature (msg broadcasts the change on success)."""
        rsp: Any = self.proto.new("CID_BUDDY_LIST_CHANGE_SIGN_INFO_RESPONSE", user_id=user_id)
        try:
            await self.storage.set_sign_info(user_id, msg.sign_info)
            rsp.result_code = 0
            rsp.sign_info = msg.sign_info
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
        return rsp

    async def h_avatar(self, user_id: int, msg: Any, link: Link) -> Any:
        """Change the avatar URL (TeamTalk declared this and never answered it)."""
        rsp: Any = self.proto.new("CID_BUDDY_LIST_CHANGE_AVATAR_RESPONSE", user_id=user_id)
        try:
            await self.storage.update_user(user_id, UserPatch(avatar=msg.avatar_url))
            rsp.result_code = 0
        except se.StorageError as exc:
            rsp.result_code = int(result_of(exc))
        return rsp

    async def h_device_token(self, user_id: int, msg: Any, link: Link) -> Any:
        """Bind a push token to the user."""
        try:
            await self.storage.set_device_token(user_id, msg.device_token, msg.client_type)
        except se.StorageError as exc:
            log.info("device token refused: %s", exc)
        return self.proto.new("CID_LOGIN_RES_DEVICETOKEN", user_id=user_id)

    async def h_push_shield(self, user_id: int, msg: Any, link: Link) -> Any:
        """Set do-not-disturb."""
        rsp: Any = self.proto.new("CID_LOGIN_RES_PUSH_SHIELD", user_id=user_id)
        if msg.shield_status not in (0, 1):
            rsp.result_code = int(ResultCode.INVALID_ARGUMENT)
            return rsp
        await self.storage.set_push_shield(user_id, bool(msg.shield_status))
        rsp.result_code = 0
        rsp.shield_status = msg.shield_status
        return rsp

    async def h_query_push_shield(self, user_id: int, msg: Any, link: Link) -> Any:
        """Read do-not-disturb."""
        shield = await self.storage.get_push_shield(user_id)
        return self.proto.new(
            "CID_LOGIN_RES_QUERY_PUSH_SHIELD",
            user_id=user_id,
            result_code=0,
            shield_status=1 if shield else 0,
        )

    async def h_logout(self, user_id: int, msg: Any, link: Link) -> Any:
        """Forget the push token on logout."""
        await self.storage.clear_device_token(user_id)
        return self.proto.new("CID_LOGIN_RES_LOGINOUT", result_code=0)

    async def h_get_tokens(self, user_id: int, msg: Any, link: Link) -> Any:
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
