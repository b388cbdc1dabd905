"""Integration: the login that never sends TeamTalk's MD5-hex credential (CID_EXT_PASSWORD_LOGIN_REQ),
through the shipped client (ClientCore + SessionLogin) and a recording proxy: the password travels sealed, a
wrong one is refused and counted by the lockout, a recorded transcript replayed on a new connection logs
nobody in, the login is refused outside a secure session, TeamTalk's MD5 login still works, and `md5_login`
switches that off."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.client_login import LoginRefused, SessionLogin
from tests.http_support import post_json
from tests.integration.conftest import AUTH, PASSWORD, WINDOWS, TestCluster, md5hex
from tests.integration.file_support import run_file_cluster
from tests.integration.gateway_support import GATEWAY, wait_gateway

pytestmark = pytest.mark.integration

REFUSED = 6  # IM.BaseDefine.ResultType REFUSE_REASON_DB_VALIDATE_FAILED
LOCKOUT = {
    "pair_free_failures": 5,
    "address_free_failures": 12,
    "base_delay": 30,
    "max_pending_per_address": 1000,
}


def new(command: str, **fields: Any) -> Any:
    return REGISTRY.by_name(command).message_class(**fields)


class Recorder:
    """A TCP proxy on 127.0.0.1 in front of a msg server, keeping every byte the client sent and received."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = bytearray()  # client -> server
        self.down = bytearray()  # server -> client
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    keep += data
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for task in (pump(reader, up_w, self.up), pump(up_r, writer, self.down)):
            t = asyncio.get_running_loop().create_task(task)
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.tasks):
            t.cancel()


