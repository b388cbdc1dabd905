"""Runtime services layer: what the services share about internal links: dialing and message access.

The link itself is `runtime.transport.InternalLink` (named `Link` here), driving the sans-IO internal-link
protocol of `runtime.connection.LinkConnection`: correlation ids, request/response flags, batched
confirmations, relay envelopes and the FLAG_AUTH handshake (the flags and envelope helpers are re-exported
here). A listener is `runtime.transport.serve_links`; its frames go to the service's `Dispatcher`, which
routes them to the generated server base's methods (runtime.link_dispatch). `Dialer` keeps one outgoing link
to a peer alive: connect, prove the secret, run until lost, back off, re-resolve the peer's address
(ports change across restarts), reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from google.protobuf.message import Message as PbMessage

from runtime.connection import (
    AUTH_HELLO,
    AUTH_PROOF,
    BROADCAST,
    CONFIRMED,
    FLAG_AUTH,
    FLAG_BATCH,
    FLAG_RELAY,
    FLAG_REQUEST,
    FLAG_RESPONSE,
    HEARTBEAT_COMMAND_ID,
    MAX_LINK_FRAME,
    LinkAuth,
    ReplyCallback,
    pack_relay,
    relay_head,
    relay_targets,
    unpack_relay,
)
from runtime.framing import Frame
from runtime.inprocess import SHARD, connect_in_process, local_listener
from runtime.registry import CommandInfo, Registry, UnknownCommand
from runtime.services.contracts import ResultCode  # re-exported: services import it from here too
from runtime.transport import DEAD_PEER_TIMEOUT, FrameHandler, InternalLink, detect_dead_peer
from runtime.transport import Link as TransportLink

log = logging.getLogger("ttgen.links")

Link = InternalLink
HEARTBEAT_CID = HEARTBEAT_COMMAND_ID


class NoRequests:
    """The handler of a dialed link whose peer only answers (biz, login, file): anything the peer sends
    unasked is logged and, if it asked for an answer, answered empty."""

    def connection_made(self, link: TransportLink) -> None:
        pass

    def frames_received(self, link: TransportLink, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
        internal = cast(InternalLink, link)
        for frame, info in frames:
            log.warning("%s: unexpected %s; answered empty", internal.name, info.name)
            internal.confirm(frame)

    def connection_lost(self, link: TransportLink, reason: str) -> None:
        pass


class Dialer:
    """Keeps one outgoing link to a peer alive: connect, run until lost, back off, re-resolve, reconnect.
    Frames the peer sends go to `handler` (the service's Dispatcher, or `NoRequests`)."""

    def __init__(
        self,
        name: str,
        resolve: Callable[[], tuple[str, int] | None],
        handler: FrameHandler,
        *,
        registry: Registry,
        on_up: Callable[[InternalLink], Awaitable[None] | None] | None = None,
        on_down: Callable[[InternalLink], None] | None = None,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        auth: LinkAuth | None,
    ) -> None:
        self.name = name
        self.auth = auth
        self.resolve = resolve
        self.handler = handler
        self.registry = registry
        self.on_up = on_up
        self.on_down = on_down
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self.link: InternalLink | None = None
        self.up = asyncio.Event()
        self.connected_at = 0.0  # monotonic time of the current connection (0 when down)
        self.gave_up = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.shard = SHARD.get()  # a peer listening in the same shard of this process is linked in-process

    def start(self) -> None:
        """Begin connecting in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"dial-{self.name}")

    def _new_link(self) -> InternalLink:
        return InternalLink(self.registry, self.handler, name=self.name, auth=self.auth, dialer=True)

    async def _run(self) -> None:
        backoff = self.min_backoff
        loop = asyncio.get_running_loop()
        while not self._stopping:
            addr = self.resolve()
            link: InternalLink | None = None
            secret = self.auth.secret if self.auth is not None else None
            local = local_listener(addr, self.shard, secret) if addr is not None else None
            if local is not None:  # a role of this process's shard (runtime.cluster.layout): in memory
                link = self._new_link()
                connect_in_process(local, link, self.name)
                if not await link.authenticated:
                    link = None
            elif addr is not None:
                try:
                    _, link = await loop.create_connection(self._new_link, *addr)
                except OSError:
                    link = None
                if link is not None and not await link.authenticated:
                    link = None  # refused (the peer's secret differs?) or lost during the handshake
            if link is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = self.min_backoff
            self.link = link
            self.connected_at = time.monotonic()
            if self.on_up is not None:
                try:
                    res = self.on_up(link)
                    if res is not None:
                        await res
                except Exception:
                    log.exception("%s: on_up failed", self.name)
            self.up.set()
            await link.closed
            self.up.clear()
            self.link = None
            self.connected_at = 0.0
            if self.on_down is not None:
                try:
                    self.on_down(link)
                except Exception:
                    log.exception("%s: on_down failed", self.name)
            if not self._stopping:
                await asyncio.sleep(self.min_backoff)

    async def wait_up(self, timeout: float) -> bool:
        """Wait until connected; False on timeout."""
        try:
            await asyncio.wait_for(self.up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop reconnecting and close the link."""
        self._stopping = True
        if self.link is not None:
            self.link.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Proto:
    """Message classes and command ids by command name, resolved through the registry (never by import)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._cache: dict[str | int, CommandInfo] = {}
        self._enums: dict[tuple[str, str], dict[str, int]] = {}

    def info(self, name: str | int) -> CommandInfo:
        """The registry entry of a command name, or of a command id (the registry's `CommandId`)."""
        info = self._cache.get(name)
        if info is None:
            found = self.registry.by_id(name) if isinstance(name, int) else self.registry.by_name(name)
            info = self._cache[name] = found
        return info

    def has(self, name: str) -> bool:
        """Whether the protocol declares the command (extension commands may be absent)."""
        try:
            self.info(name)
        except UnknownCommand:
            return False
        return True

    def cid(self, name: str | int) -> int:
        """The command id of a command name."""
        return self.info(name).command_id

    def new(self, name: str | int, **fields: Any) -> PbMessage:
        """A new message of the command's type with the given fields set."""
        return self.info(name).message_class(**fields)

    def parse(self, command_id: int, body: bytes | memoryview) -> PbMessage:
        """Decode a body of that command (DecodeError on bad bytes)."""
        return self.registry.by_id(command_id).message_class.FromString(bytes(body))

    def enum(self, name: str, field: str) -> dict[str, int]:
        """The generated enum of a command's message field, value name -> number (the spec's values, not
        numbers typed again by hand); KeyError if the field is not an enum. Cached: do not modify."""
        cached = self._enums.get((name, field))
        if cached is None:
            desc = self.info(name).message_class.DESCRIPTOR.fields_by_name[field].enum_type
            if desc is None:
                raise KeyError(f"{name}.{field} is not an enum field")
            cached = self._enums[(name, field)] = {v.name: v.number for v in desc.values}
        return cached


__all__ = [
    "AUTH_HELLO",
    "AUTH_PROOF",
    "BROADCAST",
    "CONFIRMED",
    "DEAD_PEER_TIMEOUT",
    "FLAG_AUTH",
    "FLAG_BATCH",
    "FLAG_RELAY",
    "FLAG_REQUEST",
    "FLAG_RESPONSE",
    "HEARTBEAT_CID",
    "MAX_LINK_FRAME",
    "Dialer",
    "Link",
    "LinkAuth",
    "NoRequests",
    "Proto",
    "ReplyCallback",
    "ResultCode",
    "detect_dead_peer",
    "pack_relay",
    "relay_head",
    "relay_targets",
    "unpack_relay",
]
