"""Runtime services layer (router): user -> msg server table, targeted relay, presence (route_server).

Unlike TeamTalk's route_server, a relay goes only to the msg servers that hold a target user (the envelope
names them; see runtime.services.links), and the sender gets a confirmation once every destination has
confirmed, so a msg server can retry through another router when this one dies. Several routers run side
by side: every msg server reports status to all of them and relays through its master; a router speaks
presence changes only for the msg servers that chose it as master, so each change is announced once.

Presence changes go out as the spec's presence policy says (runtime.services.presence): coalesced, one relay
per msg server (and gateway) per interval, carrying the latest state of every user that changed. The PC login
status notice to the user's own mobiles is not coalesced, and status queries are answered from the table.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, cast

from runtime.dispatch import Context, Dispatcher
from runtime.framing import Frame
from runtime.link_dispatch import LinkContext, forwards
from runtime.monitor.metrics import Metrics
from runtime.push import OfflinePush, push_from_config
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    bound_to_base,
    config_port,
    hosted_mapping,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.services.links import FLAG_RELAY, Link, Proto, pack_relay, relay_head, relay_targets
from runtime.services.presence import EVERYONE, Everyone, Flusher, PresenceCodec, PresencePolicy, States
from runtime.services.protocol import enums_of
from runtime.storage.base import Storage
from runtime.transport import Server, serve_links

PUSHED = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")  # relays that may notify offline mobiles


class UserTable:
    """user id -> its connections, a flat list [msg server link, client type, count, link, type, ...].

    Flat rather than nested dicts: a user with one connection (nearly all of them) costs one short list
    (about 80 bytes) instead of two dicts (about 480), which is what a router holding every online user of
    the cluster pays per user.
    """

    def __init__(self, mobile_bit: int) -> None:
        self.users: dict[int, list[Any]] = {}
        self.mobile_bit = mobile_bit  # the spec's ClientType bit of mobile clients

    def pc_online(self, user_id: int) -> bool:
        """TeamTalk's presence rule: online iff some PC client is connected somewhere."""
        entries = self.users.get(user_id)
        if entries:
            for i in range(0, len(entries), 3):
                if entries[i + 2] > 0 and not entries[i + 1] & self.mobile_bit:
                    return True
        return False

    def update(self, link: Link, user_id: int, client_type: int, delta: int) -> None:
        """Count one connection of a user on a msg server up or down."""
        entries = self.users.get(user_id)
        if entries is None:
            if delta > 0:
                self.users[user_id] = [link, client_type, delta]
            return
        for i in range(0, len(entries), 3):
            if entries[i] is link and entries[i + 1] == client_type:
                n = entries[i + 2] + delta
                if n > 0:
                    entries[i + 2] = n
                else:
                    del entries[i : i + 3]
                    if not entries:
                        del self.users[user_id]
                return
        if delta > 0:
            entries += (link, client_type, delta)

    def mobile_online(self, user_id: int) -> bool:
        """Whether some mobile client of the user is connected somewhere (no push needed then)."""
        entries = self.users.get(user_id)
        if entries:
            for i in range(0, len(entries), 3):
                if entries[i + 2] > 0 and entries[i + 1] & self.mobile_bit:
                    return True
        return False

    def entries(self, user_id: int) -> dict[Link, dict[int, int]]:
        """A user's connections as {link: {client type: count}} (for inspection)."""
        out: dict[Link, dict[int, int]] = {}
        entries = self.users.get(user_id) or []
        for i in range(0, len(entries), 3):
            out.setdefault(entries[i], {})[entries[i + 1]] = entries[i + 2]
        return out

    def drop_link(self, link: Link) -> list[int]:
        """Forget every entry of a msg server; returns the users it held."""
        held = []
        for uid in list(self.users):
            entries = self.users[uid]
            kept = [
                x for i in range(0, len(entries), 3) if entries[i] is not link for x in entries[i : i + 3]
            ]
            if len(kept) != len(entries):
                held.append(uid)
                if kept:
                    self.users[uid] = kept
                else:
                    del self.users[uid]
        return held

    def links_for(self, user_ids: Any) -> set[Link]:
        """The msg servers holding any of the users."""
        out: set[Link] = set()
        users = self.users
        for uid in user_ids:
            entries = users.get(uid)
            if entries:
                if len(entries) == 3:  # one connection's msg server (the common case): no slice
                    out.add(entries[0])
                else:
                    out.update(entries[0::3])
        return out


