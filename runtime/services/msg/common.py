"""Runtime services layer (msg): the collaborators the msg handler components are given explicitly: the local
sessions, the biz pool, the group cache and local fan-out (plus the router pool, runtime.services.msg.routing,
and the delivery tracker, runtime.services.msg.delivery)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message

from runtime.dispatch import Context
from runtime.errors import CallTimeout, ConnectionClosed
from runtime.monitor.metrics import Metrics
from runtime.services.links import FLAG_RELAY, Dialer, Link, Proto, pack_relay
from runtime.services.msg.delivery import ClientState
from runtime.services.msg.routing import RouterPool
from runtime.services.protocol import command_ids_of

if TYPE_CHECKING:
    from generated.teamtalk import IM_Group_pb2 as group

log = logging.getLogger("ttgen.msg")

BIZ_TIMEOUT = 10.0

Push = Callable[[Any, str, Message, "bytes | None"], bool]  # (client link, command, message, body) -> sent


def client_state(ctx: Context) -> ClientState:
    """The ClientState of the request's connection (created at its first request). On every chat message's
    path."""
    data = ctx.link.data
    st: ClientState | None = data.get("msg") if data else None
    if st is None:
        st = ctx.link.extras()["msg"] = ClientState(ctx.link)
    return st


def now() -> int:
    """Server time, unix seconds."""
    return int(time.time())


class LocalSessions:
    """The authenticated client connections of this msg server, by user id."""

    def __init__(self, metrics: Metrics) -> None:
        self.by_user: dict[int, list[ClientState]] = {}
        self.g_conns = metrics.gauge("msg_connections", "authenticated client connections")
        self.g_users = metrics.gauge("msg_online_users", "users with a connection here")

    @property
    def count(self) -> int:
        """Authenticated connections."""
        return int(self.g_conns.value)

    def add(self, state: ClientState) -> None:
        """Register an authenticated connection."""
        self.by_user.setdefault(state.user_id, []).append(state)
        self.g_conns.inc()
        self.g_users.set(len(self.by_user))

    def remove(self, state: ClientState) -> bool:
        """Forget a connection; True if it was registered."""
        states = self.by_user.get(state.user_id)
        if not states or state not in states:
            return False
        states.remove(state)
        if not states:
            del self.by_user[state.user_id]
        self.g_conns.dec()
        self.g_users.set(len(self.by_user))
        return True

    def of(self, user_id: int) -> list[ClientState]:
        """Local authenticated connections of a user."""
        return self.by_user.get(user_id, [])

    def users(self) -> list[int]:
        """Every user with a connection here."""
        return list(self.by_user)


class BizPool:
    """The links to every biz instance (one dialer each, by instance number; iterating the pool gives them),
    and calls through them."""

    def __init__(self, proto: Proto) -> None:
        self.proto = proto
        self.dialers: list[Dialer] = []  # by instance number
        self.by_instance: dict[int, Dialer] = {}

    def __iter__(self) -> Iterator[Dialer]:
        return iter(self.dialers)

    def __len__(self) -> int:
        return len(self.dialers)

    def __getitem__(self, index: int) -> Dialer:
        return self.dialers[index]

    def add(self, instance: int, dialer: Dialer) -> None:
        """A dialer for a biz instance seen for the first time."""
        self.by_instance[instance] = dialer
        self.dialers[:] = [self.by_instance[i] for i in sorted(self.by_instance)]

    @property
    def up(self) -> bool:
        """Whether some biz instance is connected."""
        return any(d.link is not None for d in self.dialers)

    def link(self, user_id: int = 0) -> Link | None:
        """The biz link for requests on behalf of `user_id`: a stable hash of the user id picks one of the
        known biz instances (so one user's requests, e.g. a sender's messages, keep their order on one link);
        if that one is down, the next live instance takes over. None if no biz is connected."""
        dialers = self.dialers
        n = len(dialers)
        if n == 1:
            link = dialers[0].link
            return link if link is not None and link.is_open else None
        if n == 0:
            return None
        start = ((user_id * 0x9E3779B1) & 0xFFFFFFFF) % n
        for i in range(n):
            link = dialers[(start + i) % n].link
            if link is not None and link.is_open:
                return link
        return None

    async def call(self, command: str, user_id: int, msg: Message) -> Message | None:
        """Forward to biz on behalf of `user_id`; the decoded reply (None: biz down or empty answer)."""
        link = self.link(user_id)
        if link is None:
            return None
        body = pack_relay([user_id], msg.SerializeToString())
        try:
            frame = await link.call(self.proto.cid(command), body, BIZ_TIMEOUT, flag=FLAG_RELAY)
        except (ConnectionClosed, CallTimeout) as exc:
            log.warning("biz did not answer %s: %s", command, exc)
            return None
        if not frame.body:
            return None
        return self.proto.parse(frame.command_id, frame.body)

    async def stop(self) -> None:
        """Close every biz link."""
        for d in self.dialers:
            await d.stop()


class GroupCache:
    """Members of the groups this server delivered to, by group id (version, sorted member ids); fetched
    through biz on a miss, dropped when a member change passes by."""

    def __init__(self, proto: Proto, biz: BizPool) -> None:
        self.proto = proto
        self.biz = biz
        self.groups: dict[int, tuple[int, list[int]]] = {}

    def version(self, group_id: int) -> int:
        """The cached version of a group's member list (0: not cached)."""
        cached = self.groups.get(group_id)
        return cached[0] if cached else 0

    def cached(self, group_id: int, default: list[int]) -> list[int]:
        """The cached members of a group, or `default`."""
        cached = self.groups.get(group_id)
        return cached[1] if cached is not None else default

    def store(self, group_id: int, version: int, members: list[int]) -> None:
        """Members biz reported with a stored message."""
        self.groups[group_id] = (version, members)

    def drop(self, group_id: int) -> None:
        """The group's members changed."""
        self.groups.pop(group_id, None)

    async def members(self, user_id: int, group_id: int) -> list[int]:
        """Members of a group (cached; fetched through biz as `user_id`, who must be a member)."""
        cached = self.groups.get(group_id)
        if cached is not None:
            return cached[1]
        cid = command_ids_of(self.proto.registry).CID_GROUP_INFO_REQUEST
        req = cast("group.IMGroupInfoListReq", self.proto.new(cid, user_id=user_id))
        v = req.group_version_list.add()
        v.group_id, v.version = group_id, 0
        rsp = cast("group.IMGroupInfoListRsp | None", await self.biz.call(cid.name, user_id, req))
        if rsp is None:
            return []
        for info in rsp.group_info_list:
            if info.group_id == group_id:
                members = sorted(info.group_member_list)
                self.groups[group_id] = (info.version, members)
                return members
        return []


