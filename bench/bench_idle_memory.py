"""Benchmark: server memory per idle authenticated connection.

A server process serves the generated TeamTalk msg-service base (stub handlers; a real login handler that
authenticates) on 127.0.0.1; a separate client process opens connections and logs each in. The server's RSS is
read from /proc after a warm-up batch and again after the measured batch; the delta over the batch size is the
cost of one idle authenticated connection (Link + Connection + decoder + transport + session table entry).

Run: .venv/bin/python bench/bench_idle_memory.py [--connections 5000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.framing import FrameDecoder, encode_frame  # noqa: E402

HOST = "127.0.0.1"
WARMUP = 300
MAX_OPEN_FILES = 20_000


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(MAX_OPEN_FILES, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def login_frame(user: int) -> bytes:
    from generated.teamtalk import IM_Login_pb2 as login_pb2

    req = login_pb2.IMLoginReq(user_name=f"user{user}", password="0" * 32, online_status=1, client_type=1)
    return encode_frame(1, 0x0103, 1, req.SerializeToString())


def msg_service() -> tuple[Any, Any]:
    from generated.teamtalk import IM_Login_pb2 as login_pb2
    from generated.teamtalk import servers
    from generated.teamtalk.registry import REGISTRY

    class MsgService(servers.MsgServiceBase):  # type: ignore[misc]
        def __init__(self) -> None:
            self.sessions: dict[int, Any] = {}

        async def on_cid_login_req_userlogin(self, ctx: Any, msg: Any) -> Any:
            ctx.authenticate(int(msg.user_name[4:]), msg.client_type)
            self.sessions[ctx.user_id] = ctx.link
            return login_pb2.IMLoginRes(server_time=1, result_code=0)

        def on_disconnect(self, link: Any, reason: str) -> None:
            if link.conn is not None:
                self.sessions.pop(link.conn.user_id, None)

    async def not_here(self: Any, ctx: Any, msg: Any) -> None:
        return None

    for name in list(MsgService.__abstractmethods__):
        setattr(MsgService, name, not_here)
    MsgService.__abstractmethods__ = frozenset()
    return REGISTRY, MsgService()


async def server_main() -> None:
    from runtime.dispatch import Dispatcher
    from runtime.transport import serve

    registry, service = msg_service()
    dispatcher = Dispatcher(registry, service)
    server = await serve(HOST, 0, dispatcher.handler_factory, registry=registry)
    print(server.port, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "rss":
            gc.collect()
            print(rss_kb(), len(server.links), len(service.sessions), flush=True)
        elif line == "quit":
            break
    await server.shutdown(1.0)


class LoginProtocol(asyncio.Protocol):
    """A minimal client: send the login frame, resolve when the reply arrives, then stay idle."""

    def __init__(self, frame: bytes, done: asyncio.Future[None]) -> None:
        self.frame, self.done, self.decoder = frame, done, FrameDecoder()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.frame)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if any(f.command_id == 0x0104 for f in self.decoder.feed(data)) and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError("closed before login"))


async def clients_main(port: int, first_user: int, count: int) -> None:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(256)
    transports = []

    async def one(user: int) -> None:
        async with limit:
            done: asyncio.Future[None] = loop.create_future()
            transport, _p = await loop.create_connection(
                lambda: LoginProtocol(login_frame(user), done), HOST, port
            )
            await asyncio.wait_for(done, 30)
            transports.append(transport)

    await asyncio.gather(*(one(first_user + i) for i in range(count)))
    print("ready", len(transports), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()  # any line (or EOF) ends the idle period
    for t in transports:
        t.close()


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def ask(proc: subprocess.Popen[str], line: str) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def wait_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    out = proc.stdout.readline().strip()
    if not out:
        raise RuntimeError(f"child exited with {proc.wait()}")
    return out


def one_run(connections: int) -> tuple[float, int, int]:
    server = spawn("--server")
    port = wait_line(server)
    warm = spawn("--clients", port, "1", str(WARMUP))
    assert wait_line(warm).startswith("ready")
    before, links0, _s = (int(x) for x in ask(server, "rss").split())
    batch = spawn("--clients", port, str(WARMUP + 1), str(connections))
    assert wait_line(batch) == f"ready {connections}"
    after, links1, sessions = (int(x) for x in ask(server, "rss").split())
    assert links1 - links0 == connections and sessions == links1, (links0, links1, sessions)
    for proc in (batch, warm):
        ask(proc, "quit")
        proc.wait(30)
    ask(server, "quit")
    server.wait(30)
    return (after - before) * 1024 / connections, before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--clients", nargs=3, type=int, metavar=("PORT", "FIRST_USER", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    raise_fd_limit()
    from runtime.transport import run

    if args.server:
        run(server_main())
        return
    if args.clients:
        run(clients_main(*args.clients))
        return
    results = []
    for i in range(args.runs):
        per_conn, before, after = one_run(args.connections)
        results.append(per_conn)
        print(
            f"run {i + 1}: server RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB for "
            f"{args.connections} idle authenticated connections: {per_conn:.0f} B/connection"
        )
    print(
        f"median of {args.runs} runs: {statistics.median(results):.0f} B per idle authenticated connection "
        f"(goal < 8192 B)"
    )


if __name__ == "__main__":
    main()
