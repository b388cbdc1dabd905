"""Runtime services layer (biz): the biz service's lifecycle, its internal listener and request dispatch.

msg servers forward client requests in a relay envelope whose single target is the authenticated user, so biz
never trusts a `user_id` written by a client. Each request runs as its own task: storage commits in groups, so
many concurrent sends share one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from runtime.framing import Frame
from runtime.monitor.metrics import Metrics
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
from runtime.services.biz.handlers_dir import DirectoryHandlers
from runtime.services.biz.handlers_group import GroupHandlers
from runtime.services.biz.handlers_msg import MessageHandlers, new_store_tokens
from runtime.services.biz.storage_open import open_auth, open_storage, open_tickets
from runtime.services.biz.tickets import TicketHandlers, TicketService
from runtime.services.links import FLAG_RELAY, Link, Proto, keep_alive, relay_targets, serve_links
from runtime.storage.base import Storage

Handler = Callable[[int, Any, Link], Awaitable[PbMessage | None]]


class BizService(MessageHandlers, DirectoryHandlers, GroupHandlers, TicketHandlers, Service):
    """Business logic over runtime.storage: users, sessions, messages, unread, groups, tokens, validation."""

    def __init__(self, ctx: ServiceContext) -> None:
        Service.__init__(self, ctx)
        self.metrics = Metrics(labels={"service": "biz", "instance": str(ctx.instance)})
        self.proto = Proto(ctx.registry)
        self.storage: Storage = None  # type: ignore[assignment]  # set in start()
        self.auth: Any = None
        self.tickets: TicketService | None = None
        self._server: asyncio.Server | None = None
        self._endpoints: list[Endpoint] = []
        self._links: set[Link] = set()
        self._handlers: dict[int, tuple[str, Handler]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._group_cache: dict[int, tuple[int, list[int]]] = {}
        self._store_tokens = new_store_tokens()
        # command id -> (burn, parser of its message), for the 1:1 store fast path
        self._fast_store: dict[int, tuple[bool, Callable[[bytes], PbMessage]]] = {}
        self._reply_cids: dict[type[PbMessage], int] = {}
        self._m_requests = self.metrics.counter("biz_requests_total", "requests handled")
        self._m_errors = self.metrics.counter("biz_errors_total", "requests answered with an error")
        self._m_latency = self.metrics.histogram("biz_request_seconds", "request handling time")
        self._m_links = self.metrics.gauge("biz_links", "connected msg servers")

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Open storage, bind the internal listener and publish it."""
        self.storage = await open_storage(self.ctx)
        self.auth = open_auth(self.ctx, self.storage)
        self.auth.bind_metrics(self.metrics)
        self.tickets = open_tickets(self.ctx, self.storage, self.metrics, self.proto)
        table: dict[str, Handler] = {}
        for base in (MessageHandlers, DirectoryHandlers, GroupHandlers, TicketHandlers):
            table.update({name: getattr(self, meth) for name, meth in base.HANDLES.items()})
        for name, handler in table.items():
            if self.proto.has(name):
                self._handlers[self.proto.cid(name)] = (name, handler)
        for name, burn in (("CID_MSG_DATA", False), ("CID_EXT_MSG_BURN", True)):
            if self.proto.has(name) and self._handlers.get(self.proto.cid(name), ("",))[0] == name:
                info = self.proto.info(name)
                self._fast_store[info.command_id] = (burn, info.message_class.FromString)
        port = config_port(self.ctx.config, "internal_port")
        self._server = await serve_links(
            self.ctx.internal_host, port, self._on_link, name="biz", auth=self.ctx.link_auth
        )
        self._endpoints = publish_endpoints(self.ctx, {"internal": listener_port(self._server)})
        # Heartbeats after 5 s without sending: peers close a link that stays silent for 30 s.
        self._ticker = asyncio.get_running_loop().create_task(keep_alive(lambda: self._links))

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, let running requests finish, close links and storage."""
        withdraw_endpoints(self.ctx, self._endpoints)
        await cancel_task(self._ticker)
        if self._server is not None:
            self._server.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=drain_timeout)
        for link in list(self._links):
            link.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self.auth is not None:
            self.auth.close()
        if self.storage is not None:
            await self.storage.close()

    def endpoints(self) -> list[Endpoint]:
        """The internal listener."""
        return list(self._endpoints)

    def health(self) -> dict[str, Any]:
        """Links and in-flight requests."""
        doc: dict[str, Any] = {"status": "ok", "links": len(self._links), "in_flight": len(self._tasks)}
        if self.auth is not None:
            doc["verify"] = self.auth.pool_report()
        return doc

    # dispatch --------------------------------------------------------------------------------------------
    def _on_link(self, link: Link) -> None:
        link.name = "biz<-msg"
        link.on_frame = self._on_frame
        self._links.add(link)
        self._m_links.set(len(self._links))
        link.on_lost.append(self._lost)

    def _lost(self, link: Link) -> None:
        self._links.discard(link)
        self._m_links.set(len(self._links))

    def _on_frame(self, link: Link, frame: Frame) -> None:
        command_id = frame.command_id
        entry = self._handlers.get(command_id)
        if entry is None:
            self.log.warning("biz: no handler for 0x%04x", command_id)
            link.reply(frame, command_id, b"")
            return
        fast = self._fast_store.get(command_id)
        user_id = 0
        body: bytes | memoryview = frame.body
        try:
            if frame.flag & FLAG_RELAY:
                targets, start = relay_targets(body)  # `unpack_relay` without copying the body twice
                user_id = targets[0] if targets else 0
                body = body[start:]
            msg = fast[1](bytes(body)) if fast is not None else self.proto.parse(command_id, body)
        except (DecodeError, Exception) as exc:
            self.log.warning("biz: bad body for 0x%04x: %s", command_id, exc)
            link.reply(frame, command_id, b"")
            return
        if fast is not None and self._store_fast(link, frame, user_id, msg, fast[0]):
            return
        task = asyncio.get_running_loop().create_task(self._run(link, frame, entry, user_id, msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _store_fast(self, link: Link, frame: Frame, user_id: int, msg: Any, burn: bool) -> bool:
        """The hot path: a 1:1 message stored with a commit callback (no task, no future); same reply and
        metrics as `_run`. False if the message must take the general path (a group message)."""
        done = partial(self._stored_reply, link, frame, time.perf_counter())
        if not self.store_single_nowait(user_id, msg, burn, done):
            return False
        self._m_requests.inc()
        return True

    def _stored_reply(self, link: Link, frame: Frame, started: float, reply: Any) -> None:
        self._m_latency.observe(time.perf_counter() - started)
        if reply is None:
            self._m_errors.inc()
            link.reply(frame, frame.command_id, b"")
            return
        link.reply(frame, self._reply_cid(reply, frame.command_id), reply.SerializeToString())

    def _reply_cid(self, reply: PbMessage, default: int) -> int:
        cid = self._reply_cids.get(type(reply))
        if cid is None:
            infos = self.proto.registry.for_message(type(reply))
            cid = self._reply_cids[type(reply)] = infos[0].command_id if infos else default
        return cid

    async def _run(
        self, link: Link, frame: Frame, entry: tuple[str, Handler], user_id: int, msg: Any
    ) -> None:
        name, handler = entry
        started = time.perf_counter()
        self._m_requests.inc()
        try:
            reply = await handler(user_id, msg, link)
        except Exception:
            self._m_errors.inc()
            self.log.exception("biz: %s failed", name)
            reply = None
        self._m_latency.observe(time.perf_counter() - started)
        if reply is None:
            link.reply(frame, frame.command_id, b"")
            return
        link.reply(frame, self._reply_cid(reply, frame.command_id), reply.SerializeToString())