class Fanout:
    """Pushes to local connections, and relays through the routers to the other servers' connections."""

    def __init__(self, proto: Proto, sessions: LocalSessions, push: Push, routers: RouterPool) -> None:
        self.proto = proto
        self.sessions = sessions
        self.push = push
        self.routers = routers

    def local(
        self,
        command: str,
        msg: Message,
        users: Iterable[int],
        *,
        skip: ClientState | None = None,
        pc_only: bool = False,
        mobile_only: bool = False,
    ) -> int:
        """Push to every local connection of the users (not `skip`); returns how many got it."""
        n = 0
        push = self.push
        for uid in users:
            for st in self.sessions.of(uid):
                if st is skip or (pc_only and st.mobile) or (mobile_only and not st.mobile):
                    continue
                if push(st.link, command, msg, None):
                    n += 1
        return n

    def notify(
        self, command: str, msg: Message, users: Sequence[int] | None, *, skip: ClientState | None = None
    ) -> None:
        """Local fan-out plus a targeted relay (users None: every connection of the cluster)."""
        self.local(command, msg, self.sessions.users() if users is None else users, skip=skip)
        self.routers.relay(
            self.proto.cid(command), msg.SerializeToString(), None if users is None else sorted(set(users))
        )


def strip_attach(msg: Message) -> Message:
    """Clear the server-only attach_data before a client sees the message."""
    if "attach_data" in msg.DESCRIPTOR.fields_by_name:
        msg.ClearField("attach_data")
    return msg


def stamp_user(msg: Message, user_id: int) -> None:
    """Overwrite the client-written user id with the authenticated one."""
    fields = msg.DESCRIPTOR.fields_by_name
    if "user_id" in fields and not fields["user_id"].is_repeated:
        msg.user_id = user_id  # type: ignore[attr-defined]


__all__ = [
    "BizPool",
    "Fanout",
    "GroupCache",
    "LocalSessions",
    "Push",
    "client_state",
    "now",
    "stamp_user",
    "strip_attach",
]
