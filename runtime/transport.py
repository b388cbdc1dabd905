"""Runtime transport layer: a thin asyncio Protocol around the sans-IO `Connection`, with flow control."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import resource
import socket
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol, TypeVar, cast

from runtime import connection
from runtime.connection import (
    DEFAULT_TIMEOUTS,
    MAX_LINK_FRAME,
    Connection,
    Kind,
    LinkAuth,
    LinkConnection,
    ReplyCallback,
    Timeouts,
)
from runtime.errors import CallTimeout, ConnectionClosed
from runtime.framing import DEFAULT_MAX_FRAME_BYTES, Frame
from runtime.inprocess import register_listener
from runtime.registry import CommandInfo, Registry
from runtime.timers import NO_SLOT, ConnectionTimers

log = logging.getLogger("runtime.transport")

T = TypeVar("T")

# Write-buffer marks: above HIGH the peer is not reading, so we stop reading its requests (and the replies
# they would cause) until the buffer drains below LOW. MAX_BUFFER bounds what pushes from other connections
# may queue for a stalled peer; beyond it the peer is dropped as a slow consumer instead of growing memory.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_BUFFER = 8 * 1024 * 1024
TICK_SECONDS = 1.0


class FrameHandler(Protocol):
    """What a `Link` reports to: a dispatcher on servers, the client core on clients."""

    def connection_made(self, link: Link) -> None: ...

    def frames_received(self, link: Link, frames: Iterable[tuple[Frame, CommandInfo]]) -> None: ...

    def connection_lost(self, link: Link, reason: str) -> None: ...


class Link(asyncio.Protocol):
    """One TCP connection: feeds bytes to its `Connection`, hands frames to a handler, batches writes.

    Frames sent while a read is being handled go out with one `transport.write` at the end of that read;
    frames sent from elsewhere (pushes, async handlers) are flushed once per event-loop iteration.
    """

    __slots__ = (
        "_closed",
        "_flush_handle",
        "_in_batch",
        "_loop",
        "_lost_reason",
        "conn",
        "data",
        "handler",
        "kind",
        "max_buffer",
        "max_frame_bytes",
        "registry",
        "timeouts",
        "timer_slot",
        "transport",
        "write_paused",
    )

    def __init__(
        self,
        registry: Registry,
        kind: Kind,
        handler: FrameHandler,
        *,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_buffer: int = MAX_BUFFER,
    ) -> None:
        self.registry = registry
        self.kind = kind
        self.handler = handler
        self.timeouts = timeouts
        self.max_frame_bytes = max_frame_bytes
        self.max_buffer = max_buffer
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.data: dict[str, Any] | None = None  # per-connection state of stages and services, made on demand
        self._in_batch = False
        self._flush_handle: asyncio.Handle | None = None
        self.write_paused = False
        self.timer_slot = NO_SLOT  # where a server's ConnectionTimers keeps this link
        # The `closed` future is made when someone waits for it (most links are never awaited: 100+ bytes
        # saved per idle connection); `_lost_reason` answers a wait that starts after the loss.
        self._closed: asyncio.Future[str] | None = None
        self._lost_reason: str | None = None

    def __repr__(self) -> str:
        return f"<Link {self.conn!r}>"

    @property
    def closed(self) -> asyncio.Future[str]:
        """Resolves with the close reason once the connection is lost."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            if self._lost_reason is not None:
                self._closed.set_result(self._lost_reason)
        return self._closed

    @property
    def peer(self) -> str:
        """The peer address as `host:port`."""
        return self.conn.peer if self.conn is not None else "?"

    def now(self) -> float:
        """The event loop's clock (what deadlines and rate limits are measured in)."""
        return self._loop.time()

    def extras(self) -> dict[str, Any]:
        """Per-connection storage for stages and services (created on first use to keep idle links small)."""
        if self.data is None:
            self.data = {}
        return self.data

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it: no isinstance check.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peername = transport.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        self.conn = self._new_connection(peer)
        self.handler.connection_made(self)

    def _new_connection(self, peer: str) -> Connection:
        return Connection(
            self.registry,
            self.kind,
            self._loop.time(),
            peer=peer,
            timeouts=self.timeouts,
            max_frame_bytes=self.max_frame_bytes,
        )

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        assert conn is not None
        self._in_batch = True
        try:
            self.handler.frames_received(self, conn.receive_data(data, self._loop.time()))
        finally:
            self._in_batch = False
        if conn.pending_output:
            self.flush()
        if not conn.is_open:
            self._close_transport()
        elif conn.partial_since is not None and self.timer_slot != NO_SLOT:
            self._partial_frame()

    def _partial_frame(self) -> None:
        """A read left a frame incomplete on a link a server's timers track (see `_listen`)."""

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        conn = self.conn
        if conn is not None:
            if exc is not None and conn.close_reason is None:
                conn.close_reason = f"connection lost: {exc}"
            conn.connection_lost()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        reason = conn.close_reason if conn is not None and conn.close_reason else "connection lost"
        try:
            self.handler.connection_lost(self, reason)
        finally:
            self._lost_reason = reason
            if self._closed is not None and not self._closed.done():
                self._closed.set_result(reason)

    # -- sending ---------------------------------------------------------------------------------------------
    def send_frame(
        self,
        service_id: int,
        command_id: int,
        seq: int,
        body: bytes | bytearray | memoryview = b"",
        *,
        flag: int = 0,
    ) -> bool:
        """Queue a frame for sending; returns False if the connection is already closing or closed."""
        conn = self.conn
        if conn is None or not conn.is_open:
            return False
        conn.send_frame(service_id, command_id, seq, body, self._loop.time(), flag)
        if not self._in_batch and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)
        return True

    def flush(self) -> None:
        """Write all queued frames with one transport write."""
        self._flush_handle = None
        conn, transport = self.conn, self.transport
        if conn is None or transport is None or transport.is_closing():
            return
        data = conn.data_to_send()
        if data:
            transport.write(data)
            if self.write_paused and transport.get_write_buffer_size() > self.max_buffer:
                conn.close(f"slow consumer: more than {self.max_buffer} bytes unsent")
                log.warning("closing %r: peer does not read", self)
                transport.abort()

    def next_deadline(self) -> float | None:
        """When `tick` could next act (None: closed); see `Connection.next_deadline`."""
        conn = self.conn
        return conn.next_deadline() if conn is not None else None

    def tick(self, now: float) -> None:
        """Apply the connection's deadlines (called by the server's timers, or the client's timer)."""
        conn = self.conn
        if conn is None or not conn.is_open:
            return
        conn.tick(now)
        if conn.pending_output:
            self.flush()
        if conn.close_reason is not None:  # the tick closed it (is_open reads as still narrowed here)
            log.info("closing %r: %s", self, conn.close_reason)
            self._close_transport()

    def close(self, reason: str = "closed locally") -> None:
        """Close gracefully: queued frames are written first; the socket closes once the buffer drains."""
        conn = self.conn
        if conn is not None and conn.is_open:
            conn.close(reason)
        self._close_transport()

    def abort(self, reason: str = "aborted") -> None:
        """Close at once, discarding unsent data."""
        if self.conn is not None and self.conn.is_open:
            self.conn.close(reason)
        if self.transport is not None:
            self.transport.abort()

    def _close_transport(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.conn is not None:
            data = self.conn.data_to_send()
            if data:
                transport.write(data)
        transport.close()  # asyncio drains the write buffer before closing the socket


def _file_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


class ConnectionCaps:
    """Admission of accepted sockets, applied before any byte is read: at most `per_address` connections
    from one client address (IP) and at most `total` on the listener. A socket beyond either is closed at
    once (its descriptor is freed at once: one address cannot take the process's last files, and the
    process stops taking connections `reserve` files before EMFILE, so links, storage and logs keep
    theirs). Defaults follow the process's file limit (RLIMIT_NOFILE): `total` = limit - reserve, where
    reserve = max(64, limit / 16); `per_address` = a quarter of the limit."""

    __slots__ = ("_by_address", "per_address", "refused_address", "refused_total", "total")

    def __init__(self, per_address: int | None = None, total: int | None = None) -> None:
        limit = _file_limit()
        reserve = max(64, limit // 16)
        self.total = max(1, total if total is not None else limit - reserve)
        self.per_address = max(1, per_address if per_address is not None else max(16, limit // 4))
        self._by_address: dict[str, int] = {}
        self.refused_address = 0  # sockets closed because their address held `per_address` already
        self.refused_total = 0  # sockets closed because the listener held `total` already

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ConnectionCaps:
        """Caps from a service's config: `max_conns_per_address` and `max_conns` (absent: the defaults)."""
        per, total = config.get("max_conns_per_address"), config.get("max_conns")
        return cls(None if per is None else int(per), None if total is None else int(total))

    def admit(self, address: str, open_now: int) -> bool:
        """Whether a new socket from `address` may stay (`open_now`: the listener's open links); counts it."""
        if open_now >= self.total:
            self.refused_total += 1
            return False
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            self.refused_address += 1
            return False
        self._by_address[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """A socket `admit` took has closed."""
        held = self._by_address.get(address, 0) - 1
        if held > 0:
            self._by_address[address] = held
        else:
            self._by_address.pop(address, None)

    def held(self, address: str) -> int:
        """Open connections from `address`."""
        return self._by_address.get(address, 0)


ACCEPTS_PER_WAKEUP = 64  # sockets taken per readiness of a listener before other work runs
ACCEPT_BACKOFF = (0.05, 1.0)  # first and longest pause of accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM


class Acceptor:
    """The listening sockets of one `serve`, with an accept loop of our own: each socket is admitted or closed
    the moment `accept` returns it (asyncio's own loop first accepts a whole backlog and creates its
    transports later, so a burst holds descriptors past any cap); a wakeup accepts at most
    `ACCEPTS_PER_WAKEUP`; out of files (or kernel memory), accepting pauses with exponential back-off instead
    of spinning on the error."""

    def __init__(
        self,
        sockets: list[socket.socket],
        caps: ConnectionCaps,
        links: set[Link],
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.sockets = sockets
        self._caps = caps
        self._links = links
        # asyncio.Server's attribute name: tools that wrap the factory (the fuzzer's planted decoder) find it.
        self._protocol_factory = factory
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[Any]] = set()
        self._backoff = 0.0
        self._paused: asyncio.TimerHandle | None = None
        self.accept_errors = 0
        self._closed = False
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, listener: socket.socket) -> None:
        caps, links = self._caps, self._links
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                self._backoff = 0.0
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the peer gave up before we took it
                raise
            address = str(addr[0]) if isinstance(addr, tuple) else str(addr)
            if not caps.admit(address, len(links) + len(self._pending)):
                conn.close()  # refused before it costs more than this one accept
                continue
            conn.setblocking(False)
            task = self._loop.create_task(self._start(conn, address))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        self._backoff = 0.0

    async def _start(self, conn: socket.socket, address: str) -> None:
        try:
            await self._loop.connect_accepted_socket(self._protocol_factory, conn)
        except Exception as exc:  # the peer reset before the transport existed
            caps = self._caps
            caps.release(address)
            conn.close()
            log.debug("accepted socket lost at once: %r", exc)

    def _pause(self, exc: OSError) -> None:
        self.accept_errors += 1
        low, high = ACCEPT_BACKOFF
        self._backoff = min(high, max(low, self._backoff * 2))
        log.warning("accept paused %.2f s: %s", self._backoff, exc)
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(self._backoff, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            for sock in self.sockets:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

    def is_serving(self) -> bool:
        """True until `close`, as asyncio says it (runtime.inprocess links only to serving listeners)."""
        return not self._closed

    def close(self) -> None:
        """Stop accepting and close the listening sockets."""
        if self._closed:
            return
        self._closed = True
        if self._paused is not None:
            self._paused.cancel()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    async def wait_closed(self) -> None:
        """Wait for the connections being set up when accepting stopped."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=5.0)


def _bind(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address `host` resolves to (one port for all)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, type_, proto, _name, addr in dict.fromkeys(infos):
            sock = socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                addr = (addr[0], sockets[0].getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Server:
    """A listening socket, its live links, and the timers that apply connection deadlines.

    Deadlines live in one `ConnectionTimers` wheel (runtime.timers): once a second only the links whose
    deadline bucket came due are ticked, so idle connections cost nothing between their deadlines.
    """

    def __init__(
        self,
        server: Acceptor,
        links: set[Link],
        timers: ConnectionTimers[Link],
        caps: ConnectionCaps | None = None,
    ) -> None:
        self._server = server
        # what the listener makes for an accepted connection (an in-process peer connects through it too)
        self.protocol_factory: Callable[[], Link] | None = None
        self.links = links
        self.timers = timers
        self.caps = caps or ConnectionCaps()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.timers.run(loop.time())

    async def shutdown(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, close every link after writing what is queued; abort stragglers after a timeout."""
        self._server.close()
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        links = list(self.links)
        for link in links:
            link.close("server shutting down")
        if links:
            await asyncio.wait([link.closed for link in links], timeout=drain_timeout)
            for link in links:
                if not link.closed.done():
                    link.abort("drain timeout")
        await self._server.wait_closed()


def _tick_failed(link: Link, exc: Exception) -> None:
    log.error("tick failed for %r", link, exc_info=exc)


async def serve(
    host: str,
    port: int,
    handler_factory: Callable[[], FrameHandler],
    *,
    registry: Registry,
    kind: Kind = Kind.CLIENT_SESSION,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    backlog: int = 4096,
    caps: ConnectionCaps | None = None,
) -> Server:
    """Listen on host:port; each accepted connection gets a `Link` and `handler_factory()` as its handler,
    unless `caps` (default: `ConnectionCaps()`) refuses it: then it is closed before anything is read."""
    return await _listen(
        host,
        port,
        lambda tracked: tracked(
            registry, kind, handler_factory(), timeouts=timeouts, max_frame_bytes=max_frame_bytes
        ),
        Link,
        backlog,
        caps,
    )


L = TypeVar("L", bound=Link)


async def _listen(
    host: str,
    port: int,
    make: Callable[[type[L]], L],
    base: type[L],
    backlog: int,
    caps: ConnectionCaps | None = None,
) -> Server:
    """Listen; each accepted connection is `make(cls)`, `cls` being `base` with its links tracked in the
    server's set and timer wheel, unless `caps` refuses it first (see `Acceptor`)."""
    links: set[Link] = set()
    timers: ConnectionTimers[Link] = ConnectionTimers(TICK_SECONDS, _tick_failed)
    admission = caps or ConnectionCaps()

    class _Tracked(base):  # type: ignore[valid-type,misc]
        __slots__ = ("_address",)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peername = transport.get_extra_info("peername")
            self._address = str(peername[0]) if isinstance(peername, tuple) else str(peername)
            links.add(self)
            super().connection_made(transport)
            timers.track(self)

        def _partial_frame(self) -> None:
            # A frame left incomplete brings the deadline forward (slow read): move the link in the wheel
            # (deadlines that move later are re-checked when their bucket fires; see runtime.timers). Called
            # by `Link.data_received`, which checks the condition itself (no call per read).
            conn = self.conn
            if conn is not None:
                deadline = conn.next_deadline()
                if deadline is not None and timers.wheel.slot_of(deadline) < self.timer_slot:
                    timers.untrack(self)
                    timers.track(self)

        def connection_lost(self, exc: Exception | None) -> None:
            admission.release(self._address)
            links.discard(self)
            timers.untrack(self)
            super().connection_lost(exc)

    def factory() -> L:
        return make(_Tracked)

    server = Acceptor(_bind(host, port, backlog), admission, links, factory)
    listening = Server(server, links, timers, admission)
    listening.protocol_factory = factory
    return listening


# A peer whose host died (power, kernel, network) sends no FIN: the heartbeat would notice only after 30 s of
# silence. The kernel notices sooner: keepalive probes after DEAD_PEER_IDLE s idle, one every
# DEAD_PEER_INTERVAL s, and TCP_USER_TIMEOUT drops the connection once sent data (a probe or a frame) has gone
# unacknowledged for DEAD_PEER_TIMEOUT s; the link closes and its requests go to another instance.
DEAD_PEER_IDLE, DEAD_PEER_INTERVAL, DEAD_PEER_TIMEOUT = 2, 1, 5.0


def detect_dead_peer(sock: Any) -> None:
    """Make the kernel drop a connection to a dead host within about DEAD_PEER_TIMEOUT seconds (Linux;
    elsewhere whatever of it the platform has)."""
    options = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), DEAD_PEER_IDLE),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), DEAD_PEER_INTERVAL),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), int(DEAD_PEER_TIMEOUT * 1000)),
    ]
    for level, option, value in options:
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(level, option, value)


