"""Integration: pushes to offline mobiles (runtime.push) on a real cluster. A mobile client registers
its token and goes away; a message stored for it gives exactly one notification (preview for text, none
for burn); an online mobile, a shielded user and the sender get none; a group message notifies each
offline member once; a webhook that fails is retried and counted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from runtime.push import LocalSink
from tests.integration.conftest import ANDROID, IOS, Client, TestCluster, run_in_cluster

pytestmark = pytest.mark.integration


def sent(c: TestCluster) -> list[Any]:
    """Every notification the routers' local sinks accepted."""
    out: list[Any] = []
    for router in c.services("router"):
        sink = router.push_dispatcher.sink
        assert isinstance(sink, LocalSink)
        out += sink.sent
    return out


async def register(c: TestCluster, name: str, token: str, client_type: int = IOS, index: int = 1) -> Client:
    phone = await c.login(name, index, client_type)
    rsp = await phone.call(
        "CID_LOGIN_REQ_DEVICETOKEN", user_id=0, device_token=token, client_type=client_type
    )
    assert rsp is not None
    return phone


async def settle(c: TestCluster, count: int, timeout: float = 5.0) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(sent(c)) < count and loop.time() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # nothing more arrives
    return sent(c)


def test_offline_mobiles_get_one_push_per_message(tmp_path: Path) -> None:
    async def body(c: TestCluster) -> None:
        bob, carol = c.users["user01"], c.users["user02"]
        await (await register(c, "user01", "tok-bob")).close()  # bob's phone is offline now
        carol_phone = await register(c, "user02", "tok-carol", ANDROID)  # carol's stays online
        alice = await c.login("user00", 0)
        ack = await alice.text(bob, b"see you at 10")
        (note,) = await settle(c, 1)
        assert (note.user_id, note.token, note.client_type) == (bob, "tok-bob", IOS)
        assert (note.from_user_id, note.session_type, note.session_id, note.msg_id) == (
            alice.user_id,
            1,
            alice.user_id,
            ack.msg_id,
        )
        assert note.preview == "see you at 10" and not note.burn
        await alice.text(carol, b"online phone: no push")
        # Burn after reading: a push, but no content.
        burn = await alice.call(
            "CID_EXT_MSG_BURN",
            from_user_id=alice.user_id,
            to_session_id=bob,
            msg_id=0,
            create_time=0,
            msg_type=1,
            msg_data=b"secret",
        )
        assert burn.msg_id
        notes = await settle(c, 2)
        assert [(n.user_id, n.preview, n.burn) for n in notes] == [
            (bob, "see you at 10", False),
            (bob, None, True),
        ]
        # A user who shields pushes gets none.
        phone = await c.login("user01", 1, IOS)
        rsp = await phone.call("CID_LOGIN_REQ_PUSH_SHIELD", user_id=0, shield_status=1)
        assert rsp.result_code == 0
        await phone.close()
        await asyncio.sleep(0.2)
        await alice.text(bob, b"shh")
        assert len(await settle(c, 3, timeout=0.5)) == 2
        # A group message: each offline member with a token once, never the sender.
        group = await alice.call(
            "CID_GROUP_CREATE_REQUEST",
            user_id=0,
            group_type=2,
            group_name="g",
            group_avatar="",
            member_id_list=[bob, carol, c.users["user03"]],
        )
        await (await register(c, "user03", "tok-dave", ANDROID)).close()
        await asyncio.sleep(0.2)
        gack = await alice.text(group.group_id, b"to the group", group=True)
        notes = await settle(c, 3)
        assert [(n.user_id, n.session_type, n.session_id, n.msg_id) for n in notes[2:]] == [
            (c.users["user03"], 2, group.group_id, gack.msg_id)
        ]
        for router in c.services("router"):
            d = router.push_dispatcher
            assert d.m_failed.value == 0 and d.m_dropped.value == 0
        assert sum(r.push_dispatcher.m_sent.value for r in c.services("router")) == 3
        # bob's shield held back two: "shh", and the group message (he is an offline member too).
        assert sum(r.push.m_shielded.value for r in c.services("router")) == 2
        await carol_phone.close()

    run_in_cluster(tmp_path, body, router={"push": {"sink": "local", "path": "push.jsonl"}})
    lines = [json.loads(line) for line in (tmp_path / "push.jsonl").read_text().splitlines()]
    assert [line["token"] for line in lines] == ["tok-bob", "tok-bob", "tok-dave"]
    assert lines[1]["preview"] is None  # the burn message's content never left the server


