"""Storage layer: the async interface every backend (SQLite now, PostgreSQL later) implements.

Rules every backend keeps: a write returns only after it is durably committed (store-then-ack); every read
takes the asking user and refuses sessions that user does not belong to (AccessDenied); oversize values raise
ValueTooLarge and write nothing; message content is never copied outside the message tables, so burn and
recall leave no trace.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from runtime.storage.models import (
    Credentials,
    Department,
    DeviceToken,
    Group,
    GroupMember,
    GroupModify,
    GroupType,
    GroupVersion,
    MemberChange,
    Message,
    NewUser,
    OfflineFile,
    ReadResult,
    RecentSession,
    SendResult,
    SessionType,
    Tombstone,
    UnreadSummary,
    User,
    UserPatch,
)

# What `send_single_nowait` calls once the message is committed: (SendResult, None), or (None, the error).
CommitCallback = Callable[[Any, BaseException | None], None]


class Storage(abc.ABC):
    """The persistence interface the biz, login and file services use.

    Beyond the abstract methods a backend declares what else it offers, as class flags the services check
    (never by probing for methods): `commit_callbacks` - `send_single_nowait` stores a 1:1 message and calls
    back once it is committed, without a future or a task (biz's hot path)."""

    commit_callbacks: ClassVar[bool] = False

    # lifecycle -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, apply pending migrations and start the writer."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Finish queued writes and release every connection."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # directory -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_user(self, user: NewUser) -> User:
        """Create a user; Conflict if the login name is taken."""

    @abc.abstractmethod
    async def create_users(self, users: Sequence[NewUser]) -> list[User]:
        """Create many users in one transaction: all of them, or none (the first error is raised: Conflict
        for a taken login name, InvalidArgument or ValueTooLarge for a bad value)."""

    @abc.abstractmethod
    async def reseal(self, limit: int = 500) -> int:
        """Re-seal up to `limit` message rows sealed with an older at-rest key version under the current one
        (one transaction); returns how many, 0 when none is left. InvalidArgument without encryption."""

    @abc.abstractmethod
    async def key_usage(self) -> dict[int, int]:
        """Message rows per at-rest key version (0: stored in clear)."""

    @abc.abstractmethod
    async def update_user(self, user_id: int, patch: UserPatch) -> User:
        """Change profile fields and bump `updated`."""

    @abc.abstractmethod
    async def get_users(self, user_ids: Sequence[int]) -> list[User]:
        """Profiles of the given ids that exist, in id order."""

    @abc.abstractmethod
    async def get_user_by_login(self, login_name: str) -> User | None:
        """The user with this login name, if any."""

    @abc.abstractmethod
    async def list_users_since(self, latest_update_time: int) -> list[User]:
        """Users updated after the time, departed users (status 3) excluded."""

    @abc.abstractmethod
    async def get_credentials(self, login_name: str) -> Credentials | None:
        """Id, password hash and status for login, or None for an unknown login name."""

    @abc.abstractmethod
    async def get_credentials_by_id(self, user_id: int) -> Credentials | None:
        """Id, stored password hash and status of a user id (ticket logins know the id, not the name)."""

    @abc.abstractmethod
    async def consume_ticket_session(self, session_id: bytes, user_id: int, expires: int, now: int) -> bool:
        """Record a resumption ticket's session id as used (or revoked) until `expires`, unix seconds; True if
        it was not recorded before. Atomic: of two concurrent calls with one id, exactly one gets True.
        Records that expired before `now` may be pruned."""

    @abc.abstractmethod
    async def ticket_session_used(self, session_id: bytes, now: int) -> bool:
        """Whether the session id is recorded (used or revoked) and its record has not expired by `now`."""

    @abc.abstractmethod
    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace the stored password hash (e.g. after an argon2 parameter upgrade)."""

    @abc.abstractmethod
    async def set_sign_info(self, user_id: int, sign_info: str) -> None:
        """Set the personal signature."""

    @abc.abstractmethod
    async def set_push_shield(self, user_id: int, shield: bool) -> None:
        """Set the do-not-disturb flag."""

    @abc.abstractmethod
    async def get_push_shield(self, user_id: int) -> bool:
        """Read the do-not-disturb flag."""

    @abc.abstractmethod
    async def create_department(self, name: str, priority: int = 0, parent_id: int = 0) -> Department:
        """Create a department."""

    @abc.abstractmethod
    async def list_departments_since(self, latest_update_time: int) -> list[Department]:
        """Departments updated after the time."""

    # messages --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def send_single(
        self,
        from_id: int,
        to_id: int,
        msg_type: int,
        content: bytes,
        *,
        dedup_key: bytes | None = None,
        burn: bool = False,
        token: int = 0,
        resend: bool = False,
    ) -> SendResult:
        """Store a 1:1 message, allocating its msg_id in the same transaction; returns after commit.

        `token` is the sender's request token (a signed 64-bit int, 0 = none), kept durably with the message.
        `resend` says the request may have been stored already (msg sent it again after its link to biz
        dropped): a message of this sender in this conversation with this token, stored within the dedup
        window, is then returned (duplicate=True) instead of storing a second copy. First sends never look."""

    def send_single_nowait(
        self,
        from_id: int,
        to_id: int,
        msg_type: int,
        content: bytes,
        callback: CommitCallback,
        *,
        dedup_key: bytes | None = None,
        burn: bool = False,
        token: int = 0,
    ) -> None:
        """`send_single` (a first send, never a resend) without a future: `callback(SendResult, None)` runs
        on this loop once the message is committed, `callback(None, error)` if it is refused. Only where
        `commit_callbacks` is set; raises StorageClosed when closed."""
        raise NotImplementedError(f"{type(self).__name__} does not offer commit callbacks")

    @abc.abstractmethod
    async def send_group(
        self,
        from_id: int,
        group_id: int,
        msg_type: int,
        content: bytes,
        *,
        dedup_key: bytes | None = None,
        token: int = 0,
        resend: bool = False,
    ) -> SendResult:
        """Store a group message from a current member; returns after commit. `token` and `resend` as for
        `send_single`."""

    @abc.abstractmethod
    async def get_history(
        self, user_id: int, session_type: SessionType, session_id: int, msg_id_begin: int, count: int
    ) -> list[Message]:
        """Messages with msg_id <= msg_id_begin (0 = newest), newest first, at most the page limit."""

    @abc.abstractmethod
    async def get_messages_by_ids(
        self, user_id: int, session_type: SessionType, session_id: int, msg_ids: Sequence[int]
    ) -> list[Message]:
        """The visible messages among the ids (at most the page limit), ascending."""

    @abc.abstractmethod
    async def latest_msg_id(self, user_id: int, session_type: SessionType, session_id: int) -> int:
        """The session's msg_id counter (0 if nothing was ever sent)."""

    @abc.abstractmethod
    async def mark_read(
        self, user_id: int, session_type: SessionType, session_id: int, up_to_msg_id: int = 0
    ) -> ReadResult:
        """Clear unread up to the msg_id (0 = everything); destroys burn-after-reading messages read."""

    @abc.abstractmethod
    async def unread_summary(self, user_id: int) -> UnreadSummary:
        """Unread count and latest message per session with unread messages, and the total."""

    @abc.abstractmethod
    async def list_tombstones(self, since: int = 0, limit: int = 1000) -> list[Tombstone]:
        """Content-free records of recalled and burned messages removed at or after `since`, oldest first."""

    @abc.abstractmethod
    async def edit_message(
        self, user_id: int, session_type: SessionType, session_id: int, msg_id: int, content: bytes
    ) -> int:
        """Replace the text of the sender's own text message within the edit window; returns the edit time.
        NotFound, AccessDenied (not the sender), EditWindowExpired, InvalidArgument (not a text message, or
        empty), ValueTooLarge."""

    @abc.abstractmethod
    async def recall(self, user_id: int, session_type: SessionType, session_id: int, msg_id: int) -> None:
        """The sender deletes their message within the recall window; no copy of the content remains."""

    # sessions --------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def recent_sessions(self, user_id: int, latest_update_time: int = 0) -> list[RecentSession]:
        """Sessions updated after the time, newest first, at most the page limit, with last message."""

    @abc.abstractmethod
    async def remove_session(self, user_id: int, session_type: SessionType, session_id: int) -> None:
        """Mark a recent session removed (it comes back when a new message arrives)."""

    # groups ----------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_group(
        self,
        creator_id: int,
        name: str,
        group_type: GroupType,
        member_ids: Sequence[int],
        *,
        avatar: str = "",
        by_admin: bool = False,
    ) -> Group:
        """Create a group (NORMAL only by_admin); the creator is always a member."""

    @abc.abstractmethod
    async def change_group_members(
        self, actor_id: int | None, group_id: int, modify: GroupModify, user_ids: Sequence[int]
    ) -> MemberChange:
        """Add or remove members; actor None is the admin/system caller and bypasses the permission rules."""

    @abc.abstractmethod
    async def get_group_members(self, group_id: int) -> list[GroupMember]:
        """Current members (for fan-out; a service-side call with no asking user)."""

    @abc.abstractmethod
    async def list_user_groups(self, user_id: int, group_type: GroupType | None = None) -> list[GroupVersion]:
        """Groups the user belongs to, with versions."""

    @abc.abstractmethod
    async def get_groups_info(self, user_id: int, known: Sequence[GroupVersion]) -> list[Group]:
        """Info of the user's groups whose version is above the version the client knows."""

    @abc.abstractmethod
    async def set_group_shield(self, user_id: int, group_id: int, shield: bool) -> None:
        """Mute or unmute a group for one member."""

    @abc.abstractmethod
    async def is_group_member(self, user_id: int, group_id: int) -> bool:
        """The member-only sending check."""

    # push tokens -----------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def set_device_token(self, user_id: int, token: str, client_type: int) -> None:
        """Bind a push token to a user (moving it from any previous owner)."""

    @abc.abstractmethod
    async def clear_device_token(self, user_id: int) -> None:
        """Forget the user's push token (logout)."""

    @abc.abstractmethod
    async def get_device_tokens(self, user_ids: Sequence[int]) -> list[DeviceToken]:
        """Push tokens of the given users."""

    # offline files ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def add_offline_file(self, record: OfflineFile) -> OfflineFile:
        """Record an uploaded offline file for its receiver."""

    @abc.abstractmethod
    async def list_offline_files(self, to_user_id: int) -> list[OfflineFile]:
        """Offline files waiting for the user."""

    @abc.abstractmethod
    async def delete_offline_file(self, user_id: int, task_id: str) -> None:
        """Delete a record; only its sender or receiver may (AccessDenied otherwise)."""

    # login lockout (runtime.auth.lockout; keys are digests) ---------------------------------------------
    @abc.abstractmethod
    async def login_failures(self, keys: Sequence[str], since: float) -> dict[str, tuple[int, float]]:
        """(failures, last failure time) of each key whose last failure is at or after `since`."""

    @abc.abstractmethod
    async def add_login_failure(self, keys: Sequence[str], now: float, window: float) -> None:
        """Count one failure against each key; counters idle for `window` seconds restart (and are pruned)."""

    @abc.abstractmethod
    async def clear_login_failures(self, keys: Sequence[str]) -> None:
        """Forget the keys' failure counters."""

    @abc.abstractmethod
    async def note_known_login(self, key: str, now: float, keep: float) -> None:
        """Remember a successful login's key (forgetting keys unseen for `keep` seconds)."""

    @abc.abstractmethod
    async def is_known_login(self, key: str, since: float) -> bool:
        """Whether the key logged in successfully at or after `since`."""

    # inspection ------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def find_bytes(self, needle: bytes) -> list[str]:
        """Every `table.column` whose stored value contains the bytes (audits that nothing is left)."""