class InternalLink(Link):
    """One end of a server-to-server link over TCP: drives a `LinkConnection` (the internal-link protocol:
    requests and responses by correlation id, batched confirmations, relay envelopes, the FLAG_AUTH
    handshake; see runtime.connection) and hands the frames to dispatch to its handler, normally the
    service's `Dispatcher`, which routes them to the generated server base's methods.

    API for the services: `send(command_id, body, flag=, head=)`, `request(command_id, body, callback,
    flag=, head=)`, `await call(command_id, body, timeout, flag=)`, `reply(request, command_id, body)`,
    `confirm(request)`; `authenticated` (a future: True once the peer has proven the cluster secret, False
    if lost or refused first), `on_lost` (hooks run with the link once it is gone), `is_open`, `in_flight`,
    `tick(now)` (heartbeats and the dead-peer rule; a listener's timer wheel does it for accepted links).

    Unlike a client connection, an internal link never stops reading when its peer reads slowly (two servers
    writing to each other must not wait on each other), and has no slow-consumer limit."""

    __slots__ = ("_auth", "_dialer", "authenticated", "local_peer", "name", "on_lost")

    def __init__(
        self,
        registry: Registry,
        handler: FrameHandler,
        *,
        name: str = "link",
        auth: LinkAuth | None = None,
        dialer: bool = False,
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        max_frame_bytes: int = MAX_LINK_FRAME,
    ) -> None:
        super().__init__(
            registry,
            Kind.SERVER_LINK,
            handler,
            timeouts=timeouts,
            max_frame_bytes=max_frame_bytes,
            max_buffer=1 << 62,
        )
        self.name = name
        self._auth = auth
        self._dialer = dialer
        self.on_lost: list[Callable[[InternalLink], None]] = []
        self.authenticated: asyncio.Future[bool] = self._loop.create_future()
        # The service at the other end when it shares this process and offers direct calls (runtime.inprocess)
        self.local_peer: Any = None

    def __repr__(self) -> str:
        return f"<InternalLink {self.name} {self.peer} open={self.is_open}>"

    def _new_connection(self, peer: str) -> Connection:
        conn = LinkConnection(
            self.registry,
            self._loop.time(),
            peer=peer,
            timeouts=self.timeouts,
            max_frame_bytes=self.max_frame_bytes,
            auth=self._auth,
            dialer=self._dialer,
        )
        if conn.handshaking:
            self._loop.call_later(_handshake_timeout(), self._handshake_deadline)
        else:
            self.authenticated.set_result(True)
        return conn

    @property
    def link(self) -> LinkConnection:
        """The sans-IO link state (open links only)."""
        conn = self.conn
        assert isinstance(conn, LinkConnection)
        return conn

    @property
    def is_open(self) -> bool:
        """True while frames can be sent."""
        conn = self.conn
        return conn is not None and conn.is_open and self.transport is not None

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        conn = self.conn
        return conn.in_flight if isinstance(conn, LinkConnection) else 0

    # -- asyncio.Protocol ------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            detect_dead_peer(sock)
        self.flush()  # the HELLO

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.authenticated.done():
            conn = self.conn
            if isinstance(conn, LinkConnection) and not conn.handshaking and conn.is_open:
                self.authenticated.set_result(True)
                self.flush()  # what was queued while the peer was unproven

    def pause_writing(self) -> None:
        self.write_paused = True  # keep reading: see the class docstring

    def resume_writing(self) -> None:
        self.write_paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.authenticated.done():
            self.authenticated.set_result(False)
        try:
            super().connection_lost(exc)
        finally:
            for hook in self.on_lost:
                try:
                    hook(self)
                except Exception:
                    log.exception("%s: on_lost hook failed", self.name)

    def _handshake_deadline(self) -> None:
        conn = self.conn
        if isinstance(conn, LinkConnection) and conn.handshaking and conn.is_open:
            conn.refuse(f"no handshake within {_handshake_timeout():g} s")
            self._close_transport()

    def _close_transport(self) -> None:
        conn = self.conn
        if isinstance(conn, LinkConnection) and conn.refused and self.transport is not None:
            data = conn.data_to_send()  # a PROOF answering the peer's HELLO, if any: nothing else
            if data:
                self.transport.write(data)
            self.transport.abort()
            return
        super()._close_transport()

    # -- sending ---------------------------------------------------------------------------------------------
    def _queued(self) -> None:
        if not self._in_batch and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)

    def send(
        self, command_id: int, body: bytes | bytearray | memoryview = b"", *, flag: int = 0, head: bytes = b""
    ) -> bool:
        """Queue one frame whose body is `head + body`; False if the link is closed (the frame is dropped)."""
        conn = self.conn
        if conn is None or self.transport is None:
            return False
        assert isinstance(conn, LinkConnection)
        if not conn.send_link(command_id, body, self._loop.time(), flag=flag, head=head):
            return False
        self._queued()
        return True

    def request(
        self,
        command_id: int,
        body: bytes | bytearray | memoryview,
        callback: ReplyCallback,
        *,
        flag: int = 0,
        head: bytes = b"",
    ) -> bool:
        """Send a request (body `head + body`); `callback(reply frame)` on the answer, `callback(None)` if the
        link drops. False if the link is closed (the callback is never called)."""
        conn = self.conn
        if conn is None or self.transport is None:
            return False
        assert isinstance(conn, LinkConnection)
        if not conn.request(command_id, body, callback, self._loop.time(), flag=flag, head=head):
            return False
        self._queued()
        return True

    async def call(self, command_id: int, body: bytes, timeout: float = 10.0, *, flag: int = 0) -> Frame:
        """Send a request and wait for its reply (CallTimeout, or ConnectionClosed if the link drops)."""
        fut: asyncio.Future[Frame | None] = self._loop.create_future()

        def done(frame: Frame | None) -> None:
            if not fut.done():
                fut.set_result(frame)

        if not self.request(command_id, body, done, flag=flag):
            raise ConnectionClosed(f"{self.name} is closed")
        try:
            frame = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise CallTimeout(f"{self.name}: no reply to 0x{command_id:04x} within {timeout:g} s") from None
        if frame is None:
            raise ConnectionClosed(f"{self.name} closed before replying")
        return frame

    def reply(self, request: Frame, command_id: int, body: bytes | bytearray | memoryview = b"") -> bool:
        """Answer a `FLAG_REQUEST` frame (a no-op for frames that did not ask for a reply)."""
        conn = self.conn
        if conn is None or self.transport is None:
            return False
        assert isinstance(conn, LinkConnection)
        if not conn.reply(request, command_id, body, self._loop.time()):
            return False
        self._queued()
        return True

    def confirm(self, request: Frame) -> bool:
        """Answer a `FLAG_REQUEST` frame with an empty reply, batched with the other confirmations of this
        event-loop iteration (the requester's callback gets `CONFIRMED`). A no-op for frames that did not ask
        for a reply; False if the link is closed."""
        conn: Any = self.conn  # a LinkConnection; on every relay: no isinstance check, no cast() call
        if conn is None or self.transport is None or not conn.confirm(request):
            return False
        if not self._in_batch and self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self.flush)
        return True


