"""Integration: the messaging core as separate processes (one per service instance); SIGKILL of a router, of
biz (then restarted) and of a msg server (then restarted)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.cluster.config import parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor
from tests.integration.conftest import NAMES, PASSWORD, WINDOWS, Client, cluster_config, md5hex, seed_users

pytestmark = pytest.mark.integration


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


def test_sigkill_of_the_master_router_loses_no_message(tmp_path: Path) -> None:
    async def main() -> None:
        await seed_users(tmp_path, NAMES[:8])
        config = parse_config(cluster_config(tmp_path))
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        clients: list[Client] = []
        try:
            eps = sorted(RunDirDiscovery(config.run_dir).endpoints("msg", "client"), key=lambda e: e.instance)
            senders = [await login(eps, 0, f"user0{i}") for i in range(3)]
            receivers = [await login(eps, 1, f"user0{i + 4}") for i in range(3)]
            clients = senders + receivers
            per_sender = 15

            async def talk(a: Client, b: Client) -> list[int]:
                ids = []
                for i in range(per_sender):
                    ids.append((await a.text(b.user_id, f"m{i}".encode())).msg_id)
                    await asyncio.sleep(0.02)
                return ids

            tasks = [asyncio.create_task(talk(a, b)) for a, b in zip(senders, receivers, strict=True)]
            await receivers[0].wait_for("CID_MSG_DATA", count=3, timeout=10)
            (router0,) = [w for w in sup.workers if w.service == "router" and w.instance == 0]
            os.kill(router0.process.pid, signal.SIGKILL)
            sent = await asyncio.gather(*tasks)
            for b, ids in zip(receivers, sent, strict=True):
                got = await b.wait_for("CID_MSG_DATA", count=per_sender, timeout=15)
                assert [m.msg_id for m in got] == ids  # everything, in order, nothing twice
            assert await router0.process.wait() == -signal.SIGKILL
        finally:
            for c in clients:
                await c.close()
            await sup.stop()

    asyncio.run(main())


def test_sigkill_of_biz_and_a_restart_store_and_deliver_every_message_once(tmp_path: Path) -> None:
    """biz dies mid-conversation and is started again: what it had committed without answering is answered
    from the database when msg resends it, so each message is acked with one id, stored once, delivered once;
    a send refused while biz was down (msg id 0) is sent again by the client, as an SDK does."""

    async def main() -> None:
        await seed_users(tmp_path, NAMES[:8])
        config = parse_config(cluster_config(tmp_path))
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        clients: list[Client] = []
        try:
            eps = sorted(RunDirDiscovery(config.run_dir).endpoints("msg", "client"), key=lambda e: e.instance)
            senders = [await login(eps, 0, f"user0{i}") for i in range(3)]
            receivers = [await login(eps, 1, f"user0{i + 4}") for i in range(3)]
            clients = senders + receivers
            per_sender = 25

            async def talk(a: Client, b: Client) -> list[int]:
                ids = []
                for i in range(per_sender):
                    while (ack := await a.text(b.user_id, f"{a.user_id}:{i}".encode())).msg_id == 0:
                        await asyncio.sleep(0.2)
                    ids.append(ack.msg_id)
                    await asyncio.sleep(0.02)
                return ids

            tasks = [asyncio.create_task(talk(a, b)) for a, b in zip(senders, receivers, strict=True)]
            await receivers[0].wait_for("CID_MSG_DATA", count=5, timeout=10)
            (biz,) = [w for w in sup.workers if w.service == "biz"]
            with pytest.raises(ValueError, match="still running"):
                await sup.restart("biz", 0)
            os.kill(biz.process.pid, signal.SIGKILL)
            assert await biz.process.wait() == -signal.SIGKILL
            assert not any(t.done() for t in tasks)  # killed mid-conversation
            await sup.restart("biz", 0)
            sent = await asyncio.gather(*tasks)
            for a, b, ids in zip(senders, receivers, sent, strict=True):
                assert len(set(ids)) == per_sender
                got = await b.wait_for("CID_MSG_DATA", count=per_sender, timeout=15)
                assert [m.msg_id for m in got] == ids  # everything, in order, nothing twice
                page = await a.call(
                    "CID_MSG_LIST_REQUEST",
                    user_id=0,
                    session_type=1,
                    session_id=b.user_id,
                    msg_id_begin=0,
                    msg_cnt=100,
                )
                stored = sorted(m.msg_data for m in page.msg_list)
                assert stored == sorted(f"{a.user_id}:{i}".encode() for i in range(per_sender))  # once each
        finally:
            for c in clients:
                await c.close()
            await sup.stop()

    asyncio.run(main())


def test_sigkill_of_the_receivers_msg_server_loses_no_message(tmp_path: Path) -> None:
    """The msg server holding the receivers dies mid-conversation: senders keep being acked (store-then-ack
    does not need the receiver's server), and after a restart the receivers find every acked message, once,
    in history, and the unread count says how many they have not read."""

    async def main() -> None:
        await seed_users(tmp_path, NAMES[:8])
        config = parse_config(cluster_config(tmp_path))
        sup = ProcessSupervisor(config, "generated.teamtalk", console=lambda _s: None)
        await sup.start()
        clients: list[Client] = []
        try:
            eps = sorted(RunDirDiscovery(config.run_dir).endpoints("msg", "client"), key=lambda e: e.instance)
            senders = [await login(eps, 0, f"user0{i}") for i in range(3)]
            receivers = [await login(eps, 1, f"user0{i + 4}") for i in range(3)]
            clients = senders + receivers
            per_sender = 20

            async def talk(a: Client, b: Client) -> list[int]:
                ids = []
                for i in range(per_sender):
                    ack = await a.text(b.user_id, f"{a.user_id}:{i}".encode())
                    assert ack.msg_id > 0
                    ids.append(ack.msg_id)
                    await asyncio.sleep(0.02)
                return ids

            tasks = [asyncio.create_task(talk(a, b)) for a, b in zip(senders, receivers, strict=True)]
            await receivers[0].wait_for("CID_MSG_DATA", count=3, timeout=10)
            (msg1,) = [w for w in sup.workers if w.service == "msg" and w.instance == 1]
            os.kill(msg1.process.pid, signal.SIGKILL)
            assert await msg1.process.wait() == -signal.SIGKILL
            assert not any(t.done() for t in tasks)  # killed mid-conversation
            sent = await asyncio.gather(*tasks)
            await sup.restart("msg", 1)
            eps = sorted(RunDirDiscovery(config.run_dir).endpoints("msg", "client"), key=lambda e: e.instance)
            for a, b, ids in zip(senders, receivers, sent, strict=True):
                back = await login(eps, 1, b.name)
                clients.append(back)
                unread = await back.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=0)
                (info,) = [u for u in unread.unreadinfo_list if u.session_id == a.user_id]
                assert info.unread_cnt == per_sender  # none was read
                page = await back.call(
                    "CID_MSG_LIST_REQUEST",
                    user_id=0,
                    session_type=1,
                    session_id=a.user_id,
                    msg_id_begin=0,
                    msg_cnt=100,
                )
                assert sorted(m.msg_id for m in page.msg_list) == ids  # every acked message, once
        finally:
            for c in clients:
                await c.close()
            await sup.stop()

    asyncio.run(main())
