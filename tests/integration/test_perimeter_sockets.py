"""Integration: limits before login and per client address, over real loopback sockets (127.x only).

- 600 sockets that send heartbeats before login and never read pin bounded kernel memory;
- one address opening more connections than the process has files is refused per address, before EMFILE, and a
  client from another address is still served (in a subprocess with a lowered file limit);
- a logged-in slow-loris (one byte of a frame at a time) is closed at the slow-read deadline."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from runtime.client import ClientCore
from runtime.connection import PRELOGIN_MAX_FRAME_BYTES, Kind, Timeouts
from runtime.dispatch import Context, Dispatcher
from runtime.framing import HEADER_SIZE, encode_frame
from runtime.transport import ConnectionCaps, serve

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "unit" / "runtime"))
import rt_testproto as tp  # noqa: E402

pytestmark = pytest.mark.integration
SIOCOUTQ = termios.TIOCOUTQ  # unsent bytes in a socket's send queue
FIONREAD = termios.FIONREAD  # unread bytes in a socket's receive queue


def _queued(fd: int, request: int) -> int:
    return int(struct.unpack("i", fcntl.ioctl(fd, request, b"\0\0\0\0"))[0])


class LoginOnly:
    __mapping__ = {0x0103: "on_login", 0x0305: "on_echo"}

    async def on_login(self, ctx: Context, msg: object) -> object:
        ctx.authenticate(1, 1)
        return tp.LoginRes(result_code=0, user_id=1)

    async def on_echo(self, ctx: Context, msg: object) -> object:
        return tp.Echo(text="ok")


def test_600_non_reading_prelogin_sockets_hold_bounded_kernel_memory() -> None:
    sockets_n, frames_each = 600, 16
    body = b"h" * (PRELOGIN_MAX_FRAME_BYTES - HEADER_SIZE - 16)
    burst = encode_frame(7, 0x0701, 1, body) * frames_each  # ~250 KiB of heartbeats per socket

    async def main() -> None:
        registry = tp.build_registry()
        dispatcher = Dispatcher(registry, LoginOnly())
        server = await serve(
            "127.0.0.1",
            0,
            dispatcher.handler_factory,
            registry=registry,
            caps=ConnectionCaps(per_address=1000),
        )
        loop = asyncio.get_running_loop()
        clients: list[socket.socket] = []
        try:
            for _ in range(sockets_n):
                sock = socket.socket()
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", server.port))
                clients.append(sock)
            for sock in clients:
                await loop.sock_sendall(sock, burst)  # the server reads them all (its echoes are what stay)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(server.links) < sockets_n:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # let the last reads and echoes happen
            server_side = 0
            for link in server.links:
                transport = link.transport
                assert transport is not None
                server_side += transport.get_write_buffer_size()
                raw = transport.get_extra_info("socket")
                server_side += _queued(raw.fileno(), SIOCOUTQ)
            client_side = sum(_queued(sock.fileno(), FIONREAD) for sock in clients)
            total = server_side + client_side
            # every heartbeat came back as a bare 16-byte header: 600 x 16 x 16 bytes, not 600 x 250 KiB
            assert total <= sockets_n * frames_each * HEADER_SIZE, total
            assert len(server.links) == sockets_n  # none closed: heartbeats before login are allowed
        finally:
            for sock in clients:
                sock.close()
            await server.shutdown(1.0)

    asyncio.run(asyncio.wait_for(main(), 60))


SERVER_SCRIPT = r"""
import asyncio, resource, sys
sys.path.insert(0, sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import rt_testproto as tp
from runtime.dispatch import Dispatcher
from runtime.transport import serve

class S:
    __mapping__ = {}

async def main():
    registry = tp.build_registry()
    server = await serve("127.0.0.1", 0, Dispatcher(registry, S()).handler_factory, registry=registry)
    print(server.port, server.caps.per_address, server.caps.total, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("refused", server.caps.refused_address, server.caps.refused_total, flush=True)

asyncio.run(main())
"""


def _heartbeat_echoed(port: int, source: str) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=3, source_address=(source, 0)) as sock:
        sock.sendall(encode_frame(7, 0x0701, 9))
        try:
            return sock.recv(64) == encode_frame(7, 0x0701, 9)
        except (TimeoutError, ConnectionError):
            return False


def test_a_per_address_cap_refuses_a_flood_before_the_file_limit() -> None:
    file_limit, flood = 256, 400  # the flood alone is more than the server's files
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER_SCRIPT, str(HERE.parents[1] / "unit" / "runtime"), str(file_limit)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE.parents[2],
    )
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port, per_address, total = map(int, proc.stdout.readline().split())
        assert per_address < total < file_limit
        for _ in range(flood):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), 3, source_address=("127.0.0.2", 0)))
            except OSError:
                break
        # the server closes everything beyond the cap at once: at most `per_address` of them stay open
        open_now = set(held)
        deadline = time.monotonic() + 10
        while len(open_now) > per_address and time.monotonic() < deadline:
            time.sleep(0.1)
            for sock in list(open_now):
                sock.setblocking(False)
                try:
                    if sock.recv(1) == b"":
                        open_now.discard(sock)
                except BlockingIOError:
                    pass
                except ConnectionError:
                    open_now.discard(sock)
        alive = len(open_now)
        assert alive <= per_address, proc.poll()
        # a client from another address is served beside the flood
        assert _heartbeat_echoed(port, "127.0.0.3")
    finally:
        for sock in held:
            sock.close()
        out, err = proc.communicate("", timeout=10)
    refused = out.split("refused")[1].split()
    assert int(refused[0]) >= flood - per_address
    assert "Too many open files" not in err and "EMFILE" not in err, err[-2000:]


def test_a_logged_in_slow_loris_is_closed_at_the_slow_read_deadline() -> None:
    async def main() -> None:
        registry = tp.build_registry()
        dispatcher = Dispatcher(registry, LoginOnly())
        server = await serve(
            "127.0.0.1",
            0,
            dispatcher.handler_factory,
            registry=registry,
            kind=Kind.CLIENT_SESSION,
            timeouts=Timeouts(frame_read=2.0),
        )
        core = ClientCore(registry, host="127.0.0.1", port=server.port)
        await core.connect()
        assert (
            await core.call("LOGIN_REQ", tp.LoginReq(user_name="u1", password="ok", client_type=1))
        ).result_code == 0
        link = core.link
        assert link is not None and link.transport is not None
        echo = encode_frame(3, 0x0305, 5, tp.Echo(text="slow").SerializeToString())
        started = time.monotonic()
        for i in range(len(echo) - 1):  # never the last byte
            if link.closed.done():
                break
            link.transport.write(echo[i : i + 1])
            await asyncio.sleep(0.4)
        reason = await asyncio.wait_for(asyncio.shield(link.closed), 5)
        took = time.monotonic() - started
        assert 1.5 <= took <= 5.0, (took, reason)
        assert len(server.links) == 0
        await server.shutdown(1.0)

    asyncio.run(asyncio.wait_for(main(), 30))
