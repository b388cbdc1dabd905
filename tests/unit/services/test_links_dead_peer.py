"""Links drop a connection to a dead host within seconds: both ends of every link get keepalive probes and
TCP_USER_TIMEOUT (the multi-host test shows the effect; this checks the options are on the sockets)."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.services.links import DEAD_PEER_TIMEOUT, Link, NoRequests
from runtime.transport import serve_links


@pytest.mark.skipif(sys.platform != "linux", reason="TCP_USER_TIMEOUT and TCP_KEEPIDLE are Linux options")
def test_both_ends_of_a_link_detect_a_dead_peer() -> None:
    async def body() -> None:
        reg = REGISTRY
        server = await serve_links("127.0.0.1", 0, NoRequests, registry=reg, auth=None, name="test")
        port = server.port
        loop = asyncio.get_running_loop()
        transport, dialer = await loop.create_connection(
            lambda: Link(reg, NoRequests(), name="dialer", dialer=True), "127.0.0.1", port
        )
        try:
            for _ in range(200):
                if server.links:
                    break
                await asyncio.sleep(0.01)
            links = [dialer, *server.links]
            assert len(links) == 2
            for link in links:
                assert link.transport is not None
                sock = link.transport.get_extra_info("socket")
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) <= 2
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == int(
                    DEAD_PEER_TIMEOUT * 1000
                )
        finally:
            transport.close()
            await server.shutdown(0.5)

    asyncio.run(body())
