"""Unit: in-process links between roles of one shard (runtime.inprocess) keep the link semantics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from generated.teamtalk.registry import REGISTRY
from runtime.connection import FLAG_RELAY, LinkAuth, relay_head, relay_targets
from runtime.framing import Frame
from runtime.inprocess import SHARD, is_in_process, local_listener
from runtime.registry import CommandInfo
from runtime.services.links import Dialer, NoRequests
from runtime.transport import InternalLink, Server, serve_links

SECRET = LinkAuth(b"k" * 32)
CID_MSG_DATA = REGISTRY.by_name("CID_MSG_DATA").command_id
CID_LIST = REGISTRY.by_name("CID_MSG_LIST_REQUEST").command_id


class Peer:
    """A listener's handler: records frames, answers requests with the body reversed, confirms relays."""

    def __init__(self) -> None:
        self.links: list[Any] = []
        self.frames: list[Frame] = []
        self.lost: list[str] = []

    def connection_made(self, link: Any) -> None:
        self.links.append(link)

    def frames_received(self, link: Any, frames: Iterable[tuple[Frame, CommandInfo]]) -> None:
        for frame, _info in frames:
            self.frames.append(frame)
            if frame.flag & FLAG_RELAY:
                link.confirm(frame)
            else:
                link.reply(frame, frame.command_id, bytes(frame.body)[::-1])

    def connection_lost(self, link: Any, reason: str) -> None:
        self.lost.append(reason)


async def listen(peer: Peer, shard: str | None, auth: LinkAuth | None = SECRET) -> Server:
    token = SHARD.set(shard)
    try:
        return await serve_links("127.0.0.1", 0, lambda: peer, registry=REGISTRY, auth=auth, name="peer")
    finally:
        SHARD.reset(token)


async def dial(server: Server, shard: str | None, auth: LinkAuth | None = SECRET) -> Dialer:
    token = SHARD.set(shard)
    try:
        dialer = Dialer("d", lambda: ("127.0.0.1", server.port), NoRequests(), registry=REGISTRY, auth=auth)
    finally:
        SHARD.reset(token)
    dialer.start()
    assert await dialer.wait_up(5.0)
    return dialer


def test_a_dialer_of_the_same_shard_gets_an_in_process_link_with_link_semantics() -> None:
    async def main() -> None:
        peer = Peer()
        server = await listen(peer, "shard-0")
        dialer = await dial(server, "shard-0")
        link = dialer.link
        assert isinstance(link, InternalLink) and is_in_process(link) and is_in_process(peer.links[0])
        reply = await link.call(CID_LIST, b"abc")  # request / reply by correlation id, handshake done
        assert (reply.command_id, bytes(reply.body)) == (CID_LIST, b"cba")
        confirmed: list[Any] = []
        for i in range(3):  # relays, confirmed in one batch
            link.request(CID_MSG_DATA, b"m%d" % i, confirmed.append, flag=FLAG_RELAY, head=relay_head((7,)))
        await asyncio.sleep(0.02)
        assert len(confirmed) == 3 and all(c is not None for c in confirmed)
        relayed = [f for f in peer.frames if f.flag & FLAG_RELAY]
        targets, start = relay_targets(relayed[0].body)
        assert targets == (7,) and bytes(relayed[0].body[start:]) == b"m0"
        # the peer goes away: a request it never saw fails, both ends see the loss
        lost_answer: list[Any] = []
        link.request(CID_LIST, b"late", lost_answer.append)
        peer.links[0].abort("peer stopped")
        await asyncio.sleep(0.02)
        assert not link.is_open and link.closed.done()
        assert lost_answer == [None]  # the requester learns it (and resends)
        assert len(peer.lost) == 1
        await dialer.stop()
        await server.shutdown(0.1)

    asyncio.run(main())


def test_other_shards_no_shard_a_stopped_listener_or_another_secret_use_tcp() -> None:
    async def main() -> None:
        peer = Peer()
        server = await listen(peer, "shard-0")
        address = ("127.0.0.1", server.port)
        assert local_listener(address, "shard-0", SECRET.secret) is not None
        assert local_listener(address, "shard-1", SECRET.secret) is None
        assert local_listener(address, None, SECRET.secret) is None
        assert local_listener(address, "shard-0", b"x" * 32) is None
        other = await dial(server, "shard-1")
        assert other.link is not None and not is_in_process(other.link)  # over TCP, handshake and all
        reply = await other.link.call(CID_LIST, b"xy")
        assert bytes(reply.body) == b"yx"
        await other.stop()
        await server.shutdown(0.1)
        assert local_listener(address, "shard-0", SECRET.secret) is None

    asyncio.run(main())


def test_no_shard_is_the_split_layout_every_link_over_tcp() -> None:
    async def main() -> None:
        peer = Peer()
        server = await listen(peer, None)
        dialer = await dial(server, None)
        assert dialer.link is not None and not is_in_process(dialer.link)
        await dialer.stop()
        await server.shutdown(0.1)

    asyncio.run(main())
