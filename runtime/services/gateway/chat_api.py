"""Runtime services layer (gateway): what the chat page reads and does besides sending (docs/web-api.md).

The directory (`users`, `departments`, `user_info`), the user's groups (`groups`, `group`), recent sessions
(`recent`), history pages (`history`), presence snapshots (`presence`), typing notices (`typing`) and recall
(`recall`), edit (`edit`) and the cluster's addresses (`discovery`). Each asks biz (or a router, for presence)
as the session's user, exactly as msg does for a TCP client, so biz's authorization applies: a group's details
and history only for its members, a message only for its parties. Answers use the protocol's field names with
enums as integers; errors are raised as `ApiError` (runtime.services.gateway.codes).
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from runtime.httpkit import Request, Response, json_response
from runtime.services.gateway.codes import INVALID as INVALID_CODE
from runtime.services.gateway.codes import (
    RATE_LIMITED,
    ApiError,
    not_member,
    unavailable,
)
from runtime.services.gateway.codes import TOO_LARGE as TOO_LARGE_CODE
from runtime.services.gateway.files import file_event
from runtime.services.gateway.sessions import Session

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums
    from runtime.services.gateway.service import GatewayService

MAX_USER_IDS = 200
MAX_PRESENCE_IDS = 1000
MAX_PAGE = 100
DEFAULT_PAGE = 50
MAX_EDIT_BYTES = 4096


def _ok(**fields: Any) -> Response:
    return json_response({"error_code": 0, "error_msg": "", **fields})


def arg_uint(doc: dict[str, Any], name: str, default: int | None = None, *, positive: bool = False) -> int:
    """An unsigned 32-bit field: a JSON number, or a decimal string (query strings)."""
    value = doc.get(name, default)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 10:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must be an unsigned 32-bit integer")
    if positive and value == 0:
        raise ValueError(f"{name} must not be 0")
    return value


def arg_ids(doc: dict[str, Any], name: str, limit: int) -> list[int]:
    """A list of positive ids: a JSON list, or comma-separated decimals."""
    value = doc.get(name)
    if isinstance(value, str):
        value = [v for v in value.split(",") if v] if len(value) <= limit * 11 else None
    if not isinstance(value, list) or not value or len(value) > limit:
        raise ValueError(f"{name} must list 1 to {limit} user ids")
    return [arg_uint({name: v}, name, positive=True) for v in value]


def arg_session_type(doc: dict[str, Any], enums: type[Enums], *, required: bool = False) -> int:
    """A value of the spec's SessionType (default one-to-one unless `required`)."""
    known = [int(v) for v in enums.SessionType]
    value = arg_uint(doc, "session_type", None if required else int(enums.SessionType.SESSION_TYPE_SINGLE))
    if value not in known:
        raise ValueError(f"session_type must be one of {tuple(known)}")
    return value


def proto_doc(msg: Any) -> dict[str, Any]:
    """A protocol message as JSON: field names as declared, enums as integers, unset fields shown."""
    doc: dict[str, Any] = MessageToDict(
        msg,
        preserving_proto_field_name=True,
        use_integers_for_enums=True,
        always_print_fields_with_no_presence=True,
    )
    doc.pop("attach_data", None)
    return doc


def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def history_message(info: Any, user: int, session_type: int, session_id: int, group: bool) -> dict[str, Any]:
    """A stored MsgInfo as the `msg` event's shape (without seq); `group`: a group session."""
    data = bytes(info.msg_data)
    sender = info.from_session_id
    to = session_id if group or sender == user else user
    return file_event(
        {
            "type": "msg",
            "msg_id": info.msg_id,
            "from": sender,
            "to": to,
            "session_type": session_type,
            "msg_type": int(info.msg_type),
            "create_time": info.create_time,
            "text": _text(data),
            "data_b64": base64.b64encode(data).decode("ascii"),
            "burn": False,
        }
    )


