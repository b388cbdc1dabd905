"""Runtime services layer (gateway): HTTP long-poll and WebSocket access to messaging, the chat page, and the
admin HTTP API, on aiohttp.

The gateway is a msg server whose clients speak HTTP: it holds a session per logged-in HTTP user, reports
their presence to every router (status updates, snapshots on reconnect) exactly as a msg server does, stores
sends through biz with the same relay envelope (so the same dedup and msg-id rules apply), and delivers
through the routers; routers relay to it whatever targets its users. docs/web-api.md is the contract of the
client API (client_api.py, websocket.py, files.py, static.py); admin.py documents `/query/`.

Config keys (`services.gateway`): `http_port`, `admin_api_key_file` (default `admin.key` in the data dir,
created 0600), `poll_timeout_max` (s, default 30), `session_idle` (s without a poll or a socket before a
session ends, default 90), `max_body_bytes` (default 64 KiB), `max_upload_bytes` (default 5 MiB + 64 KiB),
`ws_max_frame` (default 64 KiB), `ip_rate` / `ip_burst` (requests and WebSocket frames per second per client
address, default 50 / 100), `blob_secret_file` (default `blob.secret`, for upload tokens), `web_root` and
`web_gen_root` (the page's folders, see static.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from runtime.auth.secret_files import read_or_create_secret
from runtime.dispatch import Dispatcher
from runtime.httpkit import HttpServer, Request, Response, json_response, serve_simple
from runtime.monitor.metrics import Metrics
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    cancel_task,
    config_port,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.services.biz import open_storage
from runtime.services.gateway.admin import AdminApi
from runtime.services.gateway.admin_users import AdminUsersApi
from runtime.services.gateway.client_api import ClientApi, error
from runtime.services.gateway.codes import BAD_REQUEST, TOO_LARGE
from runtime.services.gateway.files import Files, file_event
from runtime.services.gateway.presence import GatewayPresence
from runtime.services.gateway.relays import chat_event, chat_key, generic_event, relay_handlers
from runtime.services.gateway.sessions import Session, SessionTable, TokenBucket
from runtime.services.gateway.static import StaticFiles
from runtime.services.gateway.websocket import WebSockets
from runtime.services.links import Dialer, Link, NoRequests, Proto
from runtime.services.msg import RouterPool
from runtime.storage.base import Storage

MAX_IPS = 10000


class GatewayService(Service):
    """Long-poll clients and the admin API over HTTP."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        cfg = ctx.config
        self.metrics = Metrics(labels={"service": "gateway", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.sessions = SessionTable(float(cfg.get("session_idle", 90.0)))
        self.poll_timeout_max = float(cfg.get("poll_timeout_max", 30.0))
        self.group_members: dict[int, tuple[int, list[int]]] = {}
        self.storage: Storage | None = None
        self.admin_key = read_or_create_secret(ctx.data_dir / str(cfg.get("admin_api_key_file", "admin.key")))
        self.blob_secret = read_or_create_secret(
            ctx.data_dir / str(cfg.get("blob_secret_file", "blob.secret"))
        )
        self.ip_rate, self.ip_burst = float(cfg.get("ip_rate", 50)), float(cfg.get("ip_burst", 100))
        self._ip_buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.presence = GatewayPresence(self)
        # Frames from routers go through a Dispatcher to the relay handlers (the generated base's methods).
        self.inbound = relay_handlers(self)
        self.inbound_dispatcher = Dispatcher(ctx.registry, self.inbound)
        self.routers = RouterPool(
            self.proto, ctx.discovery, self.metrics, self.inbound_dispatcher, self.snapshot, ctx.link_auth
        )
        self.biz: Dialer | None = None
        self.client_api = ClientApi(self)
        self.admin_api = AdminApi(self)
        self.admin_users = AdminUsersApi(self)
        self.files = Files(self, int(cfg.get("max_upload_bytes", 5 * 1024 * 1024 + 64 * 1024)))
        self.websockets = WebSockets(self, int(cfg.get("ws_max_frame", 64 * 1024)))
        self.static = StaticFiles(self, cfg.get("web_root"), cfg.get("web_gen_root"))
        app = web.Application()
        app.router.add_get("/api/ws", self.websockets.handle)
        app.router.add_post("/api/upload", self.files.upload)
        app.router.add_get("/api/blob/{path:.+}", self.files.download)
        self.static.add_routes(app)
        self.admin_users.add_routes(app)
        max_body = int(cfg.get("max_body_bytes", 64 * 1024))
        handler = serve_simple(self.handle, max_body=max_body, name="gateway", refusal=_refusal)
        app.router.add_route("*", "/{tail:.*}", handler)
        self.http = HttpServer(app, host=ctx.host, port=config_port(cfg, "http_port"), name="gateway")
        self._endpoints: list[Endpoint] = []
        self._ticker: asyncio.Task[None] | None = None
        self.m_requests = self.metrics.counter("gateway_requests_total", "HTTP requests")
        self.m_rate_limited = self.metrics.counter("gateway_rate_limited_total", "requests refused by rate")
        self.m_events = self.metrics.counter("gateway_events_total", "events queued for long-poll clients")
        self.g_sessions = self.metrics.gauge("gateway_sessions", "live long-poll sessions")

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage (admin API), bind HTTP, dial biz and the routers."""
        self.storage = await open_storage(self.ctx)
        await self.http.start()
        self._endpoints = publish_endpoints(self.ctx, {"http": self.http.port})
        self.biz = Dialer(
            "gateway->biz",
            self._resolve_biz,
            NoRequests(),
            registry=self.ctx.registry,
            max_backoff=1.0,
            auth=self.ctx.link_auth,
        )
        self.biz.start()
        self.routers.refresh()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="gateway-tick")
        await self.biz.wait_up(5.0)

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """End every session, close HTTP, links and storage."""
        withdraw_endpoints(self.ctx, self._endpoints)
        await cancel_task(self._ticker)
        self.presence.close()
        for session in list(self.sessions.by_token.values()):
            self.retire(session)
        await self.websockets.close_all()
        await self.http.stop(min(drain_timeout, 1.0))
        await self.client_api.stop_revocations(min(drain_timeout, 2.0))
        await self.routers.stop()
        if self.biz is not None:
            await self.biz.stop()
        if self.storage is not None:
            await self.storage.close()

    def endpoints(self) -> list[Endpoint]:
        """The HTTP listener."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Peers and sessions."""
        biz_up = self.biz_link() is not None
        return {
            "status": "ok" if biz_up and self.routers.available else "degraded",
            "biz": biz_up,
            "routers": len(self.routers.live_links()),
            "sessions": len(self.sessions),
        }

    def _resolve_biz(self) -> tuple[str, int] | None:
        eps = self.ctx.discovery.endpoints("biz", "internal")
        return eps[0].address if eps else None

    def biz_link(self) -> Link | None:
        """The connected biz link, if any."""
        link = self.biz.link if self.biz is not None else None
        return link if link is not None and link.is_open else None

    async def _tick_loop(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(1.0)
            n += 1
            try:
                now = time.monotonic()
                self.routers.tick(now)
                link = self.biz_link()
                if link is not None:
                    link.tick(link.now())
                for session in self.sessions.idle(now):
                    self.retire(session)
            except Exception:
                self.log.exception("gateway tick failed")

    # HTTP ------------------------------------------------------------------------------------------------
    def rate_ok(self, peer: str) -> bool:
        """Spend one of the client address's tokens (HTTP requests and WebSocket frames alike)."""
        self.m_requests.inc()
        ip = peer.rsplit(":", 1)[0]
        bucket = self._ip_buckets.get(ip)
        if bucket is None:
            bucket = self._ip_buckets[ip] = TokenBucket(self.ip_rate, self.ip_burst)
            while len(self._ip_buckets) > MAX_IPS:
                self._ip_buckets.popitem(last=False)
        if bucket.take():
            return True
        self.m_rate_limited.inc()
        return False

    async def handle(self, request: Request) -> Response:
        """Rate-limit per client address, then route."""
        if not self.rate_ok(request.peer):
            return rate_limited()
        if request.path.startswith("/query/"):
            return await self.admin_api.handle(request)
        if request.path.startswith("/api/"):
            return await self.client_api.handle(request)
        return json_response({"error_code": 404, "error_msg": "not found"}, 404)

    # sessions --------------------------------------------------------------------------------------------
    def snapshot(self) -> list[tuple[int, int, int]]:
        """(user id, online status, client type) of every session, for a router snapshot."""
        online = self.presence.policy.online
        return [(s.user_id, online, s.client_type) for s in self.sessions.by_token.values()]

    def status_update(self, session: Session, online: bool) -> None:
        """Tell every router a session came (online) or went."""
        upd = self.proto.new(
            "CID_OTHER_USER_STATUS_UPDATE",
            user_status=self.presence.policy.status(online),
            user_id=session.user_id,
            client_type=session.client_type,
        )
        self.routers.to_all(self.proto.cid("CID_OTHER_USER_STATUS_UPDATE"), upd.SerializeToString())

    def retire(self, session: Session) -> asyncio.Task[None] | None:
        """End a session: presence offline, and its upload tokens dead (the returned task records that)."""
        if not self.sessions.remove(session):
            return None
        self.status_update(session, False)
        self.g_sessions.set(len(self.sessions))
        return self.client_api.end_uploads(session)

    def kick(self, session: Session, reason: int) -> None:
        """Tell a session it was kicked (its pending poll returns it), revoke its ticket and end it."""
        session.push({"type": "kick", "reason": reason})
        self.client_api.revoke_ticket(session)
        self.retire(session)

    # delivery --------------------------------------------------------------------------------------------
    def push_event(self, users: Any, event: dict[str, Any], skip: Session | None = None) -> int:
        """Queue an event for every session of the users (not `skip`)."""
        n = 0
        for uid in users:
            for session in self.sessions.of(uid):
                if session is not skip:
                    session.push(event)
                    n += 1
        self.m_events.inc(n)
        return n

    def deliver_chat(self, msg: Any, targets: Any, skip: Session | None = None, burn: bool = False) -> None:
        """A stored chat message to every session of the targets, once per session."""
        event = file_event(chat_event(msg, self.inbound.enums, burn))
        for uid in targets:
            key = chat_key(uid, msg, self.inbound.enums)
            for session in self.sessions.of(uid):
                if session.first_delivery(key) and session is not skip:
                    session.push(event)
                    self.m_events.inc()

    def notify(self, command: str, msg: Any, users: list[int], skip: Session | None = None) -> None:
        """Local events plus a targeted relay through the routers (to TCP clients and other gateways)."""
        self.push_event(users, generic_event(command, msg), skip)
        self.routers.relay(self.proto.cid(command), msg.SerializeToString(), sorted(set(users)))


def rate_limited() -> Response:
    """The answer to a client address over its rate (the same for every kind of request)."""
    return json_response({"error_code": 429, "error_msg": "too many requests"}, 429, {"Retry-After": "1"})


def _refusal(status: int, reason: str) -> Response:
    """Requests refused before the API sees them: too large (error 24), malformed or too slow (error 1)."""
    return error(TOO_LARGE if status == 413 else BAD_REQUEST, reason, status)
