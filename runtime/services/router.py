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

import asyncio
import contextlib
import time
from typing import Any

from runtime.framing import Frame
from runtime.monitor.metrics import Metrics
from runtime.push import OfflinePush, push_from_config
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    cancel_task,
    config_port,
    listener_port,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.services.links import (
    FLAG_RELAY,
    FLAG_REQUEST,
    Link,
    Proto,
    pack_relay,
    relay_head,
    relay_targets,
    serve_links,
)
from runtime.services.presence import EVERYONE, Everyone, Flusher, PresenceCodec, PresencePolicy, States
from runtime.storage.base import Storage

MOBILE_BIT = 0x10
PUSHED = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")  # relays that may notify offline mobiles


class UserTable:
    """user id -> its connections, a flat list [msg server link, client type, count, link, type, ...].

    Flat rather than nested dicts: a user with one connection (nearly all of them) costs one short list
    (about 80 bytes) instead of two dicts (about 480), which is what a router holding every online user of
    the cluster pays per user.
    """

    def __init__(self) -> None:
        self.users: dict[int, list[Any]] = {}

    def pc_online(self, user_id: int) -> bool:
        """TeamTalk's presence rule: online iff some PC client is connected somewhere."""
        entries = self.users.get(user_id)
        if entries:
            for i in range(0, len(entries), 3):
                if entries[i + 2] > 0 and not entries[i + 1] & MOBILE_BIT:
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
                if entries[i + 2] > 0 and entries[i + 1] & MOBILE_BIT:
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
                out.update(entries[0::3])
        return out


class RouterService(Service):
    """One router instance."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.metrics = Metrics(labels={"service": "router", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.table = UserTable()
        self.links: set[Link] = set()
        self._server: asyncio.Server | None = None
        self._endpoints: list[Endpoint] = []
        self._ticker: asyncio.Task[None] | None = None
        self.presence = PresencePolicy.from_registry(ctx.registry)
        self.presence_codec = PresenceCodec(self.presence, ctx.registry)
        self._presence_out: Flusher[Everyone] = Flusher(self.presence.interval, self._flush_presence)
        p = self.proto
        self._cid_status = p.cid("CID_OTHER_USER_STATUS_UPDATE")
        self._cid_snapshot = p.cid("CID_OTHER_ONLINE_USER_INFO")
        self._cid_role = p.cid("CID_OTHER_ROLE_SET")
        self._cid_stat_req = p.cid("CID_BUDDY_LIST_USERS_STATUS_REQUEST")
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
        """Bind the internal listener for msg servers (and open storage for pushes, if configured)."""
        if self.push_dispatcher is not None:
            from runtime.services.biz.storage_open import open_storage

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
            )
            self.push_dispatcher.start()
        port = config_port(self.ctx.config, "internal_port")
        self._server = await serve_links(
            self.ctx.internal_host, port, self._on_link, name="router", auth=self.ctx.link_auth
        )
        self._endpoints = publish_endpoints(self.ctx, {"internal": listener_port(self._server)})
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Close the listener and every link."""
        withdraw_endpoints(self.ctx, self._endpoints)
        self._presence_out.close()
        await cancel_task(self._ticker)
        if self._server is not None:
            self._server.close()
        for link in list(self.links):
            link.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
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

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for link in list(self.links):
                link.tick(now)

    # links -----------------------------------------------------------------------------------------------
    def _on_link(self, link: Link) -> None:
        link.name = "router<-msg"
        link.on_frame = self._on_frame
        link.on_lost.append(self._lost)
        self.links.add(link)
        self.g_links.set(len(self.links))

    def _lost(self, link: Link) -> None:
        self.links.discard(link)
        self.g_links.set(len(self.links))
        was_master = bool(link.peer.get("master"))
        for uid in self.table.drop_link(link):
            if was_master and not self.table.pc_online(uid):
                self._announce(uid, False)
        self.g_users.set(len(self.table.users))

    def _on_frame(self, link: Link, frame: Frame) -> None:
        if frame.flag & FLAG_RELAY:
            self._relay(link, frame)
            return
        cid = frame.command_id
        try:
            if cid == self._cid_status:
                self._status(link, self.proto.parse(cid, frame.body))
            elif cid == self._cid_snapshot:
                self._snapshot(link, self.proto.parse(cid, frame.body))
            elif cid == self._cid_role:
                role: Any = self.proto.parse(cid, frame.body)
                link.peer["master"] = bool(role.master)
            elif cid == self._cid_stat_req:
                self._users_stat(link, frame)
            else:
                link.reply(frame, cid)
        except Exception as exc:
            self.log.warning("router: bad 0x%04x from %s: %s", cid, link.name, exc)
            link.reply(frame, cid)

    # presence --------------------------------------------------------------------------------------------
    def _status(self, link: Link, msg: Any) -> None:
        uid = msg.user_id
        before = self.table.pc_online(uid)
        self.table.update(link, uid, msg.client_type, 1 if msg.user_status == self.presence.online else -1)
        after = self.table.pc_online(uid)
        self.g_users.set(len(self.table.users))
        if before != after and link.peer.get("master"):
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

    def _users_stat(self, link: Link, frame: Frame) -> None:
        req: Any = self.proto.parse(frame.command_id, frame.body)
        rsp: Any = self.proto.new("CID_BUDDY_LIST_USERS_STATUS_RESPONSE", user_id=req.user_id)
        for uid in req.user_id_list:
            s = rsp.user_stat_list.add()
            s.user_id = uid
            s.status = self.presence.status(self.table.pc_online(uid))
        link.reply(frame, self.proto.cid("CID_BUDDY_LIST_USERS_STATUS_RESPONSE"), rsp.SerializeToString())

    # relay -----------------------------------------------------------------------------------------------
    def _relay(self, origin: Link, frame: Frame) -> None:
        self.m_relayed.inc()
        try:
            targets, offset = relay_targets(frame.body)
        except Exception:
            origin.confirm(frame)
            return
        if targets is None:
            dests = [link for link in self.links if link is not origin]
            self.m_broadcasts.inc()
        else:
            dests = [link for link in self.table.links_for(targets) if link is not origin]
            if self.push is not None:
                self.push.on_chat(frame.command_id, bytes(frame.body[offset:]), targets)
        if not dests:
            origin.confirm(frame)
            return
        body = bytes(frame.body)
        confirm = _Countdown(len(dests), origin, frame)
        for link in dests:
            if link.request(frame.command_id, body, confirm, flag=FLAG_RELAY):
                self.m_forwarded.inc()
            else:
                confirm(None)


class _Countdown:
    """Confirms relay `frame` to `origin` after `n` replies (or losses) from the destinations arrived."""

    __slots__ = ("frame", "n", "origin")

    def __init__(self, n: int, origin: Link, frame: Frame) -> None:
        self.n = n
        self.origin = origin
        self.frame = frame

    def __call__(self, _frame: Frame | None) -> None:
        self.n -= 1
        if self.n == 0:
            self.origin.confirm(self.frame)


__all__ = ["FLAG_REQUEST", "RouterService", "UserTable"]
