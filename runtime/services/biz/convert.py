"""Runtime services layer (biz): storage records to protobuf fields, and storage errors to result codes.

The store envelope, tokens and result codes msg and the gateway share with biz: runtime.services.contracts.
"""

from __future__ import annotations

from typing import Any

from runtime.services.contracts import ResultCode
from runtime.storage import errors as se
from runtime.storage.models import Department, Group, Message, User


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
        # A required enum field: its default (the enum's first value, a text message in the bundled spec).
        info.latest_msg_type = info.DESCRIPTOR.fields_by_name["latest_msg_type"].default_value
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
    status = info.DESCRIPTOR.fields_by_name["dept_status"].enum_type.values_by_name
    info.dept_status = status["DEPT_STATUS_DELETE" if dept.status else "DEPT_STATUS_OK"].number


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
