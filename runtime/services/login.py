"""Runtime services layer (login): msg-server registry, least-loaded choice, admission queue, lookups.

Config keys (`services.login`): `http_port`, `client_port`, `internal_port` (0 = any), `msfs` and
`discovery` (URLs handed to clients), and the admission gate (runtime.services.admission): `admission_rate`
and `admission_burst` (a hard cap on logins handed out, default 5000/s and 5000), `admission_window_min`
(admitted-but-unfinished logins allowed before any is measured, default 16), `admission_target` (seconds of
measured login throughput admitted ahead, default 2), `ticket_ttl` (seconds a queued client keeps its place
beyond the time it was told to come back, default 10), `max_queued_per_address` (default 5000).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from runtime.dispatch import Context, Dispatcher
from runtime.httpkit import HttpServer, Request, Response, serve_simple
from runtime.monitor.metrics import Metrics
from runtime.services.admission import (
    MSG_SERVER_FULL,
    NO_MSG_SERVER,
    NONE,
    Admission,
    Decision,
    MsgServer,
)
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    config_port,
    generated_handlers,
    hosted_mapping,
    publish_endpoints,
    withdraw_endpoints,
)
from runtime.services.links import Proto
from runtime.services.refusals import RejectingHandlers
from runtime.transport import ConnectionCaps, InternalLink, Link, Server, serve, serve_links

MAX_REQUEST = 1024  # the whole request head (a longer line is refused by aiohttp itself, 400)
MAX_HEADER_LINES = 16
IDLE_SECONDS = 60.0


class LoginHandlers(RejectingHandlers):
    """Client-facing commands of the login service (bound to the generated LoginServiceBase)."""

    def __init__(self, svc: LoginService) -> None:
        self.svc = svc

    async def on_cid_login_req_msgserver(self, ctx: Context, msg: Any) -> Any:
        """Legacy TCP lookup: answer and close (TeamTalk's path was dead; this one works)."""
        d = self.svc.decide("", _address(ctx.peer), enqueue=False)
        rsp: Any = self.svc.proto.new("CID_LOGIN_RES_MSGSERVER", result_code=d.code)
        if d.server is not None:
            rsp.prior_ip, rsp.backip_ip, rsp.port = d.server.ip1, d.server.ip2, d.server.port
        ctx.reply(rsp)
        ctx.close("lookup answered")
        return None

    async def on_cid_ext_login_queue_req(self, ctx: Context, msg: Any) -> Any:
        """Lookup that queues instead of refusing."""
        d = self.svc.decide(msg.queue_ticket.hex() if msg.queue_ticket else "", _address(ctx.peer))
        rsp: Any = self.svc.proto.new("CID_EXT_LOGIN_QUEUE_RSP", result_code=d.code)
        if d.server is not None:
            rsp.prior_ip, rsp.backup_ip, rsp.port = d.server.ip1, d.server.ip2, d.server.port
        elif d.ticket:
            rsp.queue_position, rsp.retry_after_ms = d.position, d.retry_after_ms
            rsp.queue_ticket, rsp.expected_wait_ms = bytes.fromhex(d.ticket), d.expected_wait_ms
        return rsp

    async def on_cid_other_heartbeat(self, ctx: Context, msg: Any) -> None:
        """Heartbeats are answered by the connection layer."""
        return None

    def on_cid_other_msg_serv_info(self, ctx: Context, msg: Any) -> None:
        """A msg server registers (on the internal listener only: a client's is refused as not from a
        client before it reaches here)."""
        svc = self.svc
        svc.servers[ctx.link] = MsgServer(
            msg.ip1, msg.ip2, msg.port, msg.max_conn_cnt, msg.cur_conn_cnt, msg.host_name
        )
        svc.g_servers.set(len(svc.servers))

    def on_cid_other_user_cnt_update(self, ctx: Context, msg: Any) -> None:
        """A msg server's connection count moved by one (internal listener only)."""
        svc = self.svc
        server = svc.servers.get(ctx.link)
        if server is not None:
            server.cur_conn = max(0, server.cur_conn + (1 if msg.user_action == 1 else -1))
            if msg.user_action == 1:
                if server.recent:
                    server.recent.popleft()
                svc.admission.completed()

    def on_connect(self, link: Link) -> None:
        """A client, or a msg server on the internal listener."""
        if isinstance(link, InternalLink):
            self.svc.links.add(link)

    def on_disconnect(self, link: Link, reason: str) -> None:
        """A lost msg server takes its whole count with it."""
        if isinstance(link, InternalLink):
            svc = self.svc
            svc.links.discard(link)
            svc.servers.pop(link, None)
            svc.g_servers.set(len(svc.servers))


class LoginService(Service):
    """The login service: where clients ask which msg server to use."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.metrics = Metrics(labels={"service": "login", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        cfg = ctx.config
        self.admission = Admission(
            float(cfg.get("admission_rate", 5000)),
            float(cfg.get("admission_burst", 5000)),
            float(cfg.get("ticket_ttl", 10)),
            window_min=int(cfg.get("admission_window_min", 16)),
            target_seconds=float(cfg.get("admission_target", 2.0)),
            max_queued_per_address=int(cfg.get("max_queued_per_address", 5000)),
        )
        self.servers: dict[InternalLink | Link, MsgServer] = {}
        cls = generated_handlers(ctx, LoginHandlers, "LoginServiceBase")
        self.handlers = cls(self)
        if cls is LoginHandlers:
            self.handlers.__mapping__ = hosted_mapping(self.handlers, ctx, "login")  # type: ignore[attr-defined]
        # One dispatcher for both listeners: client commands from clients, registrations from msg servers.
        self.dispatcher = Dispatcher(ctx.registry, self.handlers)
        self._internal: Server | None = None
        app = web.Application()
        handler = serve_simple(
            self._http_request,
            max_body=0,  # GET only: a declared body is refused before a byte of it is read
            name="login",
            refusal=_refusal,
            max_head=MAX_REQUEST,
        )
        app.router.add_route("*", "/{tail:.*}", handler)
        self.http = HttpServer(
            app,
            host=ctx.host,
            port=config_port(cfg, "http_port"),
            max_line=MAX_REQUEST,
            max_headers=MAX_HEADER_LINES,
            idle_timeout=IDLE_SECONDS,
            name="login",
            max_head=None,  # the handler refuses a long head with the lookup's own JSON shape
        )
        self._client: Server | None = None
        self._endpoints: list[Endpoint] = []
        self.links: set[InternalLink] = set()  # every msg server link, registered or not
        self.m_lookups = self.metrics.counter("login_lookups_total", "msg server lookups answered")
        self.m_queued = self.metrics.counter("login_queued_total", "lookups answered with a queue place")
        self.g_servers = self.metrics.gauge("login_msg_servers", "registered msg servers")
        self.g_queue = self.metrics.gauge("login_queue_depth", "clients waiting in the login queue")
        self.g_rate = self.metrics.gauge("login_finished_per_second", "logins finished per second (measured)")
        self.g_window = self.metrics.gauge("login_admission_window", "unfinished logins the gate allows")

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind internal, HTTP and client listeners."""
        host, cfg = self.ctx.host, self.ctx.config
        internal_port = config_port(cfg, "internal_port")
        self._internal = await serve_links(
            self.ctx.internal_host,
            internal_port,
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            auth=self.ctx.link_auth,
            name="login<-msg",
        )
        await self.http.start()
        self._client = await serve(
            host,
            config_port(cfg, "client_port"),
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            caps=ConnectionCaps.from_config(cfg),
        )
        self._endpoints = publish_endpoints(
            self.ctx,
            {"internal": self._internal.port, "http": self.http.port, "client": self._client.port},
        )

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Close every listener and connection."""
        withdraw_endpoints(self.ctx, self._endpoints)
        if self._client is not None:
            await self._client.shutdown(min(drain_timeout, 1.0))
        await self.http.stop(0.0)  # lookups answer at once: idle keep-alive connections are just closed
        if self._internal is not None:
            await self._internal.shutdown(1.0)

    def endpoints(self) -> list[Endpoint]:
        """Internal, HTTP and client listeners."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Registered msg servers and queue depth."""
        return {
            "status": "ok" if self.servers else "degraded",
            "msg_servers": len(self.servers),
            "queue": len(self.admission.queue),
            "unfinished_logins": len(self.admission.unfinished),
            "finished_per_s": round(self.admission.measured_rate(time.monotonic()), 1),
        }

    def decide(self, ticket: str, address: str = "", *, enqueue: bool = True) -> Decision:
        """One lookup through the admission gate."""
        d = self.admission.decide(list(self.servers.values()), ticket, address, enqueue=enqueue)
        self.m_lookups.inc()
        if d.code == MSG_SERVER_FULL:
            self.m_queued.inc()
        self.g_queue.set(len(self.admission.queue))
        now = time.monotonic()
        self.g_rate.set(self.admission.measured_rate(now))
        self.g_window.set(self.admission.window(now))
        return d

    # HTTP ------------------------------------------------------------------------------------------------
    async def _http_request(self, request: Request) -> Response:
        """`GET /msg_server[?ticket=]`: a lookup; `DELETE /msg_server?ticket=`: a queued client gives its
        place back. Any other request is refused and its connection closed."""
        if request.path != "/msg_server":
            return _json_error(404, "not found")
        if request.method == "DELETE":
            released = self.admission.release(request.query.get("ticket", "")[:64])
            answer = (
                {"code": 0, "msg": "released"} if released else {"code": -1, "msg": "no such queue ticket"}
            )
            return Response(200 if released else 404, json.dumps(answer).encode(), JSON)
        if request.method != "GET":
            return _json_error(405, "method not allowed")
        d = self.decide(request.query.get("ticket", "")[:64], _address(request.peer))
        doc: dict[str, Any] = {
            "code": d.code,
            "msg": "",
            "priorIP": "",
            "backupIP": "",
            "port": "",
            "msfsPrior": self._msfs(),
            "msfsBackup": self._msfs(),
            "discovery": self._discovery(),
        }
        headers: dict[str, str] = {}
        if d.server is not None:
            doc.update(priorIP=d.server.ip1, backupIP=d.server.ip2, port=str(d.server.port))
        elif d.code == NO_MSG_SERVER:
            doc["msg"] = "no msg server"
        elif not d.ticket:
            doc["msg"] = d.text
            headers["Retry-After"] = "10"
        else:
            doc.update(
                msg=d.text,
                queuePosition=d.position,
                retryAfterMs=d.retry_after_ms,
                expectedWaitMs=d.expected_wait_ms,
                queueTicket=d.ticket,
            )
            headers["Retry-After"] = str(max(1, (d.retry_after_ms + 999) // 1000))
        return Response(200, json.dumps(doc).encode(), JSON, headers)

    def _msfs(self) -> str:
        url = self.ctx.config.get("msfs")
        if url:
            return str(url)
        eps = self.ctx.discovery.endpoints("storage", "http")
        return f"http://{eps[0].host}:{eps[0].port}/" if eps else ""

    def _discovery(self) -> str:
        url = self.ctx.config.get("discovery")
        if url:
            return str(url)
        eps = self.ctx.discovery.endpoints("gateway", "http")
        return f"http://{eps[0].host}:{eps[0].port}/api/discovery" if eps else ""


__all__ = ["MSG_SERVER_FULL", "NONE", "NO_MSG_SERVER", "Admission", "Decision", "LoginService", "MsgServer"]
JSON = "application/json; charset=utf-8"


def _address(peer: str) -> str:
    """The client address of a `host:port` peer string."""
    return peer.rsplit(":", 1)[0]


def _json_error(status: int, msg: str) -> Response:
    """TeamTalk-shaped refusal `{code: -1, msg}`; the connection closes after it."""
    return Response(status, json.dumps({"code": -1, "msg": msg}).encode(), JSON, close=True)


def _refusal(status: int, reason: str) -> Response:
    """Requests the HTTP layer refuses before the handler (head too large, malformed, ...)."""
    return _json_error(status, "request too large" if status in (413, 431) else "bad request")
