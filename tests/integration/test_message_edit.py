"""Integration: editing a sent message (IM.Ext CID_EXT_MSG_EDIT_*) through the shipped chat client, on both
backends: only the sender, only text, only within the edit window; every device of both sides is told;
history shows the latest text; a refused edit changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from tests.integration.conftest import PASSWORD, TestCluster, WithCluster, run_in_cluster
from ttgen.commands.chat import ChatSession, Target, execute
from ttgen.stack import load_stack

pytestmark = pytest.mark.integration
STACK = load_stack("teamtalk")


async def chat(c: TestCluster, name: str, index: int, client_type: int = 1) -> tuple[ChatSession, list[str]]:
    lines: list[str] = []
    core = ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(index), reconnect=False)
    session = ChatSession(STACK, core, lines.append)
    if client_type != 1:  # a second device of the same user: a mobile, so it does not replace the PC
        import ttgen.commands.chat as chat_mod

        original = chat_mod.CLIENT_WINDOWS
        chat_mod.CLIENT_WINDOWS = client_type
        try:
            await session.login(name, PASSWORD)
        finally:
            chat_mod.CLIENT_WINDOWS = original
    else:
        await session.login(name, PASSWORD)
    return session, lines


async def until(pred: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_edit_reaches_every_device_and_history_shows_the_latest_text(
    with_cluster: WithCluster, tmp_path: Path
) -> None:
    async def body(c: TestCluster) -> None:
        alice, alice_lines = await chat(c, "user00", 0)
        alice_phone, _ = await chat(c, "user00", 1, client_type=0x12)
        bob, bob_lines = await chat(c, "user01", 1)
        state: dict[str, Target] = {}
        out: list[str] = []
        alice.say = out.append
        await execute(alice, "/msg user01 meet at 10", state)
        msg_id = int(out[-1].rsplit("msg ", 1)[1].rstrip(")"))
        await bob.wait_received("meet at 10")
        await execute(alice, f"/edit {msg_id} meet at 11", state)
        assert out[-1] == f"edited msg {msg_id} in user01"
        await until(
            lambda: (msg_id, "meet at 11") in bob.edits and (msg_id, "meet at 11") in alice_phone.edits
        )
        assert any(f"user00 edited msg {msg_id}: meet at 11" in line for line in bob_lines)
        for who in (alice, bob):
            peer = who.target("user01" if who is alice else "user00")
            assert [t for mid, _, t in await who.history(peer) if mid == msg_id] == ["meet at 11"]
        # Only the sender; only text; refusals change nothing.
        bob_state = {"last": bob.target("user00")}
        bob.say = out.append
        await execute(bob, f"/edit {msg_id} hijacked", bob_state)
        assert out[-1] == f"! message {msg_id} was not edited: only its sender may edit it"
        await execute(alice, "/edit 999999 nothing", state)
        assert out[-1] == "! message 999999 was not edited: no such message"
        assert [t for mid, _, t in await bob.history(bob.target("user00")) if mid == msg_id] == ["meet at 11"]
        await asyncio.sleep(2.1)  # past the 1 s edit window of this cluster
        await execute(alice, f"/edit {msg_id} too late", state)
        assert out[-1] == f"! message {msg_id} was not edited: too late to edit it"
        # A group message is edited for every member.
        await execute(alice, "/newgroup g user01", state)
        await execute(alice, "hello group", state)
        gid = int(out[-1].rsplit("msg ", 1)[1].rstrip(")"))
        await execute(alice, f"/edit {gid} hello, group", state)
        await until(lambda: (gid, "hello, group") in bob.edits)
        assert [t for mid, _, t in await bob.history(bob.target("g", group=True)) if mid == gid] == [
            "hello, group"
        ]
        del alice_lines
        for s in (alice, alice_phone, bob):
            await s.close()

    run_in_cluster(tmp_path, body, storage={**with_cluster.storage_cfg, "edit_window": 1})