async def replay(port: int, transcript: bytes) -> bytes:
    """Send a recorded client transcript on a fresh connection; whatever the server answers within 2 s."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(transcript)
    await writer.drain()
    got = bytearray()
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(2.0):
            while data := await reader.read(65536):
                got += data
    writer.close()
    return bytes(got)


def command_ids(stream: bytes) -> list[int]:
    """Command ids of the frames in a byte stream (TeamTalk header: length u32, version, flag, service id,
    command id, seq, reserved: u16 each)."""
    ids, at = [], 0
    while at + 16 <= len(stream):
        length = int.from_bytes(stream[at : at + 4], "big")
        ids.append(int.from_bytes(stream[at + 10 : at + 12], "big"))
        at += max(length, 16)
    return ids


async def pair_failures(c: TestCluster, name: str) -> int:
    (biz,) = c.services("biz")
    return int((await biz.auth.authenticator.limiter.failures(name, "127.0.0.1"))["pair"])


def online(c: TestCluster, user_id: int) -> int:
    return sum(len(list(m.local.of(user_id))) for m in c.services("msg"))


def test_shipped_client_logs_in_with_the_sealed_password_and_a_transcript_does_not_replay(
    with_cluster: Callable[..., None],
) -> None:
    async def body(c: TestCluster) -> None:
        proxy = Recorder(c.msg_port(0))
        port = await proxy.start()
        try:
            core = ClientCore(REGISTRY, host="127.0.0.1", port=port, reconnect=False)
            session = SessionLogin(core, "user01", PASSWORD, use_tickets=False)
            info = await session.login()
            assert info.user_id == c.users["user01"] and core.encrypted and not session.sent_md5
            assert online(c, c.users["user01"]) == 1
            await core.close()
            await asyncio.sleep(0.1)
            # Neither the password nor its MD5 hex crossed the wire, in either direction.
            for secret in (PASSWORD.encode(), md5hex(PASSWORD).encode(), b"user01"):
                assert secret not in proxy.up and secret not in proxy.down
            # The recorded client bytes, replayed on a new connection: the handshake is answered with new
            # ephemeral keys, so the sealed login fails to open and the connection closes; nobody logs in.
            await asyncio.sleep(0.05)
            assert online(c, c.users["user01"]) == 0
            answer = await replay(c.msg_port(0), bytes(proxy.up))
            handshake_rsp = REGISTRY.by_name("CID_EXT_HANDSHAKE_RSP").command_id
            assert command_ids(answer) == [handshake_rsp]  # the handshake's answer, then the close
            assert online(c, c.users["user01"]) == 0
            assert await pair_failures(c, "user01") == 0  # nothing reached the password check
        finally:
            await proxy.close()

        # A wrong password is refused and counted by the lockout like a wrong MD5 login.
        before = await pair_failures(c, "user02")
        core = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(1), reconnect=False)
        wrong = SessionLogin(core, "user02", "not the password", use_tickets=False)
        with pytest.raises(LoginRefused) as refused:
            await wrong.login()
        assert refused.value.code == REFUSED and not wrong.sent_md5
        assert await pair_failures(c, "user02") == before + 1

        # Outside a secure session the command is refused before any check, and nothing is counted.
        plain = await c.connect(0)
        res: Any = await plain.call(
            "CID_EXT_PASSWORD_LOGIN_REQ",
            new(
                "CID_EXT_PASSWORD_LOGIN_REQ",
                user_name="user03",
                password=PASSWORD,
                online_status=1,
                client_type=WINDOWS,
            ),
        )
        assert res.result_code == REFUSED and "secure session" in res.result_string
        await asyncio.sleep(0.1)
        assert not plain.connected and online(c, c.users["user03"]) == 0
        assert await pair_failures(c, "user03") == 0

        # TeamTalk's MD5 login works unchanged (in clear, as an original client sends it), and our client
        # still falls back to it where no secure session is offered.
        legacy = await c.login("user04")
        assert legacy.user_id == c.users["user04"]
        clear = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(0), reconnect=False, encryption="off")
        fallback = SessionLogin(clear, "user05", PASSWORD, use_tickets=False)
        assert (await fallback.login()).user_id == c.users["user05"] and fallback.sent_md5
        await clear.close()
        # ... unless told not to: then nothing is sent.
        clear = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(0), reconnect=False, encryption="off")
        strict = SessionLogin(clear, "user06", PASSWORD, use_tickets=False, allow_md5=False)
        with pytest.raises(LoginRefused, match="MD5 logins are not allowed"):
            await strict.login()
        assert online(c, c.users["user06"]) == 0

    with_cluster(body)


@pytest.mark.parametrize("policy", ["secure_only", "refuse"])
def test_md5_login_policy(with_cluster: Callable[..., None], policy: str) -> None:
    async def body(c: TestCluster) -> None:
        md5 = new(
            "CID_LOGIN_REQ_USERLOGIN",
            user_name="user07",
            password=md5hex(PASSWORD),
            online_status=1,
            client_type=WINDOWS,
        )
        clear = await c.connect(0)
        res: Any = await clear.call("CID_LOGIN_REQ_USERLOGIN", md5)
        assert res.result_code == REFUSED and "MD5" in res.result_string
        sealed = await c.connect(0)
        await c.handshake(sealed)
        res = await sealed.call("CID_LOGIN_REQ_USERLOGIN", md5)
        assert (res.result_code == 0) is (policy == "secure_only"), res
        await sealed.close()
        assert await pair_failures(c, "user07") == 0  # a refused MD5 login checks no password
        # Our client's login is untouched by the policy.
        core = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(1), reconnect=False)
        session = SessionLogin(core, "user08", PASSWORD, use_tickets=False)
        assert (await session.login()).user_id == c.users["user08"] and not session.sent_md5
        await core.close()

    with_cluster(body, biz={"auth": {**AUTH, **LOCKOUT, "md5_login": policy}})


def test_gateway_refuses_password_md5_unless_allowed(tmp_path: Path) -> None:
    async def body(c: Any) -> None:
        addr = await wait_gateway(c)
        md5 = await post_json(*addr, "/api/login", {"user": "user09", "password_md5": md5hex(PASSWORD)})
        assert (md5.status, md5.json()["error_code"]) == (401, 6) and "MD5" in md5.json()["error_msg"]
        plain = await post_json(*addr, "/api/login", {"user": "user09", "password": PASSWORD})
        assert plain.status == 200 and plain.json()["user_id"] == c.users["user09"]

    biz = {"instances": 1, "auth": {**AUTH, **LOCKOUT, "md5_login": "refuse"}}
    asyncio.run(run_file_cluster(tmp_path, body, services={**GATEWAY, "biz": biz}))
