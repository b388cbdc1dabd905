"""Runtime client layer: `ClientCore`, the protocol-agnostic async client that generated clients wrap.

It connects directly or through the login service (`GET /msg_server`), matches replies to requests by seq,
delivers server pushes through `pushes()`, sends heartbeats, and reconnects with exponential backoff. On every
connection it first offers the IM.Ext secure session (`CID_EXT_HANDSHAKE_REQ`, when the protocol has it):
`encryption="prefer"` (the default) seals `session_aead` commands when the server agrees and stays in clear
when it does not answer; `"require"` refuses to go on in clear (`PlaintextRefused`); `"off"` never offers it.
A client that gives up waiting in the login queue releases its place (`DELETE /msg_server?ticket=`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, cast
from urllib.parse import quote, urlsplit

from google.protobuf.message import Message

from runtime.connection import DEFAULT_TIMEOUTS, Kind, Timeouts
from runtime.errors import (
    CallTimeout,
    ConnectionClosed,
    LoginServiceError,
    PlaintextRefused,
    RuntimeProtocolError,
)
from runtime.framing import DEFAULT_MAX_FRAME_BYTES, Frame
from runtime.httpkit import MalformedRequest, fetch
from runtime.registry import CommandInfo, Registry, UnknownCommand
from runtime.services.links import ResultCode
from runtime.stages import CommandStages, build_stages
from runtime.stages.crypto import KeyExchange, SessionCipher, SessionKeys, derive_session_keys
from runtime.stages.unpack import ReplayWindow
from runtime.transport import TICK_SECONDS, Link, connect

log = logging.getLogger("runtime.client")

MAX_LOGIN_REPLY = 64 * 1024
Resync = Callable[["ClientCore"], Awaitable[None]]


QueueProgress = Callable[[int, float], None]  # (1-based queue position, expected wait in seconds)
QUEUED = ResultCode.MSG_SERVER_FULL  # the login service queued us (runtime.services.admission)
ENCRYPTION_MODES = ("prefer", "require", "off")
HANDSHAKE = "CID_EXT_HANDSHAKE_REQ"


def aead_suites(registry: Registry) -> dict[int, str]:
    """The spec's IM.Ext.AeadSuite values -> runtime.stages.crypto algorithms, in the order the client offers
    them (empty when the stack has no such enum)."""
    suite = getattr(registry.enums, "AeadSuite", None) if registry.enums is not None else None
    if suite is None:
        return {}
    return {
        int(suite.AEAD_AES_256_GCM): "aes-256-gcm",
        int(suite.AEAD_CHACHA20_POLY1305): "chacha20-poly1305",
    }


async def resolve_msg_server(
    url: str,
    timeout: float = 10.0,
    *,
    on_queue: QueueProgress | None = None,
    queue_timeout: float | None = None,
) -> tuple[str, int]:
    """Ask a login service which msg server to use: `GET <url>` -> JSON `{code, msg, priorIP, port, ...}`.

    When the service queues the client (code 2 with a `queueTicket`), wait `retryAfterMs` and ask again with
    the ticket, which keeps the place in the queue, until a server is assigned; `on_queue(position, wait)` is
    told each place. `queue_timeout` (seconds, None: no limit) bounds the whole wait. A wait that ends
    without a server (timed out, cancelled, failed) releases its place, so nobody queues behind it."""
    parts = urlsplit(url if "//" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise LoginServiceError(f"login service URL must be http://host:port/path, got {url!r}")
    path = parts.path or "/msg_server"
    host, port = parts.hostname, parts.port or 80
    loop = asyncio.get_running_loop()
    deadline = None if queue_timeout is None else loop.time() + queue_timeout
    ticket = ""
    try:
        while True:
            reply = await _lookup(host, port, path + (f"?ticket={quote(ticket)}" if ticket else ""), timeout)
            code = int(reply.get("code", -1))
            if code == 0:
                ticket = ""  # the place is used up by the assignment
                try:
                    return str(reply["priorIP"]), int(reply["port"])  # TeamTalk sends the port as a string
                except (KeyError, ValueError, TypeError):
                    raise LoginServiceError("login service reply lacks priorIP/port") from None
            queue_ticket = reply.get("queueTicket")
            if code != QUEUED or not isinstance(queue_ticket, str) or not queue_ticket:
                raise LoginServiceError(f"login service refused: {reply.get('msg', '')} (code {code})", code)
            ticket = queue_ticket[:64]
            try:
                wait = min(max(int(reply.get("retryAfterMs", 1000)), 50), 30_000) / 1000
                position = int(reply.get("queuePosition", 0))
            except (ValueError, TypeError):
                raise LoginServiceError("login service queue answer is malformed") from None
            if on_queue is not None:
                on_queue(position, float(reply.get("expectedWaitMs", wait * 1000)) / 1000)
            if deadline is not None and loop.time() + wait > deadline:
                raise LoginServiceError(f"still queued (position {position}) after {queue_timeout:g} s", code)
            await asyncio.sleep(wait)
    except BaseException:
        if ticket:
            release = loop.create_task(release_queue_ticket(host, port, path, ticket, min(timeout, 5.0)))
            _RELEASES.add(release)
            release.add_done_callback(_RELEASES.discard)
            with contextlib.suppress(BaseException):
                await asyncio.shield(release)
        raise


_RELEASES: set[asyncio.Task[bool]] = set()  # releases still running when their waiter was cancelled


async def release_queue_ticket(host: str, port: int, path: str, ticket: str, timeout: float = 5.0) -> bool:
    """Give a login-queue place back (`DELETE <path>?ticket=`); True if the service knew the ticket."""
    try:
        response = await fetch(
            host,
            port,
            "DELETE",
            f"{path}?ticket={quote(ticket)}",
            headers={"Accept": "application/json"},
            timeout=timeout,
            max_response=MAX_LOGIN_REPLY,
        )
    except (OSError, TimeoutError, MalformedRequest):
        return False
    return response.status == 200


async def _lookup(host: str, port: int, target: str, timeout: float) -> dict[str, Any]:
    try:
        response = await fetch(
            host,
            port,
            "GET",
            target,
            headers={"Accept": "application/json"},
            timeout=timeout,
            max_response=MAX_LOGIN_REPLY,
        )
    except (OSError, TimeoutError) as exc:
        raise LoginServiceError(f"login service {host}:{port} unreachable: {exc}") from None
    except MalformedRequest as exc:
        raise LoginServiceError(f"login service {host}:{port} answered badly: {exc}") from None
    if response.status != 200:
        raise LoginServiceError(f"login service answered HTTP {response.status}")
    try:
        reply = json.loads(response.body)
        int(reply.get("code", -1))
    except (ValueError, AttributeError, TypeError):
        raise LoginServiceError("login service reply is not the expected JSON") from None
    return cast(dict[str, Any], reply)


class _Pending:
    __slots__ = ("future", "reply")

    def __init__(self, future: asyncio.Future[Message], reply: CommandInfo) -> None:
        self.future = future
        self.reply = reply


class ClientCore:
    """One client connection with request/response matching, pushes, heartbeats and reconnect."""

    def __init__(
        self,
        registry: Registry,
        *,
        host: str | None = None,
        port: int | None = None,
        login_url: str | None = None,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        default_timeout: float = 10.0,
        reconnect: bool = True,
        backoff_initial: float = 1.0,
        backoff_max: float = 64.0,
        on_resync: Resync | None = None,
        max_pushes: int = 100_000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        legacy_key: bytes | None = None,
        on_queue: QueueProgress | None = None,
        queue_timeout: float | None = None,
        encryption: str = "prefer",
        handshake_timeout: float = 3.0,
    ) -> None:
        """`on_queue(position, expected_wait)` is told each place while the login service queues this
        client; `queue_timeout` bounds that wait (None: wait as long as it takes). `encryption`: "prefer"
        (negotiate the secure session when the server answers the handshake within `handshake_timeout`),
        "require" (close and raise PlaintextRefused when it does not) or "off"."""
        if login_url is None and (host is None or port is None):
            raise ValueError("give either login_url or host and port")
        if encryption not in ENCRYPTION_MODES:
            raise ValueError(f"encryption must be one of {', '.join(ENCRYPTION_MODES)}, not {encryption!r}")
        self.encryption, self.handshake_timeout = encryption, handshake_timeout
        self.encrypted = False  # whether the current connection completed the handshake
        self.registry = registry
        self.host, self.port, self.login_url = host, port, login_url
        self.timeouts = timeouts
        self.default_timeout = default_timeout
        self.reconnect = reconnect
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.on_resync = on_resync
        self.max_frame_bytes = max_frame_bytes
        self.on_queue, self.queue_timeout = on_queue, queue_timeout
        self._stages = build_stages(registry, legacy_key=legacy_key)
        self._link: Link | None = None
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._pushes: asyncio.Queue[tuple[CommandInfo, Message] | None] = asyncio.Queue(max_pushes)
        self._order_locks: dict[int, asyncio.Lock] = {}
        self._closing = False
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.reconnects = 0
        # Called with every server push before it is queued for `pushes()` (e.g. a login helper noticing
        # that the session was kicked, so it does not reconnect into a kick loop).
        self.push_observers: list[Callable[[CommandInfo, Message], None]] = []
        # While True, a lost connection neither reconnects nor ends `pushes()`: the owner calls connect().
        self.hold_reconnect = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the connection (resolving the msg server through the login service if configured)."""
        if self.login_url is not None:
            self.host, self.port = await resolve_msg_server(
                self.login_url, self.default_timeout, on_queue=self.on_queue, queue_timeout=self.queue_timeout
            )
        assert self.host is not None and self.port is not None
        self._link = await connect(
            self.host,
            self.port,
            self,
            registry=self.registry,
            kind=Kind.CLIENT,
            timeouts=self.timeouts,
            max_frame_bytes=self.max_frame_bytes,
        )
        self.encrypted = False
        self._connected.set()
        if not any(t.get_name() == "ticker" for t in self._tasks):
            self._spawn(self._ticker(), "ticker")
        if self.encryption != "off":
            await self._negotiate()

    async def _negotiate(self) -> None:
        """Offer the secure session on the fresh connection (before anything else is sent on it)."""
        try:
            info = self.registry.by_name(HANDSHAKE)
        except UnknownCommand:
            info = None
        why = "the protocol has no secure-session handshake"
        suites = aead_suites(self.registry)
        if info is not None and suites:
            kx, nonce = KeyExchange(), os.urandom(16)
            req: Any = info.message_class()
            req.client_public_key, req.client_nonce = kx.public_bytes, nonce
            req.suites.extend(suites)
            rsp: Any = None
            try:
                rsp = await self.call(HANDSHAKE, req, timeout=self.handshake_timeout)
            except CallTimeout:
                why = f"the server did not answer the handshake within {self.handshake_timeout:g} s"
            if rsp is not None and rsp.result_code == 0 and rsp.suite in suites:
                try:
                    keys = derive_session_keys(
                        kx, rsp.server_public_key, nonce, rsp.server_nonce, initiator=True
                    )
                except (ValueError, RuntimeProtocolError) as exc:
                    why = f"the server's handshake is unusable: {exc}"
                else:
                    self.enable_encryption(keys, suites[rsp.suite])
                    self.encrypted = True
                    return
            elif rsp is not None:
                why = f"the server refused the handshake (result {rsp.result_code})"
        if self.encryption == "require":
            link = self._link
            self._closing = True
            if link is not None:
                link.close("plaintext refused")
            self._fail_pending(ConnectionClosed("plaintext refused"))
            raise PlaintextRefused(f"no encrypted session: {why} (encryption=require)")
        log.info("continuing in clear: %s", why)

    async def close(self) -> None:
        """Close for good: no reconnect; pending calls fail with `ConnectionClosed`; `pushes()` ends."""
        self._closing = True
        link = self._link
        if link is not None:
            link.close("client closed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(link.closed), 5.0)
        for task in list(self._tasks):
            task.cancel()
        self._fail_pending(ConnectionClosed("client closed"))
        with contextlib.suppress(asyncio.QueueFull):
            self._pushes.put_nowait(None)

    async def __aenter__(self) -> ClientCore:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        """True while the connection is open."""
        link = self._link
        return link is not None and link.conn is not None and link.conn.is_open

    @property
    def link(self) -> Link | None:
        """The current connection (changes on reconnect)."""
        return self._link

    def enable_encryption(self, keys: SessionKeys, algorithm: str = "aes-256-gcm") -> None:
        """Install the session keys agreed at login; `session_aead` commands are sealed from now on."""
        if self._link is None:
            raise ConnectionClosed("not connected")
        data = self._link.extras()
        data["cipher"] = SessionCipher(keys, algorithm)
        data["replay"] = ReplayWindow()

    # -- sending ---------------------------------------------------------------------------------------------
    async def call(self, command: str, message: Message, *, timeout: float | None = None) -> Message | None:
        """Send `command`; if it has a reply, wait for the reply matched by seq and return it.

        Commands whose transport policy says `ordering: send_wait` go one at a time (n+1 after n's reply);
        with `retransmit: until_ack` a timed-out request is sent again with the same seq, up to
        `max_attempts` (the server's dedup window answers a duplicate without processing it twice).
        """
        info = self.registry.by_name(command)
        stages = self._stages[info.command_id]
        if info.reply is None:
            self._send(info, stages, message, 0)
            return None
        policy = stages.transport
        if policy.send_wait:
            lock = self._order_locks.setdefault(info.command_id, asyncio.Lock())
            async with lock:
                return await self._request(info, stages, message, timeout)
        return await self._request(info, stages, message, timeout)

    async def send(self, command: str, message: Message) -> None:
        """Send `command` without waiting for any reply."""
        info = self.registry.by_name(command)
        self._send(info, self._stages[info.command_id], message, 0)

    async def _request(
        self, info: CommandInfo, stages: CommandStages, message: Message, timeout: float | None
    ) -> Message:
        policy = stages.transport
        if timeout is None:
            timeout = policy.timeout if policy.retransmit else self.default_timeout
        wait = timeout
        attempts = policy.max_attempts if policy.retransmit else 1
        reply = self.registry.by_name(info.reply or "")
        seq = self._next_seq()
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[seq] = _Pending(future, reply)
        try:
            for attempt in range(1, attempts + 1):
                self._send(info, stages, message, seq)
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                except TimeoutError:
                    if attempt < attempts:
                        log.info("%s seq %d: no reply in %g s, retransmitting", info.name, seq, wait)
            raise CallTimeout(f"{info.name}: no {reply.name} within {wait:g} s ({attempts} attempt(s))")
        finally:
            self._pending.pop(seq, None)
            if not future.done():
                future.cancel()

    def _send(self, info: CommandInfo, stages: CommandStages, message: Message, seq: int) -> None:
        link = self._link
        if link is None or link.conn is None or not link.conn.is_open:
            raise ConnectionClosed("not connected")
        if stages.pack.trivial:
            link.send_frame(info.service_id, info.command_id, seq, message.SerializeToString())
            return
        cipher = link.data.get("cipher") if link.data else None
        flag, body = stages.pack.pack(message, info.service_id, info.command_id, seq, cipher)
        link.send_frame(info.service_id, info.command_id, seq, body, flag=flag)

    def _next_seq(self) -> int:
        for _ in range(0x10000):
            self._seq = self._seq % 0xFFFF + 1  # 1..65535; 0 marks server pushes
            if self._seq not in self._pending:
                return self._seq
        raise RuntimeError("65535 requests outstanding")

    # -- receiving -------------------------------------------------------------------------------------------
    async def pushes(self) -> AsyncIterator[tuple[CommandInfo, Message]]:
        """Server-initiated frames as (command, message), until the client is closed."""
        while True:
            item = await self._pushes.get()
            if item is None:
                return
            yield item

    def connection_made(self, link: Link) -> None:
        log.debug("connected %r", link)

    def frames_received(self, link: Link, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
        for frame, info in frames:
            pending = self._pending.get(frame.seq) if frame.seq else None
            if pending is not None and pending.reply.command_id == frame.command_id:
                info = pending.reply
            try:
                msg = self._unpack(link, frame, info)
            except RuntimeProtocolError as exc:
                log.warning("%r: dropping %s (seq %d): %s", link, info.name, frame.seq, exc)
                if pending is not None and not pending.future.done():
                    pending.future.set_exception(exc)
                continue
            if pending is not None and pending.reply is info:
                if not pending.future.done():
                    pending.future.set_result(msg)
                continue
            for observe in self.push_observers:
                observe(info, msg)
            try:
                self._pushes.put_nowait((info, msg))
            except asyncio.QueueFull:
                log.warning("push queue full: dropping %s", info.name)

    def _unpack(self, link: Link, frame: Frame, info: CommandInfo) -> Message:
        data = link.data
        stage = self._stages[info.command_id].unpack
        return stage.unpack(
            frame,
            info.message_class,
            data.get("cipher") if data else None,
            data.get("replay") if data else None,
        )

    def connection_lost(self, link: Link, reason: str) -> None:
        if link is not self._link:
            return
        self._connected.clear()
        self._fail_pending(ConnectionClosed(f"connection lost: {reason}"))
        if self.hold_reconnect:
            return  # the owner reconnects itself (e.g. a login retrying while the server is busy)
        if not self._closing and self.reconnect:
            log.info("connection lost (%s); reconnecting", reason)
            self._spawn(self._reconnect(), "reconnect")
        elif not self._closing:
            with contextlib.suppress(asyncio.QueueFull):
                self._pushes.put_nowait(None)

    def _fail_pending(self, exc: Exception) -> None:
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)

    # -- timers and reconnect --------------------------------------------------------------------------------
    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (e.g. after a reconnect)."""
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(TICK_SECONDS)
            link = self._link
            if link is not None:
                link.tick(loop.time())

    async def _reconnect(self) -> None:
        delay = self.backoff_initial
        while not self._closing:
            # Jitter spreads a crowd of clients that lost the same server over the backoff interval.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await self.connect()
            except (OSError, LoginServiceError) as exc:
                delay = min(delay * 2, self.backoff_max)
                log.info("reconnect failed (%s); next try in up to %g s", exc, delay)
                continue
            self.reconnects += 1
            if self.on_resync is not None:
                try:
                    await self.on_resync(self)
                except Exception:
                    log.exception("resync after reconnect failed")
            return

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
