"""Integration: the messaging core as separate processes (one per service instance, or one per shard:
runtime.cluster.layout); SIGKILL of a router, of biz (then restarted) and of a msg server (then restarted).
The router and biz kills need the split layout (in the sharded one they share the senders' process); the msg
server kill runs in both (sharded: its shard, with its router)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.cluster.config import ClusterConfig, parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor, Worker
from tests.integration.conftest import NAMES, PASSWORD, WINDOWS, Client, cluster_config, md5hex, seed_users

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]


async def login(eps: list[Any], index: int, name: str) -> Client:
    ep = eps[index]
    core = ClientCore(REGISTRY, host=ep.host, port=ep.port, reconnect=False)
    await core.connect()
    req = REGISTRY.by_name("CID_LOGIN_REQ_USERLOGIN").message_class(
        user_name=name, password=md5hex(PASSWORD), online_status=1, client_type=WINDOWS
    )
    res: Any = await core.call("CID_LOGIN_REQ_USERLOGIN", req)
    assert res.result_code == 0, res
    return Client(core, res.user_info.user_id, name)


@dataclass
class Conversation:
    """A process cluster with three senders on msg server 0 talking to three receivers on msg server 1."""

    config: ClusterConfig
    sup: ProcessSupervisor
    senders: list[Client]
    receivers: list[Client]
    clients: list[Client] = field(default_factory=list)

    def endpoints(self) -> list[Any]:
        """The msg servers' client endpoints, by instance (ports change when a server restarts)."""
        eps = RunDirDiscovery(self.config.run_dir).endpoints("msg", "client")
        return sorted(eps, key=lambda e: e.instance)

    def worker(self, service: str, instance: int = 0) -> Worker:
        """The worker process hosting that instance (in the sharded layout, its shard's)."""
        (found,) = [w for w in self.sup.workers if w.hosts(service, instance)]
        return found

    async def kill(self, service: str, instance: int = 0) -> Worker:
        """SIGKILL one worker and wait until it is gone."""
        victim = self.worker(service, instance)
        os.kill(victim.process.pid, signal.SIGKILL)
        assert await victim.process.wait() == -signal.SIGKILL
        return victim

    def talk(self, per_sender: int, send: Callable[[Client, Client, int], Awaitable[int]]) -> list[Any]:
        """One task per pair sending `per_sender` messages 20 ms apart; each returns the acked msg ids."""

        async def pair(a: Client, b: Client) -> list[int]:
            ids = []
            for i in range(per_sender):
                ids.append(await send(a, b, i))
                await asyncio.sleep(0.02)
            return ids

        return [asyncio.create_task(pair(a, b)) for a, b in zip(self.senders, self.receivers, strict=True)]


@contextlib.asynccontextmanager
async def conversation(tmp_path: Path, layout: str | None = None) -> AsyncIterator[Conversation]:
    await seed_users(tmp_path, NAMES[:8])
    config = parse_config(cluster_config(tmp_path, layout=layout))
    sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
    await sup.start()
    conv = Conversation(config, sup, [], [])
    try:
        eps = conv.endpoints()
        conv.senders = [await login(eps, 0, f"user0{i}") for i in range(3)]
        conv.receivers = [await login(eps, 1, f"user0{i + 4}") for i in range(3)]
        conv.clients = conv.senders + conv.receivers
        yield conv
    finally:
        for c in conv.clients:
            await c.close()
        await sup.stop()


def message(a: Client, i: int) -> bytes:
    return f"{a.user_id}:{i}".encode()


SPLIT_ONLY = "in the sharded layout the router and biz share the senders' msg server's process"


def test_sigkill_of_the_master_router_loses_no_message(tmp_path: Path, cluster_layout: str) -> None:
    if cluster_layout != "split":
        pytest.skip(SPLIT_ONLY)

    async def main() -> None:
        async with conversation(tmp_path) as conv:
            per_sender = 15

            async def send(a: Client, b: Client, i: int) -> int:
                return int((await a.text(b.user_id, f"m{i}".encode())).msg_id)

            tasks = conv.talk(per_sender, send)
            await conv.receivers[0].wait_for("CID_MSG_DATA", count=3, timeout=10)
            await conv.kill("router", 0)
            sent = await asyncio.gather(*tasks)
            for b, ids in zip(conv.receivers, sent, strict=True):
                got = await b.wait_for("CID_MSG_DATA", count=per_sender, timeout=15)
                assert [m.msg_id for m in got] == ids  # everything, in order, nothing twice

    asyncio.run(main())


def test_sigkill_of_biz_and_a_restart_store_and_deliver_every_message_once(
    tmp_path: Path, cluster_layout: str
) -> None:
    """biz dies mid-conversation and is started again: what it had committed without answering is answered
    from the database when msg resends it, so each message is acked with one id, stored once, delivered once;
    a send refused while biz was down (msg id 0) is sent again by the client, as an SDK does."""
    if cluster_layout != "split":
        pytest.skip(SPLIT_ONLY)

    async def main() -> None:
        async with conversation(tmp_path) as conv:
            per_sender = 25

            async def send(a: Client, b: Client, i: int) -> int:
                while (ack := await a.text(b.user_id, message(a, i))).msg_id == 0:
                    await asyncio.sleep(0.2)
                return int(ack.msg_id)

            tasks = conv.talk(per_sender, send)
            await conv.receivers[0].wait_for("CID_MSG_DATA", count=5, timeout=10)
            with pytest.raises(ValueError, match="still running"):
                await conv.sup.restart("biz", 0)
            await conv.kill("biz", 0)
            assert not any(t.done() for t in tasks)  # killed mid-conversation
            await conv.sup.restart("biz", 0)
            sent = await asyncio.gather(*tasks)
            for a, b, ids in zip(conv.senders, conv.receivers, sent, strict=True):
                assert len(set(ids)) == per_sender
                got = await b.wait_for("CID_MSG_DATA", count=per_sender, timeout=15)
                assert [m.msg_id for m in got] == ids  # everything, in order, nothing twice
                stored = sorted(m.msg_data for m in await a.history(b.user_id))
                assert stored == sorted(message(a, i) for i in range(per_sender))  # once each

    asyncio.run(main())


def test_sigkill_of_the_receivers_msg_server_loses_no_message(tmp_path: Path) -> None:
    """The msg server holding the receivers dies mid-conversation: senders keep being acked (store-then-ack
    does not need the receiver's server), and after a restart the receivers find every acked message, once,
    in history, and the unread count says how many they have not read."""

    async def main() -> None:
        async with conversation(tmp_path) as conv:
            per_sender = 20

            async def send(a: Client, b: Client, i: int) -> int:
                ack = await a.text(b.user_id, message(a, i))
                assert ack.msg_id > 0
                return int(ack.msg_id)

            tasks = conv.talk(per_sender, send)
            await conv.receivers[0].wait_for("CID_MSG_DATA", count=3, timeout=10)
            await conv.kill("msg", 1)
            assert not any(t.done() for t in tasks)  # killed mid-conversation
            sent = await asyncio.gather(*tasks)
            await conv.sup.restart("msg", 1)
            eps = conv.endpoints()
            for a, b, ids in zip(conv.senders, conv.receivers, sent, strict=True):
                back = await login(eps, 1, b.name)
                conv.clients.append(back)
                unread = await back.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)
                (info,) = [u for u in unread.unreadinfo_list if u.session_id == a.user_id]
                assert info.unread_cnt == per_sender  # none was read
                assert (
                    sorted(m.msg_id for m in await back.history(a.user_id)) == ids
                )  # every acked message, once

    asyncio.run(main())
