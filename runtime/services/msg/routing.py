"""Runtime services layer (msg): the msg server's links to every router, master choice and reliable relay.

Status updates go to every router (each keeps the whole user table); relays go through the master, the oldest
live router. A relay stays pending until a router confirms it; when the master's link drops, pending relays
are sent again through the next master, and receivers drop what they already delivered. On every (re)connect
the router gets this server's full online snapshot, so any router can take over at any time. A master that
shares this process (the sharded layout, runtime.inprocess) gets each relay as a direct call
(`DirectRelay.relay_from`) instead of a frame; status updates and snapshots still use its link.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, cast

from runtime.framing import Frame
from runtime.inprocess import is_in_process, peer_of
from runtime.monitor.metrics import Metrics
from runtime.services.base import Discovery
from runtime.services.links import FLAG_RELAY, Dialer, Link, LinkAuth, Proto, relay_head
from runtime.services.protocol import command_ids_of
from runtime.transport import FrameHandler

if TYPE_CHECKING:
    from generated.teamtalk import IM_Server_pb2 as server
    from runtime.services.contracts import DirectRelay

log = logging.getLogger("ttgen.msg.routing")
MAX_OUTBOX = 100_000  # relays kept while no router confirms; beyond it the oldest are dropped


class RouterPool:
    """Dialers to all routers (from discovery), the current master, and the relay outbox."""

    def __init__(
        self,
        proto: Proto,
        discovery: Discovery,
        metrics: Metrics,
        handler: FrameHandler,
        snapshot: Callable[[], list[tuple[int, int, int]]],
        auth: LinkAuth | None,
    ) -> None:
        self.proto = proto
        self.auth = auth
        self.discovery = discovery
        self.handler = handler  # what routers send: a Dispatcher over the service's relay handlers
        self.snapshot = snapshot  # -> [(user_id, status, client_type)] of local sessions
        self.dialers: dict[tuple[str, int], Dialer] = {}
        self._order: list[tuple[str, int]] = []
        self.master: Link | None = None
        # relay id -> (command id, envelope head, message body): the envelope is sent as its two parts
        self._outbox: dict[int, tuple[int, bytes, bytes]] = {}
        self._in_flight: dict[int, Link] = {}
        self._next = 1
        self.cid_relay_ack = 0
        self.m_relays = metrics.counter("msg_relays_total", "frames relayed through a router")
        self.m_relay_retries = metrics.counter(
            "msg_relay_retries_total", "relays re-sent after a router loss"
        )
        self.m_master_changes = metrics.counter("msg_router_failovers_total", "master router changes")
        # Set once a second by `tick` (not per relay: it is only read by the metrics endpoint).
        self.g_outbox = metrics.gauge("msg_relay_outbox", "relays not yet confirmed by a router")
        self.m_relay_dropped = metrics.counter("msg_relays_dropped_total", "relays dropped: outbox full")

    # membership ------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Dial routers that appeared in discovery; keep discovery order (oldest first) for master choice."""
        order = []
        for ep in self.discovery.endpoints("router", "internal"):
            key = (ep.host, ep.port)
            order.append(key)
            if key not in self.dialers:
                dialer = Dialer(
                    f"msg->router:{ep.port}",
                    _fixed(key),
                    self.handler,
                    registry=self.proto.registry,
                    on_up=self._up,
                    on_down=self._down,
                    max_backoff=1.0,
                    auth=self.auth,
                )
                self.dialers[key] = dialer
                dialer.start()
        # Routers that vanished from discovery stay while their link is up (they sort last); dialers of gone
        # routers whose link is down are dropped.
        for key in [k for k in self.dialers if k not in order]:
            dialer = self.dialers[key]
            if dialer.link is None:
                del self.dialers[key]
                asyncio.get_running_loop().create_task(dialer.stop())
        self._order = order + [k for k in self.dialers if k not in order]
        self._elect()

    def live_links(self) -> list[Link]:
        """Connected router links, master candidates first: a router of this process's shard (an in-process
        link, runtime.cluster.layout), then the others oldest first."""
        out = []
        for key in self._order:
            d = self.dialers.get(key)
            if d is not None and d.link is not None and d.link.is_open:
                out.append(d.link)
        out.sort(key=lambda link: not is_in_process(link))
        return out

    @property
    def available(self) -> bool:
        """Whether at least one router is connected."""
        return self.master is not None

    def _elect(self) -> None:
        links = self.live_links()
        new = links[0] if links else None
        if new is self.master:
            return
        old, self.master = self.master, new
        if new is None:
            return
        if old is not None:
            self.m_master_changes.inc()
        role_set = command_ids_of(self.proto.registry).CID_OTHER_ROLE_SET
        new.send(role_set, self.proto.new(role_set, master=1).SerializeToString())
        if old is not None:
            self._send_snapshot(new)  # the new master may have missed updates while it was a standby
        self._flush_outbox()

    def _up(self, link: Link) -> None:
        self._send_snapshot(link)
        self._elect()

    def _down(self, link: Link) -> None:
        if link is self.master:
            self.master = None
        self._elect()

    def _send_snapshot(self, link: Link) -> None:
        cid = command_ids_of(self.proto.registry).CID_OTHER_ONLINE_USER_INFO
        msg = cast("server.IMOnlineUserInfo", self.proto.new(cid))
        for user_id, status, client_type in self.snapshot():
            msg.user_stat_list.add(user_id=user_id, status=status, client_type=client_type)
        link.send(cid, msg.SerializeToString())

    # sending ---------------------------------------------------------------------------------------------
    def to_all(self, command_id: int, body: bytes) -> None:
        """Send a frame to every connected router (status updates)."""
        for link in self.live_links():
            link.send(command_id, body)

    def relay(self, command_id: int, body: bytes, targets: Sequence[int] | None) -> None:
        """Relay to the msg servers holding `targets` (None: every msg server), retried until confirmed."""
        rid = self._next
        self._next += 1
        head = relay_head(targets)
        if len(self._outbox) >= MAX_OUTBOX:  # no router for a long time: the oldest relays go (clients pull)
            oldest = next(iter(self._outbox))
            del self._outbox[oldest]
            self._in_flight.pop(oldest, None)
            self.m_relay_dropped.inc()
        self._outbox[rid] = (command_id, head, body)
        self.m_relays.value += 1  # in place, no call (once per message)
        self._send_relay(rid)

    def _send_relay(self, rid: int) -> None:
        link = self.master
        entry = self._outbox.get(rid)
        if link is None or entry is None:
            return
        command_id, head, body = entry

        def confirmed(frame: Frame | bool | None, rid: int = rid) -> None:
            if frame is not None:
                self._outbox.pop(rid, None)
                self._in_flight.pop(rid, None)
                return
            # Link lost before the confirmation: send it again through whichever router is master now.
            self._in_flight.pop(rid, None)
            if rid in self._outbox:
                self.m_relay_retries.inc()
                self._send_relay(rid)

        local = link.local_peer
        origin = peer_of(link) if local is not None else None
        if origin is not None:  # this shard's router (runtime.inprocess): a call, no frame
            self._in_flight[rid] = link
            cast("DirectRelay", local).relay_from(origin, command_id, head + body, partial(confirmed, True))
        elif link.request(command_id, body, confirmed, flag=FLAG_RELAY, head=head):
            self._in_flight[rid] = link

    def _flush_outbox(self) -> None:
        for rid in list(self._outbox):
            if rid not in self._in_flight:
                self._send_relay(rid)

    async def call(self, command_id: int, body: bytes, timeout: float = 5.0) -> Frame:
        """A request answered by a router itself (presence queries); tries each live router in turn."""
        last: Exception | None = None
        for link in self.live_links():
            try:
                return await link.call(command_id, body, timeout)
            except Exception as exc:
                last = exc
        raise ConnectionError(f"no router answered: {last}")

    def tick(self, now: float) -> None:
        """Heartbeats and dead-link detection; resend stuck relays; the outbox gauge."""
        self.g_outbox.set(len(self._outbox))
        for d in self.dialers.values():
            if d.link is not None:
                d.link.tick(d.link.now())
        if self.master is not None and len(self._in_flight) < len(self._outbox):
            self._flush_outbox()

    async def stop(self) -> None:
        """Close every router link."""
        for d in list(self.dialers.values()):
            await d.stop()
        self.dialers.clear()
        self.master = None


def _fixed(address: tuple[str, int]) -> Callable[[], tuple[str, int] | None]:
    """A resolver that always answers the same address (a router keeps its port for its lifetime)."""
    return lambda: address


def monotonic() -> float:
    """The clock links use for heartbeats."""
    return time.monotonic()