class ChatPageApi:
    """The chat page's reads and commands (mixed into ClientApi, which provides `_biz`)."""

    svc: GatewayService
    proto: Any
    enums: type[Enums]
    refusals: dict[str, dict[int, tuple[int, str]]]

    async def _biz(self, command: str, user_id: int, msg: Any) -> Any | None:  # pragma: no cover - ClientApi
        raise NotImplementedError

    async def ask(self, command: str, user: int, **fields: Any) -> Any:
        """`command` with `fields` (and `user_id`) to biz as `user`; its answer, or ApiError 3 (biz down)."""
        rsp = await self._biz(command, user, self.proto.new(command, user_id=user, **fields))
        if rsp is None:
            raise unavailable()
        return rsp

    def is_group(self, session_type: int) -> bool:
        """Whether a SessionType value is the group one."""
        return session_type == self.enums.SessionType.SESSION_TYPE_GROUP

    async def members_of(self, user: int, group_id: int) -> list[int]:
        """The members of a group the user belongs to; ApiError 22 otherwise, 3 when biz is down."""
        members = await self.group_members(user, group_id)
        if members is None:
            raise unavailable()
        if user not in members:
            raise not_member()
        return members

    async def parties(self, user: int, session_id: int, session_type: int) -> list[int]:
        """Who a session's notices go to: both users, or every member of a group the user belongs to."""
        if self.is_group(session_type):
            return await self.members_of(user, session_id)
        if session_id == user:
            raise ValueError("a session with oneself")
        return [user, session_id]

    async def users(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """The company directory (incremental with `since`)."""
        assert session is not None
        since = arg_uint(doc, "since", 0)
        rsp = await self.ask("CID_BUDDY_LIST_ALL_USER_REQUEST", session.user_id, latest_update_time=since)
        return _ok(users=[proto_doc(u) for u in rsp.user_list], latest_update_time=rsp.latest_update_time)

    async def departments(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """The department tree (incremental with `since`)."""
        assert session is not None
        since = arg_uint(doc, "since", 0)
        rsp = await self.ask("CID_BUDDY_LIST_DEPARTMENT_REQUEST", session.user_id, latest_update_time=since)
        return _ok(
            departments=[proto_doc(d) for d in rsp.dept_list], latest_update_time=rsp.latest_update_time
        )

    async def user_info(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """Profiles of the asked users."""
        assert session is not None
        ids = arg_ids(doc, "user_ids", MAX_USER_IDS)
        rsp = await self.ask("CID_BUDDY_LIST_USER_INFO_REQUEST", session.user_id, user_id_list=ids)
        return _ok(users=[proto_doc(u) for u in rsp.user_info_list])

    async def _group_infos(self, user: int, group_ids: list[int]) -> list[Any] | None:
        """GroupInfo of those of the groups the user belongs to (None: biz unavailable)."""
        if not group_ids:
            return []
        req: Any = self.proto.new("CID_GROUP_INFO_REQUEST", user_id=user)
        for gid in group_ids:
            req.group_version_list.add(group_id=gid, version=0)
        rsp = await self._biz("CID_GROUP_INFO_REQUEST", user, req)
        return None if rsp is None else list(rsp.group_info_list)

    async def groups(self, _r: Request, _d: dict[str, Any], session: Session | None) -> Response:
        """The user's normal groups with their members."""
        assert session is not None
        user = session.user_id
        listed = await self.ask("CID_GROUP_NORMAL_LIST_REQUEST", user)
        infos = await self._group_infos(user, [g.group_id for g in listed.group_version_list])
        if infos is None:
            raise unavailable()
        return _ok(groups=[proto_doc(g) for g in infos])

    async def group(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """One group the user belongs to."""
        assert session is not None
        gid = arg_uint(doc, "group_id", positive=True)
        infos = await self._group_infos(session.user_id, [gid])
        if infos is None:
            raise unavailable()
        if not infos:
            raise not_member()
        return _ok(group=proto_doc(infos[0]))

    async def group_members(self, user: int, group_id: int) -> list[int] | None:
        """Members of a group the user belongs to (cached from sends, else asked), [] if not a member, None if
        biz is unavailable."""
        cached = self.svc.group_members.get(group_id)
        if cached is not None and user in cached[1]:
            return list(cached[1])
        infos = await self._group_infos(user, [group_id])
        if infos is None:
            return None
        if not infos:
            return []
        members = list(infos[0].group_member_list)
        self.svc.group_members[group_id] = (infos[0].version, members)
        return members

    async def recent(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """Recent sessions updated after `since`, each with its latest message."""
        assert session is not None
        since = arg_uint(doc, "since", 0)
        rsp = await self.ask(
            "CID_BUDDY_LIST_RECENT_CONTACT_SESSION_REQUEST", session.user_id, latest_update_time=since
        )
        out = []
        for info in rsp.contact_session_list:
            item = proto_doc(info)
            data = bytes(info.latest_msg_data)
            item.pop("latest_msg_data", None)
            item["latest_msg_text"] = _text(data)
            item["latest_msg_data_b64"] = base64.b64encode(data).decode("ascii")
            out.append(item)
        out.sort(key=lambda item: -int(item["updated_time"]))
        return _ok(sessions=out)

    async def history(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """A page of a session's messages older than `before` (0: from the newest), newest first."""
        assert session is not None
        user = session.user_id
        session_id = arg_uint(doc, "session_id", positive=True)
        session_type = arg_session_type(doc, self.enums)
        before = arg_uint(doc, "before", 0)
        limit = arg_uint(doc, "limit", DEFAULT_PAGE)
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be 1 to {MAX_PAGE}")
        await self.parties(user, session_id, session_type)  # a member of the group; not oneself
        if before == 1:
            return _ok(messages=[], more=False)
        rsp = await self.ask(
            "CID_MSG_LIST_REQUEST",
            user,
            session_type=session_type,
            session_id=session_id,
            msg_id_begin=before - 1 if before else 0,
            msg_cnt=limit,
        )
        page = sorted(rsp.msg_list, key=lambda m: -m.msg_id)[:limit]
        group = self.is_group(session_type)
        messages = [history_message(m, user, session_type, session_id, group) for m in page]
        return _ok(messages=messages, more=len(messages) == limit)

    async def presence(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """Online status of the asked users, from a router (offline for all when no router answers)."""
        assert session is not None
        ids = arg_ids(doc, "user_ids", MAX_PRESENCE_IDS)
        req = self.proto.new("CID_BUDDY_LIST_USERS_STATUS_REQUEST", user_id=session.user_id, user_id_list=ids)
        offline = int(self.svc.presence.policy.offline)
        statuses = {uid: offline for uid in ids}
        try:
            frame = await self.svc.routers.call(
                self.proto.cid("CID_BUDDY_LIST_USERS_STATUS_REQUEST"), req.SerializeToString()
            )
            rsp: Any = self.proto.parse(frame.command_id, frame.body)
        except (ConnectionError, TimeoutError):
            rsp = None
        if rsp is not None:
            for stat in rsp.user_stat_list:
                if stat.user_id in statuses:
                    statuses[stat.user_id] = int(stat.status)
        return _ok(statuses=[{"user_id": uid, "status": st} for uid, st in statuses.items()])

    async def typing(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """A typing notice to the peer's (or the group members') sessions; never stored."""
        assert session is not None
        if not session.typing.take():
            raise ApiError(RATE_LIMITED, "more than 5 typing notices per second")
        user = session.user_id
        to = arg_uint(doc, "to", positive=True)
        session_type = arg_session_type(doc, self.enums)
        states = [int(v) for v in self.enums.TypingState]
        state = arg_uint(doc, "state", states[0])
        if state not in states:
            raise ValueError(f"state must be one of {tuple(states)} (started, paused, stopped)")
        if to == user and not self.is_group(session_type):
            raise ValueError("typing to oneself")
        targets = await self.parties(user, to, session_type)
        if not self.is_group(session_type):
            targets = [to]
        note = self.proto.new(
            "CID_EXT_TYPING", from_user_id=user, to_session_id=to, session_type=session_type, state=state
        )
        self.svc.notify("CID_EXT_TYPING", note, targets, skip=session)
        return _ok()

    async def recall(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """The sender withdraws a message; every device of every party is told."""
        assert session is not None
        user = session.user_id
        session_id = arg_uint(doc, "session_id", positive=True)
        session_type = arg_session_type(doc, self.enums)
        msg_id = arg_uint(doc, "msg_id", positive=True)
        fields = {"session_type": session_type, "session_id": session_id, "msg_id": msg_id}
        rsp = await self.ask("CID_EXT_MSG_RECALL_REQ", user, **fields)
        self._refused("recall", rsp.result_code)
        targets = await self._notice_targets(user, session_id, session_type)
        note = self.proto.new(
            "CID_EXT_MSG_RECALL_NOTIFY",
            from_user_id=user,
            to_session_id=session_id,
            session_type=session_type,
            msg_id=msg_id,
            recall_time=int(time.time()),
        )
        self.svc.notify("CID_EXT_MSG_RECALL_NOTIFY", note, targets, skip=session)
        return _ok()

    async def edit(self, _r: Request, doc: dict[str, Any], session: Session | None) -> Response:
        """The sender replaces a text message's text within the edit window; every device of every party gets
        an `edit` event (the editing session excepted: the answer is its confirmation)."""
        assert session is not None
        user = session.user_id
        session_id = arg_uint(doc, "session_id", positive=True)
        session_type = arg_session_type(doc, self.enums)
        msg_id = arg_uint(doc, "msg_id", positive=True)
        text = doc.get("text")
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty string")
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (a lone surrogate)") from None
        if len(data) > MAX_EDIT_BYTES:
            raise ApiError(TOO_LARGE_CODE, f"text over {MAX_EDIT_BYTES} bytes")
        fields = {"session_type": session_type, "session_id": session_id, "msg_id": msg_id}
        rsp = await self.ask("CID_EXT_MSG_EDIT_REQ", user, msg_data=data, **fields)
        self._refused("edit", rsp.result_code)
        targets = await self._notice_targets(user, session_id, session_type)
        note = self.proto.new(
            "CID_EXT_MSG_EDIT_NOTIFY",
            from_user_id=user,
            to_session_id=session_id,
            msg_data=data,
            edit_time=rsp.edit_time,
            **{k: v for k, v in fields.items() if k != "session_id"},
        )
        self.svc.notify("CID_EXT_MSG_EDIT_NOTIFY", note, targets, skip=session)
        return _ok(edit_time=rsp.edit_time)

    def _refused(self, what: str, result: int) -> None:
        """ApiError for a refused recall or edit (the spec's result value, mapped by name)."""
        if result:
            code, text = self.refusals[what].get(int(result), (INVALID_CODE, f"{what} refused"))
            raise ApiError(code, text)

    async def _notice_targets(self, user: int, session_id: int, session_type: int) -> list[int]:
        """Who hears of a recall or edit biz accepted: both users, or the group's members (the sender alone
        when the members cannot be read now)."""
        if not self.is_group(session_type):
            return [user, session_id]
        return await self.group_members(user, session_id) or [user]

    async def discovery(self, request: Request, _d: dict[str, Any], _s: Session | None) -> Response:
        """Where a client finds the cluster (the `discovery` URL the login service hands out): this gateway's
        API, WebSocket and page, the login services' lookup URLs, the msg and file servers' TCP addresses and
        the blob store. No session needed, like the login lookup itself."""
        host = request.headers.get("host", "") or f"{self.svc.ctx.host}:{self.svc.http.port}"
        here = f"http://{host}"
        found = self.svc.ctx.discovery.endpoints

        def addrs(service: str, kind: str) -> list[dict[str, Any]]:
            return [{"host": ep.host, "port": ep.port} for ep in found(service, kind)]

        return _ok(
            gateway={"api": here + "/api", "websocket": f"ws://{host}/api/ws", "page": here + "/"},
            login=[f"http://{ep.host}:{ep.port}/msg_server" for ep in found("login", "http")],
            msg=addrs("msg", "client"),
            file=addrs("file", "client"),
            blobs=[f"http://{ep.host}:{ep.port}/" for ep in found("storage", "http")],
        )

    async def ping(self, _r: Request, _d: dict[str, Any], session: Session | None) -> Response:
        """Nothing but an answer (keeps a session alive; WebSocket clients measure round trips with it)."""
        assert session is not None
        return _ok()


__all__ = ["ChatPageApi", "arg_uint", "history_message", "proto_doc"]
