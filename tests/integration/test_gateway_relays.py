"""Integration: what routers deliver to a gateway (runtime.services.deliveries) is handled by the methods of
its generated base; message edit over long poll and the WebSocket; discovery."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.http_support import http_request
from tests.integration.conftest import ANDROID
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, WsClient, wait_gateway

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]


def test_pc_login_status_reaches_mobile_web_sessions_and_no_delivery_is_left_unhandled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        phone = await WebClient.login(addr, "user20", client_type=ANDROID)
        pc = await WebClient.login(addr, "user20")  # the same user's PC, over the gateway too
        ev = await phone.wait_for(lambda e: e["type"] == "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY")
        assert ev["data"]["user_id"] == phone.user_id and ev["data"]["login_stat"] == "USER_STATUS_ONLINE"
        tcp = await c.login("user21", 0)  # traffic of every kind a router relays to the gateway
        await tcp.text(pc.user_id, b"hi")
        await pc.wait_for(lambda e: e["type"] == "msg" and e["text"] == "hi")
        await pc.post("/api/logout", {})
        off = await phone.wait_for(
            lambda e: (
                e["type"] == "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY"
                and e["data"]["login_stat"] == "USER_STATUS_OFFLINE"
            )
        )
        assert off["data"]["user_id"] == phone.user_id
        assert not [
            e for e in pc.events if e["type"] == "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY"
        ]  # mobiles only

    with caplog.at_level(logging.WARNING):
        asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
    unhandled = [r.getMessage() for r in caplog.records if "not handled by this service" in r.getMessage()]
    assert unhandled == []


def test_edit_over_long_poll_and_websocket_reaches_every_device_and_history(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        alice = await WebClient.login(addr, "user22")
        alice_ws_login = await WebClient.login(addr, "user22", client_type=ANDROID)
        alice_ws = await WsClient.open(addr, alice_ws_login.token)
        bob = await WebClient.login(addr, "user23")
        bob_tcp = await c.login("user23", 1, ANDROID)
        a, b = alice.user_id, bob.user_id
        # An extension command opts the TCP connection in to IM.Ext pushes (edit notices are one).
        await bob_tcp.send("CID_EXT_TYPING", from_user_id=0, to_session_id=a, session_type=1, state=3)
        try:
            sent = await alice.send(b, "lunch at 12")
            assert sent["error_code"] == 0
            await bob.wait_for(lambda e: e["type"] == "msg" and e["msg_id"] == sent["msg_id"])
            # Long poll: the sender edits; the peer's sessions, its TCP device and the sender's other
            # session all hear of it.
            fields = {"session_id": b, "session_type": 1, "msg_id": sent["msg_id"]}
            rsp = await alice.post("/api/edit", {**fields, "text": "lunch at 1 <b>pm</b>"})
            assert rsp.status == 200 and rsp.json()["error_code"] == 0 and rsp.json()["edit_time"] > 0
            ev = await bob.wait_for(lambda e: e["type"] == "edit")
            assert (ev["msg_id"], ev["from"], ev["to"], ev["text"]) == (
                sent["msg_id"],
                a,
                b,
                "lunch at 1 <b>pm</b>",
            )
            other = await alice_ws.wait_for(lambda e: e["type"] == "edit")
            assert other["text"] == "lunch at 1 <b>pm</b>"
            (note,) = await bob_tcp.wait_for("CID_EXT_MSG_EDIT_NOTIFY")
            assert (note.msg_id, note.msg_data) == (sent["msg_id"], b"lunch at 1 <b>pm</b>")
            assert not [e for e in alice.events if e["type"] == "edit"]  # the editing session has the answer
            # WebSocket: the same op.
            again = await alice_ws.request("edit", **fields, text="lunch at 2")
            assert again["error_code"] == 0
            await bob.wait_for(lambda e: e["type"] == "edit" and e["text"] == "lunch at 2")
            # Refusals change nothing: not the sender, no such message, empty text, too long.
            for who, doc, status, code in [
                (
                    bob,
                    {"session_id": a, "session_type": 1, "msg_id": sent["msg_id"], "text": "mine now"},
                    403,
                    22,
                ),
                (alice, {**fields, "msg_id": sent["msg_id"] + 1000, "text": "x"}, 404, 21),
                (alice, {**fields, "text": ""}, 400, 1),
                (alice, {**fields, "text": "x" * 5000}, 413, 24),
                (alice, {**fields, "session_type": 3, "text": "x"}, 400, 1),
            ]:
                refused = await who.post("/api/edit", doc)
                assert (refused.status, refused.json()["error_code"]) == (status, code), doc
            page = await http_request(
                *addr, "GET", f"/api/history?session_id={a}&session_type=1", headers=bob.headers()
            )
            assert [m["text"] for m in page.json()["messages"]] == ["lunch at 2"]
        finally:
            await alice_ws.close()

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_discovery_answers_what_the_login_service_hands_out(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        (login,) = c.services("login")
        http = next(ep for ep in login.endpoints() if ep.kind == "http")

        def get(url: str) -> dict[str, Any]:
            with urllib.request.urlopen(url, timeout=10) as answer:  # loopback addresses of the test
                doc: dict[str, Any] = json.loads(answer.read())
                return doc

        lookup = await asyncio.to_thread(get, f"http://{http.host}:{http.port}/msg_server")
        assert lookup["discovery"] == f"http://{addr[0]}:{addr[1]}/api/discovery"
        doc = await asyncio.to_thread(get, lookup["discovery"])  # no session needed
        assert doc["error_code"] == 0
        assert doc["gateway"] == {
            "api": f"http://{addr[0]}:{addr[1]}/api",
            "websocket": f"ws://{addr[0]}:{addr[1]}/api/ws",
            "page": f"http://{addr[0]}:{addr[1]}/",
        }
        assert doc["login"] == [f"http://{http.host}:{http.port}/msg_server"]
        msg_ports = {ep.port for svc in c.services("msg") for ep in svc.endpoints() if ep.kind == "client"}
        assert {m["port"] for m in doc["msg"]} == msg_ports and msg_ports
        # The addresses work: a client logs in at the listed gateway.
        web = await WebClient.login(addr, "user24")
        assert web.user_id > 0

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
