"""Unit: in-process links between roles of one shard (runtime.services.local_links) keep Link's semantics."""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.framing import Frame
from runtime.services.links import FLAG_RELAY, Dialer, Link, LinkAuth, relay_targets, serve_links
from runtime.services.local_links import SHARD, is_in_process, local_listener

SECRET = LinkAuth(b"k" * 32)


class Peer:
    """A listener that records frames, answers requests with the body reversed and confirms relays."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.frames: list[Frame] = []
        self.lost: list[Link] = []

    def on_link(self, link: Link) -> None:
        self.links.append(link)
        link.on_frame = self.on_frame
        link.on_lost.append(self.lost.append)

    def on_frame(self, link: Link, frame: Frame) -> None:
        self.frames.append(frame)
        if frame.flag & FLAG_RELAY:
            link.confirm(frame)
        else:
            link.reply(frame, frame.command_id + 1, bytes(frame.body)[::-1])


async def listen(peer: Peer, shard: str | None, auth: LinkAuth | None = SECRET) -> asyncio.AbstractServer:
    token = SHARD.set(shard)
    try:
        return await serve_links("127.0.0.1", 0, peer.on_link, "peer", auth=auth)
    finally:
        SHARD.reset(token)


async def dial(server: asyncio.AbstractServer, shard: str | None, auth: LinkAuth | None = SECRET) -> Dialer:
    port = server.sockets[0].getsockname()[1]
    token = SHARD.set(shard)
    try:
        dialer = Dialer("d", lambda: ("127.0.0.1", port), lambda _l, _f: None, auth=auth)
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
        assert is_in_process(link)
        reply = await link.call(0x0501, b"abc")  # request / reply with a correlation id
        assert (reply.command_id, bytes(reply.body)) == (0x0502, b"cba")
        assert is_in_process(peer.links[0])
        confirmed: list[Any] = []
        for i in range(3):  # relays, confirmed in one batch
            head = b"\x00\x01\x00\x00\x00\x07"  # one target: user 7
            link.request(0x0301, b"m%d" % i, confirmed.append, flag=FLAG_RELAY, head=head)
        await asyncio.sleep(0.01)
        assert len(confirmed) == 3 and all(c is not None for c in confirmed)
        relayed = [f for f in peer.frames if f.flag & FLAG_RELAY]
        targets, start = relay_targets(relayed[0].body)
        assert targets == (7,) and bytes(relayed[0].body[start:]) == b"m0"
        # the peer goes away: pending requests fail, both ends see the loss
        lost_answer: list[Any] = []
        link.request(0x0501, b"late", lost_answer.append)
        peer.links[0].close()
        await asyncio.sleep(0.01)
        assert not link.is_open and link.closed.is_set()
        assert lost_answer == [None]  # unanswered when the link went: the requester learns it (and resends)
        assert peer.lost == [peer.links[0]]
        await dialer.stop()
        server.close()

    asyncio.run(main())


def test_other_shards_no_shard_a_stopped_listener_or_another_secret_use_tcp() -> None:
    async def main() -> None:
        peer = Peer()
        server = await listen(peer, "shard-0")
        address = ("127.0.0.1", server.sockets[0].getsockname()[1])
        assert local_listener(address, "shard-0", SECRET.secret) is not None
        assert local_listener(address, "shard-1", SECRET.secret) is None
        assert local_listener(address, None, SECRET.secret) is None
        assert local_listener(address, "shard-0", b"x" * 32) is None
        other = await dial(server, "shard-1")
        assert other.link is not None and not is_in_process(other.link)  # over TCP
        reply = await other.link.call(0x0501, b"xy")
        assert bytes(reply.body) == b"yx"
        await other.stop()
        server.close()
        await server.wait_closed()
        assert local_listener(address, "shard-0", SECRET.secret) is None

    asyncio.run(main())


def test_no_shard_is_the_split_layout_every_link_over_tcp() -> None:
    async def main() -> None:
        peer = Peer()
        server = await listen(peer, None)
        dialer = await dial(server, None)
        assert dialer.link is not None and not is_in_process(dialer.link)
        await dialer.stop()
        server.close()

    asyncio.run(main())