class RouterService(Service):
    """One router instance: its own handler object, bound to the stack's generated `RouterServiceBase`; the
    `Dispatcher` routes the frames of msg servers' and gateways' links to its `on_cid_*` methods."""

    def __new__(cls, ctx: ServiceContext) -> RouterService:
        return object.__new__(bound_to_base(cls, ctx, "RouterServiceBase"))

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.metrics = Metrics(labels={"service": "router", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.table = UserTable(enums_of(ctx.registry).ClientTypeBits.MOBILE)
        self.links: set[Link] = set()
        if not getattr(self, "__mapping__", None):
            self.__mapping__ = hosted_mapping(self, ctx, "router")
        self.dispatcher = Dispatcher(ctx.registry, self)
        self._server: Server | None = None
        self._endpoints: list[Endpoint] = []
        self.presence = PresencePolicy.from_registry(ctx.registry)
        self.presence_codec = PresenceCodec(self.presence, ctx.registry)
        self._presence_out: Flusher[Everyone] = Flusher(self.presence.interval, self._flush_presence)
        p = self.proto
        self._cid_pc_notify = p.cid("CID_OTHER_LOGIN_STATUS_NOTIFY")
        self.m_relayed = self.metrics.counter("router_relays_total", "relays received")
        self.m_forwarded = self.metrics.counter("router_forwards_total", "relay copies sent to msg servers")
        self.m_broadcasts = self.metrics.counter("router_broadcasts_total", "relays sent to every msg server")
        self.g_users = self.metrics.gauge("router_online_users", "users in the table")
        self.g_links = self.metrics.gauge("router_links", "connected msg servers")
        self.m_presence_flushes = self.metrics.counter(
            "router_presence_flushes_total", "coalesced presence flushes sent to every msg server"
        )
        self.m_presence_frames = self.metrics.counter(
            "router_presence_frames_total", "presence relay frames sent to msg servers and gateways"
        )
        # Pushes to offline mobiles (runtime.push), when `push:` is configured: the router sees every chat
        # relay and knows every connection, so it is where "offline" is known.
        self.push_dispatcher = push_from_config(ctx.config.get("push"), ctx.data_dir, self.metrics)
        self.push: OfflinePush | None = None
        self._storage: Storage | None = None

    async def start(self) -> None:
        """Bind the internal listener for msg servers (its timers send heartbeats and close dead links) and
        open storage for pushes, if configured."""
        if self.push_dispatcher is not None:
            from runtime.services.biz import open_storage

            self._storage = await open_storage(self.ctx)
            chat = {
                self.proto.cid(name): name == "CID_EXT_MSG_BURN" for name in PUSHED if self.proto.has(name)
            }
            self.push = OfflinePush(
                self.push_dispatcher,
                self._storage,
                self.table.mobile_online,
                self.proto.parse,
                chat,
                self.metrics,
                enums_of(self.ctx.registry),
            )
            self.push_dispatcher.start()
        port = config_port(self.ctx.config, "internal_port")
        self._server = await serve_links(
            self.ctx.internal_host,
            port,
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            auth=self.ctx.link_auth,
            name="router<-msg",
            local=self,  # this shard's msg server relays by direct calls (DirectRelay, runtime.inprocess)
        )
        self._endpoints = publish_endpoints(self.ctx, {"internal": self._server.port})

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Close the listener and every link."""
        withdraw_endpoints(self.ctx, self._endpoints)
        self._presence_out.close()
        if self._server is not None:
            await self._server.shutdown(1.0)
        if self.push is not None:
            await self.push.close()
        if self.push_dispatcher is not None:
            await self.push_dispatcher.stop(min(drain_timeout, 2.0))
        if self._storage is not None:
            await self._storage.close()
            self._storage = None

    def endpoints(self) -> list[Endpoint]:
        """The internal listener."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Links and table size."""
        return {"status": "ok", "links": len(self.links), "users": len(self.table.users)}

    # links -----------------------------------------------------------------------------------------------
    def on_connect(self, link: Link) -> None:
        """A msg server or gateway connected (it sends its snapshot and, if it chose us, ROLE_SET next)."""
        self.links.add(link)
        self.g_links.set(len(self.links))

    def on_disconnect(self, link: Link, reason: str) -> None:
        """Forget the server's users; speak for them if it had chosen this router as master."""
        self.links.discard(link)
        self.g_links.set(len(self.links))
        was_master = _is_master(link)
        for uid in self.table.drop_link(link):
            if was_master and not self.table.pc_online(uid):
                self._announce(uid, False)
        self.g_users.set(len(self.table.users))

    # handlers: the table and presence ---------------------------------------------------------------------
    def on_cid_other_user_status_update(self, ctx: Context, msg: Any) -> None:
        """A connection of a msg server went online or offline."""
        self._status(cast(Link, ctx.link), msg)

    def on_cid_other_online_user_info(self, ctx: Context, msg: Any) -> None:
        """A msg server's whole online table (on every connect and master change)."""
        self._snapshot(cast(Link, ctx.link), msg)

    def on_cid_other_role_set(self, ctx: Context, msg: Any) -> None:
        """The msg server chose (or dropped) this router as its master."""
        ctx.link.extras()[_MASTER] = bool(msg.master)

    async def on_cid_buddy_list_users_status_request(self, ctx: Context, msg: Any) -> Any:
        """Presence query, answered from the table."""
        rsp: Any = self.proto.new("CID_BUDDY_LIST_USERS_STATUS_RESPONSE", user_id=msg.user_id)
        for uid in msg.user_id_list:
            s = rsp.user_stat_list.add()
            s.user_id = uid
            s.status = self.presence.status(self.table.pc_online(uid))
        return rsp

    async def on_cid_other_heartbeat(self, ctx: Context, msg: Any) -> None:
        """Heartbeats are answered by the link layer and never dispatched."""
        return None

    # handlers: relays, forwarded as they came (not parsed) to the msg servers holding a target ------------
    @forwards
    def on_cid_msg_data(self, ctx: Context, msg: Any) -> None:
        """A stored chat message for its parties' other servers."""
        self._relay(ctx)

    @forwards
    def on_cid_ext_msg_burn(self, ctx: Context, msg: Any) -> None:
        """A stored burn-after-reading message."""
        self._relay(ctx)

    @forwards
    def on_cid_msg_read_notify(self, ctx: Context, msg: Any) -> None:
        """A session was read: the reader's other devices."""
        self._relay(ctx)

    @forwards
    def on_cid_switch_p2p_cmd(self, ctx: Context, msg: Any) -> None:
        """An opaque user-to-user command."""
        self._relay(ctx)

    @forwards
    def on_cid_buddy_list_remove_session_notify(self, ctx: Context, msg: Any) -> None:
        """A session was deleted: the user's other devices."""
        self._relay(ctx)

    @forwards
    def on_cid_buddy_list_sign_info_changed_notify(self, ctx: Context, msg: Any) -> None:
        """A signature changed: every online user."""
        self._relay(ctx)

    @forwards
    def on_cid_group_change_member_notify(self, ctx: Context, msg: Any) -> None:
        """Group membership changed."""
        self._relay(ctx)

    @forwards
    def on_cid_file_notify(self, ctx: Context, msg: Any) -> None:
        """A file offer or a ready offline file."""
        self._relay(ctx)

    @forwards
    def on_cid_ext_msg_burned_notify(self, ctx: Context, msg: Any) -> None:
        """A burn-after-reading message was read and destroyed."""
        self._relay(ctx)

    @forwards
    def on_cid_ext_msg_recall_notify(self, ctx: Context, msg: Any) -> None:
        """A message was recalled."""
        self._relay(ctx)

    @forwards
    def on_cid_ext_msg_edit_notify(self, ctx: Context, msg: Any) -> None:
        """A message's text was replaced."""
        self._relay(ctx)

    @forwards
    def on_cid_ext_typing(self, ctx: Context, msg: Any) -> None:
        """A typing indicator."""
        self._relay(ctx)

    @forwards
    def on_cid_ext_signal(self, ctx: Context, msg: Any) -> None:
        """Another ephemeral signal."""
        self._relay(ctx)

    @forwards
    def on_cid_other_server_kick_user(self, ctx: Context, msg: Any) -> None:
        """A cluster-wide kick, to the servers holding the user."""
        self._relay(ctx)

    @forwards
    def on_cid_shake_share(self, ctx: Context, msg: Any) -> None:
        """A shake shared with every msg server (the shake plugin)."""
        self._relay(ctx)

    # presence --------------------------------------------------------------------------------------------
    def _status(self, link: Link, msg: Any) -> None:
        uid = msg.user_id
        before = self.table.pc_online(uid)
        self.table.update(link, uid, msg.client_type, 1 if msg.user_status == self.presence.online else -1)
        after = self.table.pc_online(uid)
        self.g_users.set(len(self.table.users))
        if before != after and _is_master(link):
            self._announce(uid, after)

    def _snapshot(self, link: Link, msg: Any) -> None:
        self.table.drop_link(link)
        for s in msg.user_stat_list:
            self.table.update(link, s.user_id, s.client_type, 1)
        self.g_users.set(len(self.table.users))

    def _announce(self, user_id: int, pc_online: bool) -> None:
        """The new state to every msg server, coalesced (they push it to their clients as the presence policy
        says); PC login status to the user's own servers at once (for the user's mobiles)."""
        self._presence_out.put(EVERYONE, user_id, self.presence.status(pc_online))
        pc = self.proto.new(
            "CID_OTHER_LOGIN_STATUS_NOTIFY", user_id=user_id, login_status=1 if pc_online else 0
        )
        body = pack_relay([user_id], pc.SerializeToString())
        for link in self.table.links_for([user_id]):
            link.send(self._cid_pc_notify, body, flag=FLAG_RELAY)

    def _flush_presence(self, _everyone: Everyone, states: States) -> None:
        """One flush: the changed users' latest states to every msg server and gateway, as relays to all."""
        head = relay_head(None)
        frames = [
            (self.proto.cid(push.command), push.for_recipient(0)[1])
            for push in self.presence_codec.pushes(states)
        ]
        self.m_presence_flushes.inc()
        for link in self.links:
            for cid, body in frames:
                if link.send(cid, body, flag=FLAG_RELAY, head=head):
                    self.m_presence_frames.inc()

    # relay -----------------------------------------------------------------------------------------------
    def _relay(self, ctx: Context) -> None:
        """Forward a relayed frame as it came (the envelope included) to the servers holding its targets
        (every other server for a broadcast); confirm it to its sender once every copy is confirmed. The
        envelope was read once, by the link dispatcher (`ctx.targets`)."""
        if not isinstance(ctx, LinkContext) or not ctx.frame.flag & FLAG_RELAY:
            self.m_relayed.value += 1
            return  # not a relay (nothing to forward): answered empty
        ctx.deferred = True  # answered by `answer_empty` once every copy is confirmed (ctx.defer())
        frame = ctx.frame
        self._forward(ctx.internal, frame.command_id, frame.body, ctx.targets, ctx.answer_empty)

    def relay_from(
        self, origin: Link, command_id: int, body: bytes | memoryview, done: Callable[[], object]
    ) -> None:
        """Forward the relay `body` (envelope included) from the msg server at `origin` to the servers
        holding its targets; `done()` once every copy is confirmed (or lost), at once if there is none. A msg
        server of this shard calls it directly (runtime.services.contracts.DirectRelay), `origin` being the
        link its own relays would arrive on; the relay handlers above forward frames the same way."""
        targets, _start = relay_targets(body)
        self._forward(origin, command_id, body, targets, done)

    def _forward(
        self,
        origin: Link,
        command_id: int,
        body: bytes | memoryview,
        targets: tuple[int, ...] | None,
        done: Callable[[], object],
    ) -> None:
        # Counters are bumped in place (`value += 1`, no call): this runs once per relayed message.
        self.m_relayed.value += 1
        dests: Collection[Link]
        if targets is None:
            dests = [link for link in self.links if link is not origin]
            self.m_broadcasts.value += 1
        else:
            found = self.table.links_for(targets)
            found.discard(origin)
            dests = found
            push = self.push
            if push is not None and command_id in push.chat_ids:
                push.on_chat(command_id, bytes(body[2 + 4 * len(targets) :]), targets)
        if not dests:
            done()
            return
        data = body if type(body) is bytes else bytes(body)
        confirm = _Countdown(len(dests), done)
        forwarded = self.m_forwarded
        for link in dests:
            if link.request(command_id, data, confirm, flag=FLAG_RELAY):
                forwarded.value += 1
            else:
                confirm(None)


class _Countdown:
    """Confirms a relay to its sender (`done()`) after `n` replies (or losses) from the destinations."""

    __slots__ = ("done", "n")

    def __init__(self, n: int, done: Callable[[], object]) -> None:
        self.n = n
        self.done = done

    def __call__(self, _frame: Frame | None) -> None:
        self.n -= 1
        if self.n == 0:
            self.done()


_MASTER = "router_master"  # link data key: the msg server chose this router as its master


def _is_master(link: Link) -> bool:
    data = link.data
    return bool(data and data.get(_MASTER))


__all__ = ["RouterService", "UserTable"]
