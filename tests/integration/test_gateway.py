"""Integration: long-poll (HTTP) clients and TCP clients talk to each other through the same cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from runtime.errors import ConnectionClosed
from tests.http_support import http_request, post_json
from tests.integration.conftest import ANDROID, AUTH, LostAfterCommit
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, wait_gateway

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]


def test_long_poll_and_tcp_clients_talk_both_ways(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, "user10")
        tcp = await c.login("user11", 1)
        # TCP -> long-poll
        ack = await tcp.text(web.user_id, b"hello from tcp")
        assert ack.msg_id > 0
        ev = await web.wait_for(lambda e: e["type"] == "msg")
        assert (ev["from"], ev["to"], ev["text"], ev["msg_id"]) == (
            tcp.user_id,
            web.user_id,
            "hello from tcp",
            ack.msg_id,
        )
        # long-poll -> TCP
        sent = await web.send(tcp.user_id, "hello from http")
        assert sent["error_code"] == 0 and sent["msg_id"] == ack.msg_id + 1
        (got,) = await tcp.wait_for("CID_MSG_DATA", lambda m: m.from_user_id == web.user_id)
        assert (got.msg_data, got.msg_id) == (b"hello from http", sent["msg_id"])
        # Both are stored like any message: history shows them in order.
        page = await tcp.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=web.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_data for m in page.msg_list] == [b"hello from http", b"hello from tcp"]

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_presence_read_notify_and_dedup_across_transports(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        watcher = await c.login("user12", 0)
        web = await WebClient.login(addr, "user13")
        await watcher.wait_presence(web.user_id, 1)
        phone = await c.login("user13", 1, ANDROID)  # the same user on a phone, over TCP
        first = await web.send(watcher.user_id, "once", client_msg_id=77)
        again = await web.send(watcher.user_id, "once", client_msg_id=77)  # a retry: stored once
        assert first["error_code"] == again["error_code"] == 0 and first["msg_id"] == again["msg_id"]
        await watcher.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"once")
        (copy,) = await phone.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"once")
        assert copy.from_user_id == web.user_id  # the sender's other device got it too
        await tcp_to(watcher, web.user_id, b"read me")
        ev = await web.wait_for(lambda e: e["type"] == "msg" and e["text"] == "read me")
        rsp = await web.post(
            "/api/read", {"session_id": watcher.user_id, "session_type": 1, "msg_id": ev["msg_id"]}
        )
        assert rsp.json()["error_code"] == 0
        (note,) = await phone.wait_for("CID_MSG_READ_NOTIFY")
        assert (note.session_id, note.msg_id) == (watcher.user_id, ev["msg_id"])
        unread = await http_request(*addr, "GET", "/api/unread", headers=web.headers())
        assert unread.json()["total"] == 0
        await web.post("/api/logout", {})
        await watcher.wait_presence(web.user_id, 2)

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


async def tcp_to(client: object, to: int, data: bytes) -> None:
    ack = await client.text(to, data)  # type: ignore[attr-defined]
    assert ack.msg_id > 0


def test_client_api_refuses_bad_input_with_clear_codes(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        bad = await post_json(*addr, "/api/login", {"user": "user14", "password": "wrong"})
        assert (bad.status, bad.json()["error_code"]) == (401, 6)
        no_token = await post_json(*addr, "/api/send", {"to": 1, "text": "x"})
        assert (no_token.status, no_token.json()["error_code"]) == (401, 2)
        web = await WebClient.login(addr, "user14")
        other = c.users["user15"]
        malformed = await http_request(
            *addr, "POST", "/api/send", b"{not json", {**web.headers(), "Content-Type": "application/json"}
        )
        assert (malformed.status, malformed.json()["error_code"]) == (400, 1)
        for doc, status, code in [
            ({"to": other}, 400, 1),
            ({"to": "1; DROP TABLE messages", "text": "x"}, 400, 1),
            ({"to": web.user_id, "text": "me"}, 400, 1),
            ({"to": other, "text": ""}, 400, 1),
            ({"to": other, "text": "x" * 5000}, 413, 24),
        ]:
            rsp = await web.post("/api/send", doc)
            assert (rsp.status, rsp.json()["error_code"]) == (status, code), doc
        huge = await http_request(*addr, "POST", "/api/send", b"x" * 100_000, web.headers())
        assert huge.status == 413
        page = await (await c.login("user15", 0)).call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=web.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert not page.msg_list  # nothing was stored by any refused send

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_requests_above_the_per_address_rate_get_429_and_change_nothing(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, "user16")  # 1 of the burst of 3
        to = c.users["user17"]
        first = await web.send(to, "one")
        second = await web.send(to, "two")
        assert first["error_code"] == second["error_code"] == 0
        limited = await web.post("/api/send", {"to": to, "text": "three"})
        assert (limited.status, limited.json()["error_code"]) == (429, 429)
        assert limited.headers["retry-after"] == "1"
        (gw,) = c.services("gateway")
        assert gw.m_rate_limited.value == 1
        b = await c.login("user17", 0)
        page = await b.call(
            "CID_MSG_LIST_REQUEST",
            user_id=0,
            session_type=1,
            session_id=web.user_id,
            msg_id_begin=0,
            msg_cnt=10,
        )
        assert [m.msg_data for m in page.msg_list] == [b"two", b"one"]

    services = {**GATEWAY, "gateway": {"instances": 1, "ip_rate": 0.01, "ip_burst": 3}}
    asyncio.run(run_file_cluster(tmp_path, body, services=services))


def test_burn_after_reading_reaches_long_poll_clients_and_burns_everywhere(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        web = await WebClient.login(addr, "user30")
        tcp = await c.login("user31", 0, ext=True)  # an extension-capable TCP sender
        burn = await tcp.call(
            "CID_EXT_MSG_BURN",
            from_user_id=tcp.user_id,
            to_session_id=web.user_id,
            msg_id=0,
            create_time=0,
            msg_type=1,
            msg_data=b"burn me",
        )
        assert burn.msg_id > 0
        ev = await web.wait_for(lambda e: e["type"] == "msg" and e["msg_id"] == burn.msg_id)
        assert (ev["text"], ev["burn"]) == ("burn me", True)
        keep = await tcp.text(web.user_id, b"keep me")
        ev = await web.wait_for(lambda e: e["type"] == "msg" and e["msg_id"] == keep.msg_id)
        assert ev["burn"] is False
        rsp = await web.post(
            "/api/read", {"session_id": tcp.user_id, "session_type": 1, "msg_id": burn.msg_id}
        )
        assert (rsp.status, rsp.json()["error_code"], rsp.json()["burned"]) == (200, 0, [burn.msg_id])
        (note,) = await tcp.wait_for("CID_EXT_MSG_BURNED_NOTIFY")  # the sender's device drops it
        assert (note.msg_id, note.reader_id) == (burn.msg_id, web.user_id)
        gone = await web.wait_for(lambda e: e["type"] == "CID_EXT_MSG_BURNED_NOTIFY")
        assert gone["data"]["msg_id"] == burn.msg_id
        history = await tcp.history(web.user_id)
        assert [m.msg_data for m in history] == [b"keep me"]  # stored no more; the plain one stays
        # A read of a session the user is not part of is refused, and nobody hears of it.
        refused = await web.post("/api/read", {"session_id": 987654, "session_type": 2, "msg_id": 0})
        assert (refused.status, refused.json()["error_code"]) == (403, 22)

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_a_long_poll_send_whose_biz_dies_before_answering_is_stored_once(tmp_path: Path) -> None:
    """The biz storing a long-poll client's message dies after its commit, before its answer. The gateway
    sends the store again, flagged as a resend, to the other biz, which finds the committed message by its
    token: the client gets that id, and the message is stored and delivered once."""

    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        (gw,) = c.services("gateway")
        web = await WebClient.login(addr, "user32")
        tcp = await c.login("user33", 1)
        peer_port = gw.biz_link().transport.get_extra_info("peername")[1]
        victim = next(s for s in c.services("biz") if any(e.port == peer_port for e in s.endpoints()))
        lost_biz = LostAfterCommit(c, victim)
        sent = await web.send(tcp.user_id, "exactly once")
        await lost_biz.stopped()
        assert lost_biz.committed and (sent["error_code"], sent["msg_id"]) == (0, lost_biz.committed[0])
        history = await tcp.history(web.user_id)
        assert [(m.msg_id, m.msg_data) for m in history] == [(sent["msg_id"], b"exactly once")]
        got = await tcp.wait_for("CID_MSG_DATA")
        assert [m.msg_id for m in got] == [sent["msg_id"]]

    biz = {"instances": 2, "auth": {**AUTH, "max_user_failures": 5, "max_address_failures": 12}}
    asyncio.run(run_file_cluster(tmp_path, body, services={**GATEWAY, "biz": biz}))


def test_a_biz_link_lost_during_a_request_is_answered_503(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        (gw,) = c.services("gateway")
        web = await WebClient.login(addr, "user34")
        assert gw.biz_link() is not None

        class Losing:
            """A biz link that is lost during every request."""

            async def call(self, *_a: Any, **_k: Any) -> Any:
                raise ConnectionClosed("gateway->biz closed before replying")

        gw.biz_link = Losing
        for method, path, doc in (
            ("GET", "/api/unread", None),
            ("POST", "/api/read", {"session_id": 1, "session_type": 1, "msg_id": 0}),
        ):
            if doc is None:
                rsp = await http_request(*addr, method, path, headers=web.headers())
            else:
                rsp = await web.post(path, doc)
            assert (rsp.status, rsp.json()["error_code"]) == (503, 3), path

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