def _handshake_timeout() -> float:
    """The handshake deadline in seconds (`runtime.connection.HANDSHAKE_TIMEOUT`, read when a link opens)."""
    return connection.HANDSHAKE_TIMEOUT


async def serve_links(
    host: str,
    port: int,
    handler_factory: Callable[[], FrameHandler],
    *,
    registry: Registry,
    auth: LinkAuth | None,
    name: str = "link",
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    backlog: int = 1024,
    local: Any = None,
) -> Server:
    """Listen for internal links (`InternalLink`), each handled by `handler_factory()`. With `auth` (a cluster
    always passes one) a peer must prove it holds the cluster secret first. The server's timer wheel applies
    the handshake deadline, heartbeats and the dead-peer rule. `local`: the service behind the listener, which
    roles of the same shard may call directly (runtime.inprocess)."""
    server = await _listen(
        host,
        port,
        lambda tracked: tracked(registry, handler_factory(), name=name, auth=auth, timeouts=timeouts),
        InternalLink,
        backlog,
    )
    if server.protocol_factory is not None:  # a role of this shard dials it in memory (runtime.inprocess)
        secret = auth.secret if auth is not None else None
        register_listener(server, host, server.protocol_factory, secret, local)
    return server


async def connect(
    host: str,
    port: int,
    handler: FrameHandler,
    *,
    registry: Registry,
    kind: Kind = Kind.CLIENT,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> Link:
    """Open a TCP connection and return its `Link` (the handler has seen `connection_made` by then)."""
    loop = asyncio.get_running_loop()
    _transport, link = await loop.create_connection(
        lambda: Link(registry, kind, handler, timeouts=timeouts, max_frame_bytes=max_frame_bytes), host, port
    )
    return link


def install_event_loop_policy() -> bool:
    """Use uvloop's event loop when it is installed; returns True if it is."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


# Young-generation threshold of a server process. Python's default (700) runs a collection every few hundred
# allocations, and a message allocates dozens of objects; measured on the cluster bench (5,000 msgs/s), gen 1
# and 2 passes, which also walk the long-lived connection state, took about a third of a msg server's CPU and
# stalled it for 100+ ms at a time. Reference counting frees almost everything here; the cyclic GC only has
# to catch cycles, and with these thresholds it runs about every 50,000 allocations (a few ms per pass).
SERVER_GC_THRESHOLD = (50_000, 20, 100)


def tune_gc_for_server() -> None:
    """GC settings for a long-running server process (see `SERVER_GC_THRESHOLD`). A server should also call
    `gc.freeze()` once it has started, so the startup heap (modules, descriptors) is never traversed again."""
    gc.set_threshold(*SERVER_GC_THRESHOLD)


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True, server_gc: bool = False) -> T:
    """Run a coroutine on uvloop when available, else on asyncio's default loop (`server_gc`: see
    `tune_gc_for_server`)."""
    if server_gc:
        tune_gc_for_server()
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
