"""Runtime services layer: internal links between service roles that share a process (the sharded layout).

A deployment may group roles into one process (runtime.cluster.layout): msg + biz + router of one shard. A
link between two of them is then a pair of `LocalLink`s instead of a TCP connection: a frame is handed to the
peer as a `Frame` object (no header packing, no frame decoding, no socket, no system call), and every frame
queued during one event-loop iteration reaches the peer in one call at the end of it, as corked TCP writes
would. Requests, replies, batched confirmations, relays and link loss keep the semantics of `Link`, so the
services cannot tell the two apart and every delivery guarantee holds in both layouts.

Who is in-process: `serve_links` records each internal listener of this process with the shard of the
instance that opened it (the `SHARD` context variable, set by the supervisor while an instance starts; tasks
the instance creates inherit it), and a `Dialer` whose peer is such a listener *of its own shard* pairs local
links instead of connecting. Anything else (another shard, another process, a listener that stopped) goes
over TCP as before. Without a shard (the split layout) nothing changes.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.framing import Frame
from runtime.services.links import CONFIRMED, FLAG_REQUEST, FLAG_RESPONSE, Link, LinkAuth

log = logging.getLogger("ttgen.links")

# The shard of the service instance running (or being started) in this context: None outside any shard.
SHARD: contextvars.ContextVar[str | None] = contextvars.ContextVar("ttgen_shard", default=None)


@dataclass
class _Listener:
    shard: str
    name: str
    on_link: Callable[[Link], None]
    auth: LinkAuth | None
    server: asyncio.AbstractServer


# (host, port) of an internal listener of this process -> who listens there
_LISTENERS: dict[tuple[str, int], _Listener] = {}


def register_listener(
    server: asyncio.AbstractServer,
    host: str,
    name: str,
    on_link: Callable[[Link], None],
    auth: LinkAuth | None,
) -> None:
    """Record an internal listener opened in the current shard (a no-op outside any shard)."""
    shard = SHARD.get()
    if shard is None:
        return
    for key in [k for k, v in _LISTENERS.items() if not v.server.is_serving()]:
        del _LISTENERS[key]  # listeners that stopped since
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        address = sock.getsockname()
        entry = _Listener(shard, name, on_link, auth, server)
        _LISTENERS[(str(address[0]), int(address[1]))] = entry
        _LISTENERS[(host, int(address[1]))] = entry


def local_listener(
    address: tuple[str, int], shard: str | None, auth: LinkAuth | None = None
) -> _Listener | None:
    """The listener of this process at `address` if it serves the same shard, is still open, and proves the
    same cluster secret; else None (the dialer connects over TCP)."""
    if shard is None:
        return None
    entry = _LISTENERS.get((address[0], int(address[1])))
    if entry is None:
        return None
    if not entry.server.is_serving():
        for key in [k for k, v in _LISTENERS.items() if v is entry]:
            del _LISTENERS[key]
        return None
    if entry.shard != shard:
        return None
    mine, theirs = (auth.secret if auth else None), (entry.auth.secret if entry.auth else None)
    if mine != theirs:  # what the TCP handshake would refuse is not linked in-process either
        return None
    return entry


class _LocalTransport:
    """What `Link` code reads of its transport, for a local link (closing ends the pair)."""

    def __init__(self, link: LocalLink) -> None:
        self._link = link
        self._closing = False

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("in-process", 0) if name == "peername" else default

    def write(self, data: bytes) -> None:  # only the TCP handshake writes bytes; a local pair has none
        raise RuntimeError("a local link carries frames, not bytes")

    def close(self) -> None:
        self._link._end()

    def abort(self) -> None:
        self._link._end()


class LocalLink(Link):
    """One end of an in-process link: frames go to the peer end as objects, once per loop iteration."""

    def __init__(self, name: str, on_frame: Callable[[Link, Frame], None] | None = None) -> None:
        super().__init__(name, on_frame)
        self.peer_link: LocalLink | None = None
        self._frames: list[Frame] = []

    def _attach(self, peer: LocalLink) -> None:
        self.peer_link = peer
        self.transport = _LocalTransport(self)  # type: ignore[assignment]  # duck-typed
        self.authenticated.set_result(True)

    # sending: frames as objects --------------------------------------------------------------------------
    def send(
        self, command_id: int, body: bytes = b"", *, flag: int = 0, corr: int = 0, head: bytes = b""
    ) -> bool:
        if self.transport is None:
            return False
        if head:
            body = head + body
        self._frames.append(Frame(command_id >> 8, command_id, corr & 0xFFFF, body, flag, 1, corr >> 16))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._flush_scheduled = False
        peer = self.peer_link
        frames, confirms = self._frames, self._confirms
        if not frames and not confirms:
            return
        self._frames, self._confirms = [], []
        if peer is None or peer.transport is None or self.transport is None:
            return  # the pair ended: what was queued is lost, as on a TCP link that drops
        now = self._loop.time()
        self.last_sent = peer.last_received = now
        peer._receive(frames, confirms)

    def _receive(self, frames: list[Frame], confirms: list[int]) -> None:
        pending = self._pending
        for corr in confirms:
            cb = pending.pop(corr, None)
            if cb is not None:
                try:
                    cb(CONFIRMED)
                except Exception:  # a buggy callback must not kill the link
                    log.exception("%s: reply callback failed", self.name)
        for frame in frames:
            if self.transport is None:
                return
            if frame.flag & FLAG_RESPONSE:
                cb = pending.pop(frame.seq | (frame.reserved << 16), None)
                if cb is not None:
                    try:
                        cb(frame)
                    except Exception:
                        log.exception("%s: reply callback failed", self.name)
                continue
            try:
                self.on_frame(self, frame)
            except Exception:
                log.exception("%s: handler for 0x%04x failed", self.name, frame.command_id)

    def reply(self, request: Frame, command_id: int, body: bytes = b"") -> bool:
        if not request.flag & FLAG_REQUEST:
            return False
        return self.send(command_id, body, flag=FLAG_RESPONSE, corr=request.seq | (request.reserved << 16))

    def tick(self, now: float, heartbeat_after: float = 5.0, dead_after: float = 30.0) -> None:
        """No heartbeats: an in-process peer cannot go silent; it closes the pair when it stops."""

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("a local link receives frames, not bytes")

    # ending the pair -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Deliver what is queued, then end both ends (the peer learns it in the next loop iteration)."""
        if self.transport is not None:
            self._flush()
            self._end()

    def _end(self) -> None:
        if self.transport is None:
            return
        self._frames.clear()
        self.connection_lost(None)
        peer = self.peer_link
        if peer is not None and peer.transport is not None:
            peer._flush()
            self._loop.call_soon(peer._end)


def local_pair(listener: _Listener, name: str, on_frame: Callable[[Link, Frame], None]) -> LocalLink:
    """Open an in-process link to `listener`: returns the dialer's end; the listener's `on_link` gets its end
    in the next loop iteration, as after a TCP accept."""
    dialer_end = LocalLink(name, on_frame)
    server_end = LocalLink(listener.name)
    dialer_end._attach(server_end)
    server_end._attach(dialer_end)
    asyncio.get_running_loop().call_soon(listener.on_link, server_end)
    return dialer_end
