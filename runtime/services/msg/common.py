"""Runtime services layer (msg): what the msg handler mixins share: the service, biz calls, fan-out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from runtime.dispatch import Context
from runtime.errors import CallTimeout, ConnectionClosed
from runtime.services.links import FLAG_RELAY, pack_relay
from runtime.services.msg.delivery import ClientState

if TYPE_CHECKING:
    from runtime.services.msg.service import MsgService

BIZ_TIMEOUT = 10.0


class HandlerBase:
    """Helpers for the handler mixins; `self.svc` is the MsgService."""

    def __init__(self, svc: MsgService) -> None:
        self.svc = svc
        self.proto = svc.proto

    @staticmethod
    def state(ctx: Context) -> ClientState:
        """The ClientState of the request's connection (created at login). On every chat message's path."""
        data = ctx.link.data
        st = data.get("msg") if data else None
        if st is None:
            st = ctx.link.extras()["msg"] = ClientState(ctx.link)
        return cast(ClientState, st)

    @staticmethod
    def now() -> int:
        """Server time, unix seconds."""
        return int(time.time())

    async def biz_call(self, command: str, user_id: int, msg: Any) -> Any | None:
        """Forward to biz on behalf of `user_id`; the decoded reply (None: biz down or empty answer)."""
        link = self.svc.biz_link(user_id)
        if link is None:
            return None
        body = pack_relay([user_id], msg.SerializeToString())
        try:
            frame = await link.call(self.proto.cid(command), body, BIZ_TIMEOUT, flag=FLAG_RELAY)
        except (ConnectionClosed, CallTimeout) as exc:
            self.svc.log.warning("biz did not answer %s: %s", command, exc)
            return None
        if not frame.body:
            return None
        return self.proto.parse(frame.command_id, frame.body)

    def fan_out(
        self,
        command: str,
        msg: Any,
        users: Iterable[int],
        *,
        skip: ClientState | None = None,
        pc_only: bool = False,
        mobile_only: bool = False,
    ) -> int:
        """Push to every local connection of the users (not `skip`); returns how many got it."""
        n = 0
        for uid in users:
            for st in self.svc.states_of(uid):
                if st is skip or (pc_only and st.mobile) or (mobile_only and not st.mobile):
                    continue
                if self.svc.push(st.link, command, msg):
                    n += 1
        return n

    def notify(
        self, command: str, msg: Any, users: Sequence[int] | None, *, skip: ClientState | None = None
    ) -> None:
        """Local fan-out plus a targeted relay (users None: every connection of the cluster)."""
        if users is None:
            self.fan_out(command, msg, list(self.svc.sessions), skip=skip)
        else:
            self.fan_out(command, msg, users, skip=skip)
        self.svc.routers.relay(
            self.proto.cid(command), msg.SerializeToString(), None if users is None else sorted(set(users))
        )

    async def group_members(self, user_id: int, group_id: int) -> list[int]:
        """Members of a group (cached; fetched through biz as `user_id`, who must be a member)."""
        cached = self.svc.group_members.get(group_id)
        if cached is not None:
            return cached[1]
        req: Any = self.proto.new("CID_GROUP_INFO_REQUEST", user_id=user_id)
        v = req.group_version_list.add()
        v.group_id, v.version = group_id, 0
        rsp = await self.biz_call("CID_GROUP_INFO_REQUEST", user_id, req)
        if rsp is None:
            return []
        for info in rsp.group_info_list:
            if info.group_id == group_id:
                members = sorted(info.group_member_list)
                self.svc.group_members[group_id] = (info.version, members)
                return members
        return []


def strip_attach(msg: Any) -> Any:
    """Clear the server-only attach_data before a client sees the message."""
    if "attach_data" in msg.DESCRIPTOR.fields_by_name:
        msg.ClearField("attach_data")
    return msg


def stamp_user(msg: Any, user_id: int) -> None:
    """Overwrite the client-written user id with the authenticated one."""
    fields = msg.DESCRIPTOR.fields_by_name
    if "user_id" in fields and not fields["user_id"].is_repeated:
        msg.user_id = user_id
