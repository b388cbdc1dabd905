"""Runtime services layer (biz): storage records to protobuf fields, and storage errors to result codes."""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any

from runtime.services.links import ResultCode
from runtime.storage import errors as se
from runtime.storage.models import Department, Group, Message, User

_REPLY = struct.Struct(">IIB")  # biz -> msg IMMsgData reply envelope: result, group version, duplicate
_VERSION = struct.Struct(">I")
_TOKEN = struct.Struct(">q")  # a store request token as biz keeps and stores it: a signed 64-bit int
_RESEND = b"\x01"  # the flags byte of a store request sent again (bit 0: resend)
_TOKEN_PARTS = struct.Struct(">4sI")  # how a sender makes a token: per-process random prefix, counter
# Seconds before each resend of a store request whose answer was lost with the link to biz (msg, gateway).
STORE_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)


class StoreTokens:
    """Request tokens of one sending process (a msg server, a gateway): a random 4-byte prefix, never zero,
    then a counter, so tokens of different processes do not collide and no token is all zero (0 means "no
    token" to storage)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4)
        while not any(self._prefix):
            self._prefix = os.urandom(4)
        self._count = itertools.count(1)

    def next(self) -> bytes:
        """A fresh 8-byte token."""
        return _TOKEN_PARTS.pack(self._prefix, next(self._count) & 0xFFFFFFFF)


def fill_user(info: Any, user: User) -> None:
    """Copy a storage User into an IM.BaseDefine.UserInfo."""
    info.user_id = user.id
    info.user_gender = user.gender
    info.user_nick_name = user.nick
    info.avatar_url = user.avatar
    info.department_id = user.department_id
    info.email = user.email
    info.user_real_name = user.real_name
    info.user_tel = user.phone
    info.user_domain = user.domain
    info.status = user.status
    info.sign_info = user.sign_info


def fill_msg(info: Any, msg: Message) -> None:
    """Copy a stored message into an IM.BaseDefine.MsgInfo."""
    info.msg_id = msg.msg_id
    info.from_session_id = msg.from_user_id
    info.create_time = msg.created
    info.msg_type = msg.msg_type
    info.msg_data = msg.content


def fill_latest(info: Any, msg: Message | None) -> None:
    """The latest_msg_* fields of ContactSessionInfo/UnreadInfo (zeroes for an empty session)."""
    if msg is None:
        info.latest_msg_id = 0
        info.latest_msg_data = b""
        info.latest_msg_type = 1
        info.latest_msg_from_user_id = 0
        return
    info.latest_msg_id = msg.msg_id
    info.latest_msg_data = msg.content
    info.latest_msg_type = msg.msg_type
    info.latest_msg_from_user_id = msg.from_user_id


def fill_department(info: Any, dept: Department) -> None:
    """Copy a Department into an IM.BaseDefine.DepartInfo."""
    info.dept_id = dept.id
    info.priority = dept.priority
    info.dept_name = dept.name
    info.parent_dept_id = dept.parent_id
    info.dept_status = 1 if dept.status else 0


def fill_group(info: Any, group: Group) -> None:
    """Copy a Group into an IM.BaseDefine.GroupInfo."""
    info.group_id = group.id
    info.version = group.version
    info.group_name = group.name
    info.group_avatar = group.avatar
    info.group_creator_id = group.creator_id
    info.group_type = int(group.group_type)
    info.shield_status = 1 if group.shield else 0
    info.group_member_list.extend(m.user_id for m in group.members)


def result_of(exc: Exception) -> ResultCode:
    """The result code a client sees for a storage error."""
    if isinstance(exc, se.ValueTooLarge):
        return ResultCode.VALUE_TOO_LARGE
    if isinstance(exc, se.RecallWindowExpired):
        return ResultCode.RECALL_WINDOW_EXPIRED
    if isinstance(exc, se.InvalidArgument):
        return ResultCode.INVALID_ARGUMENT
    if isinstance(exc, se.NotFound):
        return ResultCode.NOT_FOUND
    if isinstance(exc, se.AccessDenied):
        return ResultCode.ACCESS_DENIED
    if isinstance(exc, se.Conflict):
        return ResultCode.CONFLICT
    if isinstance(exc, se.StorageUnavailable):
        return ResultCode.NO_DB_SERVER
    return ResultCode.INTERNAL


def pack_store_reply(
    result: int, version: int = 0, duplicate: bool = False, members: list[int] | None = None
) -> bytes:
    """The attach_data biz puts on its IMMsgData reply; members follow if msg's cache is stale."""
    out = _REPLY.pack(result, version, 1 if duplicate else 0)
    if members:
        out += struct.pack(f">{len(members)}I", *members)
    return out


def unpack_store_reply(data: bytes) -> tuple[int, int, bool, list[int] | None]:
    """(result, group version, duplicate, members or None) from a biz IMMsgData reply's attach_data."""
    if len(data) < _REPLY.size:
        return int(ResultCode.INTERNAL), 0, False, None
    result, version, dup = _REPLY.unpack_from(data, 0)
    rest = data[_REPLY.size :]
    members = list(struct.unpack(f">{len(rest) // 4}I", rest)) if rest else None
    return result, version, bool(dup), members


def pack_version(version: int) -> bytes:
    """The attach_data msg puts on IMMsgData to biz: the group version it has cached (0 = none)."""
    return _VERSION.pack(version)


def pack_store_request(version: int, token: bytes, resend: bool = False) -> bytes:
    """The attach_data msg puts on IMMsgData to biz when the client gave no msg id: the cached group version,
    then an 8-byte request token (never all zero), then for a resend a flags byte with bit 0 set
    (`u32 version | token:8 [| flags:u8]`). A store retried after the link to biz dropped carries the same
    token, so biz answers it with the id it already stored (see `request_token`); the resend flag tells biz
    to look for that id in storage when its memory of tokens does not know it (biz may have restarted)."""
    out = _VERSION.pack(version) + token
    return out + _RESEND if resend else out


def resend_request(data: bytes) -> bytes | None:
    """A store request's attach_data with the resend flag set; None if it carries no token (or is flagged)."""
    return data + _RESEND if len(data) == 12 else None


def request_token(data: bytes) -> int:
    """The request token of a store request's attach_data as a signed 64-bit int (0 when it has none)."""
    return _TOKEN.unpack_from(data, 4)[0] if len(data) >= 12 else 0


def is_resend(data: bytes) -> bool:
    """Whether a store request's attach_data is flagged as a resend (a 12-byte one, the old form, is not)."""
    return len(data) > 12 and data[12] & 1 == 1


def unpack_version(data: bytes) -> int:
    """Inverse of pack_version (0 when absent)."""
    return _VERSION.unpack_from(data, 0)[0] if len(data) >= 4 else 0
