"""Runtime layer: internal links between service roles that share a process (the sharded layout).

A deployment may group roles into one process (runtime.cluster.layout): msg + biz + router of one shard. A
link between two of them then runs over an in-memory transport pair instead of a TCP connection: the same
link protocol objects on both ends (handshake, correlation ids, batched confirmations, relays, heartbeats,
loss), but what one end writes during an event-loop iteration reaches the other end in one call at the end
of that iteration: no socket, no system call, no wake-up through the kernel. The services cannot tell the
two apart, so every delivery guarantee holds in both layouts.

Who is in-process: `runtime.transport.serve_links` records each internal listener of this process with the
shard of the instance that opened it (the `SHARD` context variable, set by the supervisor while an instance
starts; tasks the instance creates inherit it) and the protocol factory its server uses; a
`runtime.services.links.Dialer` whose peer is such a listener *of its own shard*, still serving, with the same
cluster secret, connects in memory instead of over TCP. Anything else (another shard, another process, a
listener that stopped) goes over TCP as before. Without a shard (the split layout) nothing changes.

Direct calls: a listener may name the service object behind it (`serve_links(local=...)`). A link dialed to it
in memory then carries that object as `local_peer`, and the dialing role calls it as a Python function on the
message object it already holds, with no frame encoded or decoded and no loop hop (msg's stores into its
shard's biz: runtime.services.contracts.DirectStore). Only the calls a role offers that way skip the link;
everything else on the link (and every link between shards) stays as described above.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The shard of the service instance running (or being started) in this context: None outside any shard.
SHARD: contextvars.ContextVar[str | None] = contextvars.ContextVar("ttgen_shard", default=None)


@dataclass
class _Listener:
    shard: str
    factory: Callable[[], asyncio.Protocol]  # what the listening server makes for an accepted connection
    secret: bytes | None  # the cluster secret its links prove (None: no proof asked)
    server: Any  # the listening server (its `is_serving()` says whether it still accepts)
    local: Any = None  # the service behind the listener, offered to in-process peers for direct calls


# (host, port) of an internal listener of this process -> who listens there
_LISTENERS: dict[tuple[str, int], _Listener] = {}


def _serving(server: Any) -> bool:
    inner = getattr(server, "_server", server)  # runtime.transport.Server wraps the asyncio server
    check = getattr(inner, "is_serving", None)
    return bool(check()) if callable(check) else False


def register_listener(
    server: Any,
    host: str,
    factory: Callable[[], asyncio.Protocol],
    secret: bytes | None,
    local: Any = None,
) -> None:
    """Record an internal listener opened in the current shard (a no-op outside any shard); `local` is the
    service behind it that in-process peers may call directly (None: links only)."""
    for key in [k for k, v in _LISTENERS.items() if not _serving(v.server)]:
        del _LISTENERS[key]  # listeners that stopped since
    shard = SHARD.get()
    if shard is None:
        return
    entry = _Listener(shard, factory, secret, server, local)
    for sock in getattr(server, "sockets", None) or ():
        address = sock.getsockname()
        _LISTENERS[(str(address[0]), int(address[1]))] = entry
        _LISTENERS[(host, int(address[1]))] = entry


def local_listener(address: tuple[str, int], shard: str | None, secret: bytes | None) -> _Listener | None:
    """The listener of this process at `address` if it serves the same shard, still accepts, and checks the
    same cluster secret (what the TCP handshake would refuse is not linked in-process either); else None."""
    if shard is None:
        return None
    entry = _LISTENERS.get((address[0], int(address[1])))
    if entry is None or entry.shard != shard or entry.secret != secret:
        return None
    if not _serving(entry.server):
        return None
    return entry


class MemoryTransport(asyncio.Transport):
    """One end of an in-memory transport pair: bytes written during a loop iteration are handed to the peer
    protocol's `data_received` in one call at the end of it; closing delivers what is queued, then both
    protocols see `connection_lost` (the peer in the next iteration, as after a TCP FIN)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, name: str) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._name = name
        self._peer: MemoryTransport | None = None
        self._out = bytearray()
        self._scheduled = False
        self._closing = False
        self._lost = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return ("in-process", self._name)
        return default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._out += data
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._deliver)

    def _deliver(self) -> None:
        self._scheduled = False
        peer = self._peer
        if not self._out or peer is None or peer._lost:
            self._out.clear()
            return
        data = bytes(self._out)
        self._out.clear()
        peer._protocol.data_received(data)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._deliver()  # what was written before the close still arrives, as on TCP
        self._loop.call_soon(self._connection_lost)
        peer = self._peer
        if peer is not None and not peer._closing:
            peer._closing = True
            self._loop.call_soon(peer._deliver)
            self._loop.call_soon(peer._connection_lost)

    def abort(self) -> None:
        self._out.clear()
        self.close()

    def _connection_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self._protocol.connection_lost(None)

    # what links may ask of a TCP transport; an in-process peer always reads, so these are no-ops
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return not self._closing

    def can_write_eof(self) -> bool:
        return False


def connect_in_process(listener: _Listener, protocol: asyncio.Protocol, name: str) -> None:
    """Connect `protocol` (a dialer's link) to a new protocol of `listener` through a memory transport pair;
    both see `connection_made` now, as after a TCP connect and accept. The dialer's link gets the listener's
    service as `local_peer` (for direct calls) when the listener offers one."""
    loop = asyncio.get_running_loop()
    accepted = listener.factory()
    mine, theirs = MemoryTransport(loop, protocol, name), MemoryTransport(loop, accepted, name)
    mine._peer, theirs._peer = theirs, mine
    accepted.connection_made(theirs)
    if listener.local is not None and hasattr(protocol, "local_peer"):
        protocol.local_peer = listener.local
    protocol.connection_made(mine)


def is_in_process(link: Any) -> bool:
    """Whether a link runs over an in-memory transport (a role of this process's shard at the other end)."""
    return isinstance(getattr(link, "transport", None), MemoryTransport)


def peer_of(link: Any) -> Any:
    """The protocol at the other end of an in-process link (e.g. a router's link from this msg server), or
    None for a TCP link or one that is gone."""
    transport = getattr(link, "transport", None)
    if not isinstance(transport, MemoryTransport) or transport._closing:
        return None
    peer = transport._peer
    return peer._protocol if peer is not None and not peer._lost else None