def test_a_failing_webhook_is_retried_and_counted(tmp_path: Path) -> None:
    got: list[dict[str, Any]] = []
    answers = [503, 429, 200]

    async def hook(request: web.Request) -> web.Response:
        doc = await request.json()
        status = answers.pop(0) if answers else 200
        if status == 200:
            got.append(doc)
        return web.Response(status=status)

    async def body(c: TestCluster) -> None:
        await (await register(c, "user01", "tok")).close()
        alice = await c.login("user00", 0)
        await alice.text(c.users["user01"], b"hi")
        for _ in range(300):
            if got:
                break
            await asyncio.sleep(0.02)
        assert [d["preview"] for d in got] == ["hi"]
        routers = c.services("router")
        assert sum(r.push_dispatcher.m_retries.value for r in routers) == 2
        assert sum(r.push_dispatcher.m_sent.value for r in routers) == 1

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/push", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            push = {"sink": "webhook", "url": f"http://127.0.0.1:{port}/push", "backoff": 0.05, "timeout": 2}
            await asyncio.to_thread(run_in_cluster, tmp_path, body, router={"push": push})
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_shield_off_resumes_pushes_and_the_query_reports_it(tmp_path: Path) -> None:
    """Push shield is TeamTalk's on/off do-not-disturb (PushShieldStatus: no hours in its data): set and
    cleared by the user's own client, read back by the query, and obeyed for each message at the time it is
    stored."""

    async def body(c: TestCluster) -> None:
        bob = c.users["user01"]
        phone = await register(c, "user01", "tok-bob")
        assert (await phone.call("CID_LOGIN_REQ_PUSH_SHIELD", user_id=0, shield_status=1)).result_code == 0
        query = await phone.call("CID_LOGIN_REQ_QUERY_PUSH_SHIELD", user_id=0)
        assert (query.result_code, query.shield_status) == (0, 1)
        refused = await phone.call("CID_LOGIN_REQ_PUSH_SHIELD", user_id=0, shield_status=7)
        assert refused.result_code != 0  # neither on nor off: refused, the shield stays on
        await phone.close()
        alice = await c.login("user00", 0)
        await alice.text(bob, b"while shielded")
        assert await settle(c, 1, timeout=0.5) == []
        phone = await c.login("user01", 1, IOS)
        query = await phone.call("CID_LOGIN_REQ_QUERY_PUSH_SHIELD", user_id=0)
        assert query.shield_status == 1
        assert (await phone.call("CID_LOGIN_REQ_PUSH_SHIELD", user_id=0, shield_status=0)).result_code == 0
        await phone.close()
        await asyncio.sleep(0.2)
        ack = await alice.text(bob, b"shield off")
        (note,) = await settle(c, 1)
        assert (note.user_id, note.msg_id, note.preview) == (bob, ack.msg_id, "shield off")
        assert sum(r.push.m_shielded.value for r in c.services("router")) == 1

    run_in_cluster(tmp_path, body, router={"push": {"sink": "local"}})


@pytest.mark.parametrize(("status", "attempts"), [(503, 3), (400, 1)], ids=["retried-then-dropped", "final"])
def test_a_failing_webhook_is_given_up_and_counted(tmp_path: Path, status: int, attempts: int) -> None:
    """5xx/429 are retried up to `max_attempts` in all, any other error status is final: then the notification
    is dropped and counted as failed, and the router goes on (the next message is pushed)."""
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        doc = await request.json()
        hits.append(doc["preview"])
        return web.Response(status=200 if doc["preview"] == "next" else status)

    async def body(c: TestCluster) -> None:
        await (await register(c, "user01", "tok")).close()
        alice = await c.login("user00", 0)
        await alice.text(c.users["user01"], b"doomed")
        await alice.text(c.users["user01"], b"next")
        routers = c.services("router")
        for _ in range(300):
            if sum(r.push_dispatcher.m_sent.value + r.push_dispatcher.m_failed.value for r in routers) >= 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # no further attempt comes
        # Each router has its own queue: the two messages may go through either, in any order.
        assert sorted(hits) == ["doomed"] * attempts + ["next"]
        assert sum(r.push_dispatcher.m_failed.value for r in routers) == 1
        assert sum(r.push_dispatcher.m_retries.value for r in routers) == attempts - 1
        assert sum(r.push_dispatcher.m_sent.value for r in routers) == 1

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/push", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            push = {
                "sink": "webhook",
                "url": f"http://127.0.0.1:{port}/push",
                "backoff": 0.02,
                "timeout": 2,
                "max_attempts": 3,
            }
            await asyncio.to_thread(run_in_cluster, tmp_path, body, router={"push": push})
        finally:
            await runner.cleanup()

    asyncio.run(main())
