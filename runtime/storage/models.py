"""Storage layer: the plain dataclasses that cross the storage interface (no protobuf here; biz converts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple


class SessionType(IntEnum):
    """TeamTalk's SessionType: a one-to-one chat or a group chat. The values are the spec's
    IM.BaseDefine.SessionType (storage imports no generated code; tests/unit/storage/test_spec_values.py pins
    this enum, GroupType and GroupModify to the spec)."""

    SINGLE = 1
    GROUP = 2


class GroupType(IntEnum):
    """TeamTalk's GroupType: NORMAL groups are made by admins, TMP groups by users."""

    NORMAL = 1
    TMP = 2


class GroupModify(IntEnum):
    """TeamTalk's GroupModifyType."""

    ADD = 1
    DEL = 2


class UserStatus(IntEnum):
    """Employment status (`UserInfo.status`); LEFT users are hidden from the directory and may not log in
    (`ttgen admin user disable` and `delete` set it)."""

    NORMAL = 0
    PROBATION = 1
    REGULAR = 2
    LEFT = 3
    INTERN = 4


@dataclass(frozen=True)
class Limits:
    """Size limits enforced before any write; an oversize value raises ValueTooLarge and writes nothing."""

    max_name: int = 256  # login name, nick, real name, department and group names (characters)
    max_text: int = 1024  # avatar url, email, phone, domain, sign info, tokens, file names
    max_content: int = 65536  # message content bytes (TeamTalk: 4096 of base64; voice needs more)
    max_dedup_key: int = 128
    max_group_members: int = 2000
    max_page: int = 100  # history page, get-by-ids, recent sessions


@dataclass(frozen=True)
class NewUser:
    """A user to create; `password_hash` is already hashed by runtime.auth (never a wire password)."""

    login_name: str
    nick: str = ""
    real_name: str = ""
    gender: int = 0
    avatar: str = ""
    department_id: int = 0
    email: str = ""
    phone: str = ""
    domain: str = ""
    status: int = UserStatus.NORMAL
    sign_info: str = ""
    password_hash: str = ""


@dataclass(frozen=True)
class UserPatch:
    """Fields to change on a user; None leaves a field as it is."""

    nick: str | None = None
    real_name: str | None = None
    gender: int | None = None
    avatar: str | None = None
    department_id: int | None = None
    email: str | None = None
    phone: str | None = None
    domain: str | None = None
    status: int | None = None


@dataclass(frozen=True)
class User:
    """A directory entry (TeamTalk's UserInfo plus bookkeeping)."""

    id: int
    login_name: str
    nick: str
    real_name: str
    gender: int
    avatar: str
    department_id: int
    email: str
    phone: str
    domain: str
    status: int
    sign_info: str
    push_shield: bool
    created: int
    updated: int


@dataclass(frozen=True)
class Credentials:
    """What login needs: the user's id, stored password hash and employment status."""

    user_id: int
    password_hash: str
    status: int


@dataclass(frozen=True)
class Department:
    """A node of the department tree (TeamTalk's DepartInfo)."""

    id: int
    name: str
    priority: int
    parent_id: int
    status: int
    updated: int


class SendResult(NamedTuple):
    """The outcome of a stored message: its msg_id and server time; `duplicate` for a deduplicated retry.
    A named tuple, not a dataclass: one is made per stored message, and a frozen dataclass costs twice as
    much to make (bench/RESULTS.md, "biz and storage CPU per message")."""

    msg_id: int
    created: int
    duplicate: bool = False


@dataclass(frozen=True)
class Message:
    """A stored message as a reader sees it (TeamTalk's MsgInfo plus the burn flag)."""

    msg_id: int
    from_user_id: int
    created: int
    msg_type: int
    content: bytes
    burn: bool = False


@dataclass(frozen=True)
class RecentSession:
    """A recent-session entry (TeamTalk's ContactSessionInfo); `latest` is None for an empty session."""

    session_id: int
    session_type: SessionType
    status: int  # 0 ok, 1 removed
    updated: int
    latest: Message | None


@dataclass(frozen=True)
class UnreadItem:
    """Unread count of one session with its latest message (TeamTalk's UnreadInfo)."""

    session_id: int
    session_type: SessionType
    unread: int
    latest: Message | None


@dataclass(frozen=True)
class UnreadSummary:
    """All sessions with unread messages, and their total (the push badge)."""

    total: int
    items: list[UnreadItem] = field(default_factory=list)


@dataclass(frozen=True)
class ReadResult:
    """What a read ack did: the read position now stored and the burn-after-reading messages it destroyed."""

    read_msg_id: int
    burned: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class GroupMember:
    """A current member of a group, with join time and mute flag."""

    user_id: int
    joined: int
    shield: bool


@dataclass(frozen=True)
class Group:
    """Group info (TeamTalk's GroupInfo); `shield` is the asking user's mute flag."""

    id: int
    name: str
    avatar: str
    creator_id: int
    group_type: GroupType
    version: int
    created: int
    members: list[GroupMember]
    shield: bool = False


@dataclass(frozen=True)
class GroupVersion:
    """A (group id, version) pair for incremental group info."""

    group_id: int
    version: int


@dataclass(frozen=True)
class MemberChange:
    """Result of a member change: the new version, the current members and the users actually changed."""

    group_id: int
    version: int
    members: list[int]
    changed: list[int]


@dataclass(frozen=True)
class DeviceToken:
    """A push token: one user per token."""

    user_id: int
    token: str
    client_type: int


@dataclass(frozen=True)
class OfflineFile:
    """An offline file record (the IMTransmitFile table TeamTalk's schema lacked)."""

    task_id: str
    from_user_id: int
    to_user_id: int
    file_name: str
    size: int
    created: int = 0


@dataclass(frozen=True)
class Tombstone:
    """What remains of a recalled or burned message, for audit: never its content. `session_id` is the
    session as the actor saw it: the group, or the peer (the recipient of a recall, the sender of a burn)."""

    session_type: int
    session_id: int
    msg_id: int
    from_id: int
    action: str  # "recall" or "burn"
    actor_id: int  # who recalled (the sender) or burned (the reader) it
    sent: int  # when it was stored (unix seconds)
    removed: int  # when its content was erased
