"""Runtime services layer (biz): the biz service's lifecycle, its internal listener and its handlers.

BizService is its own handler object: bound to the stack's generated `BizServiceBase` (runtime.services.base.
bound_to_base), its `on_cid_*` methods (the handler mixins) are routed by a `Dispatcher` from the internal
links of msg servers and gateways. They forward client requests in a relay envelope whose single target is
the authenticated user, which handlers read as `ctx.user_id`, so biz never trusts a `user_id` written by a
client. Requests that suspend run as tasks: storage commits in groups, so many concurrent sends share one
transaction; a 1:1 message is stored and answered from the storage's commit callback (no task). A msg
server sharing biz's process (the sharded layout) calls `store_direct` instead of sending a frame.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.dispatch import Context, Dispatcher
from runtime.monitor.metrics import Metrics
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
from runtime.services.biz.handlers_dir import DirectoryHandlers
from runtime.services.biz.handlers_group import GroupHandlers
from runtime.services.biz.handlers_msg import MessageHandlers, new_store_tokens
from runtime.services.biz.storage_open import open_auth, open_storage, open_tickets
from runtime.services.biz.tickets import TicketHandlers, TicketService
from runtime.services.links import Link, Proto
from runtime.services.protocol import enums_of
from runtime.storage.base import Storage
from runtime.transport import Server, serve_links


class BizService(MessageHandlers, DirectoryHandlers, GroupHandlers, TicketHandlers, Service):
    """Business logic over runtime.storage: users, sessions, messages, unread, groups, tokens, validation."""

    def __new__(cls, ctx: ServiceContext) -> BizService:
        return object.__new__(bound_to_base(cls, ctx, "BizServiceBase"))

    def __init__(self, ctx: ServiceContext) -> None:
        Service.__init__(self, ctx)
        self.metrics = Metrics(labels={"service": "biz", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.storage: Storage = None  # type: ignore[assignment]  # set in start()
        self.auth: Any = None
        self.tickets: TicketService | None = None
        if not getattr(self, "__mapping__", None):
            self.__mapping__ = hosted_mapping(self, ctx, "biz")
        self.dispatcher = Dispatcher(ctx.registry, self)
        self._server: Server | None = None
        self._endpoints: list[Endpoint] = []
        self._links: set[Link] = set()
        self._store_tasks: set[asyncio.Task[None]] = set()
        self._group_cache: dict[int, tuple[int, list[int]]] = {}
        self._store_tokens = new_store_tokens()
        self._group_bit = int(enums_of(ctx.registry).MsgTypeBits.GROUP)
        self._m_requests = self.metrics.counter("biz_requests_total", "requests handled")
        self._m_errors = self.metrics.counter("biz_errors_total", "requests answered with an error")
        self._m_direct_stores = self.metrics.counter(
            "biz_direct_stores_total", "messages stored by direct calls of this shard's msg server"
        )
        self._m_latency = self.metrics.histogram("biz_request_seconds", "request handling time")
        self._m_links = self.metrics.gauge("biz_links", "connected msg servers")

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, bind the internal listener and publish it."""
        self.storage = await open_storage(self.ctx)
        self.auth = open_auth(self.ctx, self.storage)
        self.auth.bind_metrics(self.metrics)
        self.tickets = open_tickets(self.ctx, self.storage, self.metrics, self.proto)
        port = config_port(self.ctx.config, "internal_port")
        # Heartbeats after 5 s without sending (the listener's timers): peers close a link silent for 30 s.
        self._server = await serve_links(
            self.ctx.internal_host,
            port,
            self.dispatcher.handler_factory,
            registry=self.ctx.registry,
            auth=self.ctx.link_auth,
            name="biz<-msg",
            local=self,  # msg servers of this shard store by direct calls (DirectStore, runtime.inprocess)
        )
        self._endpoints = publish_endpoints(self.ctx, {"internal": self._server.port})

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, let running requests finish, close links and storage."""
        withdraw_endpoints(self.ctx, self._endpoints)
        await self.dispatcher.drain(drain_timeout)
        if self._store_tasks:
            await asyncio.wait(list(self._store_tasks), timeout=drain_timeout)
        if self._server is not None:
            await self._server.shutdown(1.0)
        if self.auth is not None:
            self.auth.close()
        if self.storage is not None:
            await self.storage.close()

    def endpoints(self) -> list[Endpoint]:
        """The internal listener."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Links and in-flight requests."""
        in_flight = len(self.dispatcher._tasks) + len(self._store_tasks)
        doc: dict[str, Any] = {"status": "ok", "links": len(self._links), "in_flight": in_flight}
        if self.auth is not None:
            doc["verify"] = self.auth.pool_report()
        return doc

    # dispatcher hooks ------------------------------------------------------------------------------------
    def on_connect(self, link: Link) -> None:
        """A msg server or gateway connected."""
        self._links.add(link)
        self._m_links.set(len(self._links))

    def on_disconnect(self, link: Link, reason: str) -> None:
        """A msg server or gateway went away."""
        self._links.discard(link)
        self._m_links.set(len(self._links))

    def observe_internal(self, command: str, seconds: float, failed: bool) -> None:
        """One request answered (runtime.link_dispatch): count it and its handling time."""
        self._m_requests.inc()
        self._m_latency.observe(seconds)
        if failed:
            self._m_errors.inc()

    async def on_cid_other_heartbeat(self, ctx: Context, msg: Any) -> None:
        """Heartbeats are answered by the link layer and never dispatched."""
        return None
