"""Integration: the runtime core over real loopback sockets (127.0.0.1, port 0).

A served dispatcher, `ClientCore`s and raw sockets sending bad frames: first with a test protocol, then with
the generated TeamTalk stack."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.client import ClientCore
from runtime.connection import Kind
from runtime.dispatch import Context, Dispatcher
from runtime.errors import LoginServiceError
from runtime.framing import HEADER, FrameDecoder, encode_frame
from runtime.registry import Registry
from runtime.stages.crypto import KeyExchange
from runtime.transport import Link, Server, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "runtime"))
import rt_testproto as tp

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"


LOOP = ["asyncio"]


@pytest.fixture(params=["asyncio", "uvloop"], autouse=True)
def event_loop_kind(request: pytest.FixtureRequest) -> None:
    """Every test runs on asyncio's loop and on uvloop (whose transports do not subclass asyncio's)."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    LOOP[0] = request.param


def run(main: Callable[[], Awaitable[None]], timeout: float = 20.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    if LOOP[0] == "uvloop":
        import uvloop

        uvloop.run(bounded())
    else:
        asyncio.run(bounded())


class EchoService:
    """A small service over the test protocol."""

    __mapping__ = {0x0103: "on_login", 0x0305: "on_echo", 0x0301: "on_msg"}

    def __init__(self) -> None:
        self.links: dict[int, Link] = {}
        self.order: list[bytes] = []
        self.msg_calls = 0
        self.delays = random.Random(7)
        self.slow_first = False

    async def on_login(self, ctx: Context, msg: Any) -> Any:
        if msg.password != "ok":
            ctx.close("bad password")
            return tp.LoginRes(result_code=6)
        ctx.authenticate(int(msg.user_name[1:]), msg.client_type)
        self.links[ctx.user_id] = ctx.link
        return tp.LoginRes(result_code=0, user_id=ctx.user_id)

    async def on_echo(self, ctx: Context, msg: Any) -> Any:
        if msg.text.startswith("push to "):
            target = self.links[int(msg.text.removeprefix("push to "))]
            ctx.push(target, "NOTIFY", tp.Notify(text=f"from {ctx.user_id}"))
        if msg.text == "kex":
            server = KeyExchange()
            keys = server.derive(msg.blob, initiator=False)
            ctx.reply(tp.Echo(text="kex", blob=server.public_bytes))  # the last plaintext reply
            ctx.enable_encryption(keys)
            return None
        if msg.text == "kick me":
            ctx.link.close("kicked by test")
            return None
        return tp.Echo(text=msg.text.upper(), items=msg.items)

    async def on_msg(self, ctx: Context, msg: Any) -> Any:
        self.msg_calls += 1
        if self.slow_first and self.msg_calls == 1:
            await asyncio.sleep(0.3)  # longer than the client's timeout: the client retransmits
        else:
            await asyncio.sleep(self.delays.uniform(0, 0.01))  # injected delay
        self.order.append(msg.msg_data)
        return tp.MsgDataAck(user_id=ctx.user_id, session_id=msg.to_session_id, msg_id=len(self.order))


async def start(registry: Registry, service: Any) -> tuple[Server, Dispatcher]:
    dispatcher = Dispatcher(registry, service)
    server = await serve(HOST, 0, dispatcher.handler_factory, registry=registry, kind=Kind.CLIENT_SESSION)
    return server, dispatcher


async def login(core: ClientCore, user: int) -> Any:
    return await core.call("LOGIN_REQ", tp.LoginReq(user_name=f"u{user}", password="ok", client_type=1))


async def raw_roundtrip(port: int, data: bytes) -> bytes:
    """Send bytes on a fresh socket; return everything received until the server closes (or 2 s pass)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 2.0)
    finally:
        writer.close()


def test_login_request_push_and_bad_frames_close_only_their_connection() -> None:
    async def main() -> None:
        registry = tp.build_registry()
        service = EchoService()
        server, _d = await start(registry, service)
        a = ClientCore(registry, host=HOST, port=server.port)
        b = ClientCore(registry, host=HOST, port=server.port)
        await a.connect()
        await b.connect()
        assert (await login(a, 1)).user_id == 1
        assert (await login(b, 2)).result_code == 0
        reply = await a.call("ECHO_REQ", tp.Echo(text="hello", items=[1, 2]))
        assert reply is not None and reply.text == "HELLO" and list(reply.items) == [1, 2]

        await a.call("ECHO_REQ", tp.Echo(text="push to 2"))
        pushes = b.pushes()
        info, pushed = await asyncio.wait_for(anext(pushes), 5)
        assert info.name == "NOTIFY" and pushed.text == "from 1"

        for bad in (
            HEADER.pack(0, 1, 0, 1, 0x0103, 1, 0),  # zero length
            HEADER.pack(1 << 30, 1, 0, 1, 0x0103, 1, 0),  # oversized
            b"GET / HTTP/1.1\r\n\r\n",  # garbage
            encode_frame(3, 0x0305, 1, tp.Echo(text="x").SerializeToString()),  # before login
            encode_frame(1, 0x0103, 1, b"\xff\xff\xff\xff"),
        ):  # undecodable login body
            assert await raw_roundtrip(server.port, bad) == b""  # closed without an answer
        answer = await raw_roundtrip(
            server.port,
            encode_frame(
                1, 0x0103, 9, tp.LoginReq(user_name="u3", password="no", client_type=1).SerializeToString()
            ),
        )
        (frame,) = FrameDecoder().feed(answer)
        assert frame.seq == 9 and tp.LoginRes.FromString(frame.body).result_code == 6  # replied, then closed

        reply = await a.call("ECHO_REQ", tp.Echo(text="still here"))
        assert reply is not None and reply.text == "STILL HERE"
        assert a.connected and b.connected
        await a.close()
        await b.close()
        await server.shutdown()

    run(main)


def test_heartbeat_is_echoed() -> None:
    async def main() -> None:
        registry = tp.build_registry()
        server, _d = await start(registry, EchoService())
        reader, writer = await asyncio.open_connection(HOST, server.port)
        beat = encode_frame(7, 0x0701, 5)
        writer.write(beat)
        assert await asyncio.wait_for(reader.readexactly(16), 5) == beat
        writer.close()
        await server.shutdown()

    run(main)


def test_send_wait_keeps_order_under_injected_delays() -> None:
    async def main() -> None:
        registry = tp.build_registry({"MSG_DATA": {"transport": {"ordering": "send_wait", "timeout": "5s"}}})
        service = EchoService()
        server, _d = await start(registry, service)
        async with ClientCore(registry, host=HOST, port=server.port) as core:
            await login(core, 1)
            sent = [f"m{i}".encode() for i in range(15)]
            acks = await asyncio.gather(
                *(
                    core.call(
                        "MSG_DATA",
                        tp.MsgData(from_user_id=1, to_session_id=2, msg_id=0, msg_type=1, msg_data=d),
                    )
                    for d in sent
                )
            )
            assert service.order == sent
            assert [a.msg_id for a in acks if a is not None] == list(range(1, 16))
        await server.shutdown()

    run(main)


def test_retransmit_until_ack_is_deduplicated_by_the_server() -> None:
    async def main() -> None:
        policy = {
            "transport": {
                "retransmit": "until_ack",
                "timeout": "100ms",
                "max_attempts": 10,
                "dedup": "per_sender",
            }
        }
        registry = tp.build_registry({"MSG_DATA": policy})
        service = EchoService()
        service.slow_first = True
        server, _d = await start(registry, service)
        async with ClientCore(registry, host=HOST, port=server.port) as core:
            await login(core, 1)
            ack = await core.call(
                "MSG_DATA",
                tp.MsgData(from_user_id=1, to_session_id=2, msg_id=0, msg_type=1, msg_data=b"once"),
            )
            assert ack is not None and ack.msg_id == 1
            assert service.msg_calls == 1 and service.order == [b"once"]
        await server.shutdown()

    run(main)


def test_session_encryption_end_to_end() -> None:
    async def main() -> None:
        sealed = {"pack": {"encrypt": "session_aead"}, "unpack": {"replay": "reject"}}
        registry = tp.build_registry({"ECHO_REQ": sealed, "ECHO_RSP": sealed})
        server, _d = await start(registry, EchoService())
        async with ClientCore(registry, host=HOST, port=server.port) as core:
            await login(core, 1)
            client = KeyExchange()
            reply = await core.call("ECHO_REQ", tp.Echo(text="kex", blob=client.public_bytes))
            assert reply is not None
            core.enable_encryption(client.derive(reply.blob, initiator=True))
            for word in ("secret", "again"):
                got = await core.call("ECHO_REQ", tp.Echo(text=word))
                assert got is not None and got.text == word.upper()
            (link,) = server.links
            assert link.data is not None and link.data["cipher"].send_counter == 2
        await server.shutdown()

    run(main)


def test_reconnect_with_backoff_and_resync() -> None:
    async def main() -> None:
        registry = tp.build_registry()
        server, _d = await start(registry, EchoService())
        resynced = asyncio.Event()

        async def resync(core: ClientCore) -> None:
            await login(core, 1)
            resynced.set()

        core = ClientCore(registry, host=HOST, port=server.port, backoff_initial=0.05, on_resync=resync)
        await core.connect()
        await login(core, 1)
        await core.send("ECHO_REQ", tp.Echo(text="kick me"))
        await asyncio.wait_for(resynced.wait(), 5)
        assert core.reconnects == 1
        reply = await core.call("ECHO_REQ", tp.Echo(text="back"))
        assert reply is not None and reply.text == "BACK"
        await core.close()
        await server.shutdown()

    run(main)


async def http_login_service(reply: dict[str, Any]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps(reply).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, HOST, 0)


def test_connect_through_the_login_service() -> None:
    async def main() -> None:
        registry = tp.build_registry()
        server, _d = await start(registry, EchoService())
        good = await http_login_service(
            {
                "code": 0,
                "msg": "",
                "priorIP": HOST,
                "backupIP": HOST,
                "port": str(server.port),
                "msfsPrior": "",
                "msfsBackup": "",
                "discovery": "",
            }
        )
        full = await http_login_service({"code": 2, "msg": "all msg servers are full"})
        url = f"http://{HOST}:{good.sockets[0].getsockname()[1]}/msg_server"
        async with ClientCore(registry, login_url=url) as core:
            assert (core.host, core.port) == (HOST, server.port)
            assert (await login(core, 4)).user_id == 4
        refused = ClientCore(
            registry, login_url=f"http://{HOST}:{full.sockets[0].getsockname()[1]}/msg_server"
        )
        with pytest.raises(LoginServiceError) as info:
            await refused.connect()
        assert info.value.code == 2
        for s in (good, full):
            s.close()
        await server.shutdown()

    run(main)


# -- the generated TeamTalk stack -------------------------------------------------------------------------
def generated_msg_service() -> tuple[Registry, Any, Any, Any]:
    registry_mod = pytest.importorskip("generated.teamtalk.registry")
    servers = pytest.importorskip("generated.teamtalk.servers")
    login_pb2 = pytest.importorskip("generated.teamtalk.IM_Login_pb2")
    message_pb2 = pytest.importorskip("generated.teamtalk.IM_Message_pb2")

    class MsgService(servers.MsgServiceBase):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.sessions: dict[int, Link] = {}

        async def on_cid_login_req_userlogin(self, ctx: Context, msg: Any) -> Any:
            if msg.password != "5f4dcc3b5aa765d61d8327deb882cf99":  # md5("password"), as clients send it
                ctx.close("bad password")
                return login_pb2.IMLoginRes(server_time=1, result_code=6)
            user_id = int(msg.user_name.removeprefix("user"))
            older = self.sessions.get(user_id)
            if older is not None:  # same user, same class: kick the older session
                ctx.push(older, "CID_LOGIN_KICK_USER", login_pb2.IMKickUser(user_id=user_id, kick_reason=1))
            ctx.authenticate(user_id, msg.client_type)
            self.sessions[user_id] = ctx.link
            return login_pb2.IMLoginRes(server_time=1700000000, result_code=0, online_status=1)

        async def on_cid_msg_time_request(self, ctx: Context, msg: Any) -> Any:
            return message_pb2.IMClientTimeRsp(server_time=1700000001)

    async def not_here(self: Any, ctx: Context, msg: Any) -> None:
        return None

    # Fill every other abstract handler: this test exercises the runtime, not the services.
    for name in list(MsgService.__abstractmethods__):
        setattr(MsgService, name, not_here)
    MsgService.__abstractmethods__ = frozenset()
    return registry_mod.REGISTRY, MsgService(), login_pb2, message_pb2


def test_generated_server_base_over_loopback() -> None:
    registry, service, login_pb2, message_pb2 = generated_msg_service()
    clients = pytest.importorskip("generated.teamtalk.clients")

    def login_req(user: str, password: str = "5f4dcc3b5aa765d61d8327deb882cf99") -> Any:
        return login_pb2.IMLoginReq(user_name=user, password=password, online_status=1, client_type=1)

    async def main() -> None:
        server, _d = await start(registry, service)
        first = ClientCore(registry, host=HOST, port=server.port, reconnect=False)
        await first.connect()
        tt = clients.TeamtalkClient(first)
        res = await tt.login_req_userlogin(login_req("user7"))
        assert res.result_code == 0 and res.server_time == 1700000000
        rsp = await first.call("CID_MSG_TIME_REQUEST", message_pb2.IMClientTimeReq())
        assert rsp is not None and rsp.server_time == 1700000001

        # heartbeat echo, on a raw socket
        reader, writer = await asyncio.open_connection(HOST, server.port)
        beat = encode_frame(7, 0x0701, 3)
        writer.write(beat)
        assert await asyncio.wait_for(reader.readexactly(16), 5) == beat
        writer.write(HEADER.pack(3, 1, 0, 1, 0x0103, 1, 0))  # a bad frame closes only this connection
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()

        # a push: the same user logging in again kicks the first session
        second = ClientCore(registry, host=HOST, port=server.port, reconnect=False)
        await second.connect()
        await second.call("CID_LOGIN_REQ_USERLOGIN", login_req("user7"))
        info, kick = await asyncio.wait_for(anext(first.pushes()), 5)
        assert info.name == "CID_LOGIN_KICK_USER" and kick.user_id == 7 and kick.kick_reason == 1

        # a wrong password is answered, then that connection closes; the others carry on
        third = ClientCore(registry, host=HOST, port=server.port, reconnect=False)
        await third.connect()
        refused = await third.call("CID_LOGIN_REQ_USERLOGIN", login_req("user8", "nope"))
        assert refused is not None and refused.result_code == 6
        await asyncio.wait_for(third.link.closed, 5)  # type: ignore[union-attr]
        rsp = await second.call("CID_MSG_TIME_REQUEST", message_pb2.IMClientTimeReq())
        assert rsp is not None and rsp.server_time == 1700000001
        for core in (first, second, third):
            await core.close()
        await server.shutdown()

    run(main)
