"""Runtime services layer (msg): the msg service's lifecycle: client listener, peer links, timers, sessions.

Config keys (`services.msg`): `client_port` (0 = any), `max_conn`, `retransmit_timeout` (s, default from the
spec's IMMsgData transport policy), `max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

from google.protobuf.message import Message

from runtime.auth.passwords import md5_login_policy
from runtime.codec_legacy import LegacyText, legacy_key_from_config
from runtime.dispatch import Dispatcher
from runtime.monitor.metrics import Metrics
from runtime.plugins import load_plugins
from runtime.services.base import Endpoint, Service, ServiceContext, cancel_task, config_port
from runtime.services.file import FileRequestHandlers
from runtime.services.links import Dialer, Link, NoRequests, Proto
from runtime.services.msg.chat import ChatHandlers
from runtime.services.msg.common import BizPool, Fanout, GroupCache, LocalSessions
from runtime.services.msg.delivery import ClientState, DeliveryTracker
from runtime.services.msg.handlers import BizForwarding, Counts, MsgHandlers, SessionHandlers
from runtime.services.msg.inbound import relay_handlers
from runtime.services.msg.presence import LocalPresence
from runtime.services.msg.routing import RouterPool
from runtime.services.protocol import command_ids_of
from runtime.stages import build_stages
from runtime.transport import ConnectionCaps, Server, serve

TICK = 0.1  # retransmit resolution; link heartbeats every 10th tick, discovery every 50th


def _seconds(text: Any, default: float) -> float:
    if isinstance(text, int | float):
        return float(text)
    if isinstance(text, str) and text:
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        for suffix in ("ms", "s", "m", "h"):
            if text.endswith(suffix):
                with contextlib.suppress(ValueError):
                    return float(text[: -len(suffix)]) * units[suffix]
    return default


class MsgService(Service):
    """Client sessions, the auth gate, local fan-out, delivery with retransmit, relays through routers."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.metrics = Metrics(labels={"service": "msg", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.cmd = command_ids_of(ctx.registry)
        self.local = LocalSessions(self.metrics)
        self.sessions = self.local.by_user  # user id -> authenticated connections here
        self.max_conn = int(ctx.config.get("max_conn", 100000))
        policy = ctx.registry.by_id(self.cmd.CID_MSG_DATA).policy("transport")
        timeout = _seconds(ctx.config.get("retransmit_timeout", policy.get("timeout")), 5.0)
        attempts = int(ctx.config.get("max_attempts", policy.get("max_attempts", 5)))
        self.plugins = load_plugins(ctx.cluster_config.get("plugins") or (), self)  # runtime.plugins
        key = legacy_key_from_config(ctx.config)  # TeamTalk's text codec for original clients
        self.legacy = LegacyText(key, self.metrics, ctx.registry) if key is not None else None
        self.tracker = DeliveryTracker(
            self.push, self.metrics, timeout=timeout, max_attempts=attempts, clock=time.monotonic
        )
        self.presence = LocalPresence(ctx.registry, self.metrics, self.local, self.push)
        self.inbound = relay_handlers(self)  # what routers deliver: the generated MsgDeliveriesBase
        # Frames from routers: the same dispatcher machinery, routed to the relay handlers.
        self._stages = build_stages(ctx.registry)  # shared with the client dispatcher (made below)
        self.inbound_dispatcher = Dispatcher(ctx.registry, self.inbound, stages=self._stages)
        self.routers = RouterPool(
            self.proto, ctx.discovery, self.metrics, self.inbound_dispatcher, self.snapshot, ctx.link_auth
        )
        self.biz = BizPool(self.proto)  # one dialer per biz instance, by instance number
        self.groups = GroupCache(self.proto, self.biz)
        self.group_members = self.groups.groups  # group id -> (version, members)
        self.logins: dict[int, Dialer] = {}  # login instance -> dialer
        self._server: Server | None = None
        self._endpoints: list[Endpoint] = []
        self._ticker: asyncio.Task[None] | None = None
        self.g_conns = self.local.g_conns
        self.m_store_retries = self.metrics.counter(
            "msg_store_retries_total", "store requests sent to biz again after the link dropped unanswered"
        )
        self.m_store_unknown = self.metrics.counter(
            "msg_store_unknown_total",
            "chat messages left unacked after every store retry (stored or not unknown: the client resends)",
        )
        self.m_msgs_in = self.metrics.counter(
            "msg_msgs_in_total", "chat messages received from clients (IMMsgData and burn messages)"
        )
        self.m_ticket_logins = self.metrics.counter("msg_ticket_logins_total", "logins with a ticket")
        self.m_ticket_refused = self.metrics.counter(
            "msg_ticket_refused_total", "ticket logins refused (biz counts them by reason)"
        )
        self._background: set[asyncio.Task[Any]] = set()
        self.handlers = self._make_handlers()
        self.dispatcher = Dispatcher(ctx.registry, self.handlers, stages=self._stages)

    def _components(self) -> tuple[SessionHandlers, BizForwarding, ChatHandlers, FileRequestHandlers]:
        """The handler components, each given its collaborators."""
        fanout = Fanout(self.proto, self.local, self.push, self.routers)
        sessions = SessionHandlers(
            self.proto,
            sessions=self.local,
            biz=self.biz,
            routers=self.routers,
            presence=self.presence,
            fanout=fanout,
            push=self.push,
            counts=Counts(self.report_count, self.m_ticket_logins, self.m_ticket_refused),
            max_conn=self.max_conn,
            background=self.background,
            md5_login=md5_login_policy(self.ctx.cluster_config),
        )
        forwarding = BizForwarding(
            self.proto,
            biz=self.biz,
            groups=self.groups,
            presence=self.presence,
            fanout=fanout,
            legacy=self.legacy,
        )
        chat = ChatHandlers(
            self.proto,
            sessions=self.local,
            groups=self.groups,
            biz=self.biz,
            routers=self.routers,
            tracker=self.tracker,
            fanout=fanout,
            m_msgs_in=self.m_msgs_in,
            m_store_retries=self.m_store_retries,
            m_store_unknown=self.m_store_unknown,
            legacy=self.legacy,
        )
        files = FileRequestHandlers(
            self.proto,
            sessions=self.local,
            routers=self.routers,
            fanout=fanout,
            discovery=self.ctx.discovery,
            link_auth=self.ctx.link_auth,
        )
        return sessions, forwarding, chat, files

    def _make_handlers(self) -> MsgHandlers:
        base = getattr(self.ctx.servers, "MsgServiceBase", None) if self.ctx.servers is not None else None
        cls: type[MsgHandlers] = MsgHandlers
        if base is not None:
            # The generated base proves (through the ABC machinery) that every hosted command has a handler.
            plugin_methods = self.plugins.handler_namespace(self.ctx.registry.hosted_by("msg"), MsgHandlers)
            cls = type("MsgServiceHandlers", (MsgHandlers, base), plugin_methods)
        handlers = cls(*self._components())
        if base is None:
            handlers.__mapping__ = {  # type: ignore[attr-defined]
                info.command_id: "on_" + info.name.lower()
                for info in self.ctx.registry.hosted_by("msg")
                if hasattr(handlers, "on_" + info.name.lower())
            }
        return handlers

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen for clients, dial biz, login and routers."""
        port = config_port(self.ctx.config, "client_port")
        self._server = await serve(
            self.ctx.host,
            port,
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            caps=ConnectionCaps.from_config(self.ctx.config),
        )
        ep = Endpoint("msg", self.ctx.instance, "client", self.ctx.advertised(), self._server.port)
        self._endpoints = [ep]
        self._refresh_peers()
        self.routers.refresh()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="msg-tick")
        for d in self.biz.dialers:
            await d.wait_up(5.0)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Close client connections (after queued output), then peer links."""
        await cancel_task(self._ticker)
        self.presence.close()
        if self._server is not None:
            await self._server.shutdown(drain_timeout)
        await self.dispatcher.drain(min(drain_timeout, 2.0))
        if self._background:  # ticket revocations of the sessions just closed; retries give up at stop
            await asyncio.wait(list(self._background), timeout=min(drain_timeout, 2.0))
            for task in list(self._background):
                await cancel_task(task)
        await self.routers.stop()
        await self.biz.stop()
        for d in self.logins.values():
            await d.stop()

    def background(self, task: asyncio.Task[Any]) -> None:
        """Keep a fire-and-forget task referenced until it ends (stop() waits for the rest)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def endpoints(self) -> list[Endpoint]:
        """The client listener."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Peers and load."""
        biz_up = self.biz.up
        ok = biz_up and self.routers.available
        return {
            "status": "ok" if ok else "degraded",
            "biz": biz_up,
            "routers": len(self.routers.live_links()),
            "connections": int(self.g_conns.value),
            "pending_acks": self.tracker.pending,
        }

    # peers -----------------------------------------------------------------------------------------------
    def refresh_peers(self) -> None:
        """Look for new biz, login and router instances now (the supervisor's hint that more started)."""
        self._refresh_peers()
        self.routers.refresh()

    def _refresh_peers(self) -> None:
        """One dialer per biz and per login instance (by instance number: a restarted peer keeps its dialer,
        which re-resolves the new port)."""
        biz_instances = {0} | {ep.instance for ep in self.ctx.discovery.endpoints("biz", "internal")}
        for instance in sorted(biz_instances - set(self.biz.by_instance)):
            self.biz.add(instance, self._dial(f"msg->biz{instance}", "biz", instance, None))
        for ep in self.ctx.discovery.endpoints("login", "internal"):
            if ep.instance not in self.logins:
                self.logins[ep.instance] = self._dial(
                    f"msg->login{ep.instance}", "login", ep.instance, self._login_up
                )

    def _dial(self, name: str, service: str, instance: int, on_up: Any) -> Dialer:
        def resolve() -> tuple[str, int] | None:
            eps = [e for e in self.ctx.discovery.endpoints(service, "internal") if e.instance == instance]
            return eps[0].address if eps else None

        d = Dialer(
            name,
            resolve,
            NoRequests(),
            registry=self.ctx.registry,
            on_up=on_up,
            max_backoff=1.0,
            auth=self.ctx.link_auth,
        )
        d.start()
        return d

    def biz_link(self, user_id: int = 0) -> Link | None:
        """The biz link for requests on behalf of `user_id` (runtime.services.msg.common.BizPool.link)."""
        return self.biz.link(user_id)

    def _login_up(self, link: Link) -> None:
        cid = self.cmd.CID_OTHER_MSG_SERV_INFO
        info = self.proto.new(
            cid,
            ip1=self.ctx.advertised(),
            ip2=self.ctx.advertised(),
            port=self._endpoints[0].port if self._endpoints else 0,
            max_conn_cnt=self.max_conn,
            cur_conn_cnt=int(self.g_conns.value),
            host_name=socket.gethostname(),
        )
        link.send(cid, info.SerializeToString())

    def report_count(self, user_id: int, delta: int) -> None:
        """IMUserCntUpdate (+1 action 1, -1 action 2) to every login server."""
        cid = self.cmd.CID_OTHER_USER_CNT_UPDATE
        body = self.proto.new(cid, user_action=1 if delta > 0 else 2, user_id=user_id).SerializeToString()
        for d in self.logins.values():
            if d.link is not None:
                d.link.send(cid, body)

    async def _tick_loop(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tracker.tick()
                n += 1
                if n % 10 == 0:
                    now = time.monotonic()
                    if n % 50 == 0:  # new peers are rare; lost ones are noticed by their links at once
                        self._refresh_peers()
                        self.routers.refresh()
                    self.routers.tick(now)
                    for d in [*self.biz.dialers, *self.logins.values()]:
                        if d.link is not None:
                            d.link.tick(d.link.now())
            except Exception:
                self.log.exception("msg tick failed")

    # local sessions --------------------------------------------------------------------------------------
    def snapshot(self) -> list[tuple[int, int, int]]:
        """(user id, online status, client type) of every local session, for a router snapshot."""
        online = self.presence.policy.online
        return [(uid, online, st.client_type) for uid, states in self.sessions.items() for st in states]

    def states_of(self, user_id: int) -> list[ClientState]:
        """Local authenticated connections of a user."""
        return self.local.of(user_id)

    def push(self, link: Any, command: str, msg: Message, body: bytes | None = None) -> bool:
        """Send a server-initiated frame (seq 0) to a client (`body`: `msg` serialized, if known)."""
        if self.legacy is not None:
            encoded = self.legacy.outbound(link, command, msg)
            if encoded is not msg:
                msg, body = encoded, None
        try:
            return self.dispatcher.send(link, command, msg, 0, body)
        except Exception:
            self.log.exception("push %s failed", command)
            return False
