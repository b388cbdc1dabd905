"""Integration: the gateway's browser API (docs/web-api.md) through real HTTP and WebSocket connections: the
WebSocket endpoint (auth, commands, events, resume, bad frames, a socket that never reads), the chat page's
reads and commands, files through the gateway, and the static page."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runtime import httpkit
from runtime.services.gateway import websocket as gw_ws
from tests.http_support import encode_multipart, http_request, post_json
from tests.integration.conftest import cluster_storage
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, WsClient, wait_gateway

pytestmark = pytest.mark.integration
EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes" \u202e'
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
WITH_BLOBS = {"gateway": {"instances": 1}, "storage": {"instances": 1}, "file": {"instances": 0}}


async def create_group(
    c: FileCluster, addr: tuple[str, int], owner: int, members: list[int], name: str
) -> int:
    key = (c.data_dir / "admin.key").read_text().strip()
    doc = {
        "req_user_id": owner,
        "app_key": key,
        "group_name": name,
        "group_type": 1,
        "group_avatar": "",
        "user_id_list": members,
    }
    rsp = await post_json(*addr, "/query/CreateGroup", doc)
    assert rsp.status == 200, rsp.body
    group_id: int = rsp.json()["group_id"]
    return group_id


def test_websocket_commands_events_and_resume(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        alice_web = await WebClient.login(addr, "user40")
        bob_web = await WebClient.login(addr, "user41")
        alice = await WsClient.open(addr, alice_web.token)
        bob = await WsClient.open(addr, bob_web.token, in_query=True)
        a, b = alice_web.user_id, bob_web.user_id
        try:
            # A send over the socket: the reply carries the id; the peer's socket gets the event, verbatim.
            sent = await alice.request("send", to=b, text=EVIL)
            assert sent["error_code"] == 0 and sent["msg_id"] > 0 and sent["op"] == "reply"
            ev = await bob.wait_for(lambda e: e["type"] == "msg" and e["msg_id"] == sent["msg_id"])
            assert ev["text"] == EVIL and ev["from"] == a and ev["to"] == b and ev["burn"] is False
            # The same message over HTTP reads: history returns it verbatim too, as JSON.
            page = await http_request(
                *addr, "GET", f"/api/history?session_id={a}&session_type=1", headers=bob_web.headers()
            )
            assert page.headers["content-type"].startswith("application/json")
            assert page.json()["messages"][0]["text"] == EVIL
            # Typing, read receipts, recall.
            assert (await alice.request("typing", to=b, session_type=1, state=1))["error_code"] == 0
            typing = await bob.wait_for(lambda e: e["type"] == "CID_EXT_TYPING")
            assert typing["data"]["from_user_id"] == a and typing["data"]["state"] == "TYPING_STARTED"
            read = await bob.request("read", session_id=a, session_type=1, msg_id=sent["msg_id"])
            assert read["error_code"] == 0 and read["burned"] == []
            receipt = await alice.wait_for(lambda e: e["type"] == "receipt")
            assert (receipt["reader"], receipt["msg_id"]) == (b, sent["msg_id"])
            refused = await bob.request("recall", session_id=a, session_type=1, msg_id=sent["msg_id"])
            assert refused["error_code"] == 22  # not the sender
            assert (await alice.request("recall", session_id=b, session_type=1, msg_id=sent["msg_id"]))[
                "error_code"
            ] == 0
            gone = await bob.wait_for(lambda e: e["type"] == "CID_EXT_MSG_RECALL_NOTIFY")
            assert gone["data"]["msg_id"] == sent["msg_id"]
            # Burn after reading: flagged on delivery, destroyed by the read, both sides told.
            burn = await alice.request("send", to=b, text="once", burn=True)
            ev = await bob.wait_for(lambda e: e["type"] == "msg" and e["msg_id"] == burn["msg_id"])
            assert ev["burn"] is True
            read = await bob.request("read", session_id=a, session_type=1, msg_id=burn["msg_id"])
            assert read["burned"] == [burn["msg_id"]]
            await alice.wait_for(lambda e: e["type"] == "CID_EXT_MSG_BURNED_NOTIFY")
            # Pipelined sends: fifteen frames at once are stored in their order and arrive in it.
            burst = await asyncio.gather(*(alice.request("send", to=b, text=f"p{i}") for i in range(15)))
            ids = [r["msg_id"] for r in burst]
            assert all(r["error_code"] == 0 for r in burst) and ids == sorted(ids) and len(set(ids)) == 15
            await bob.wait_for(lambda e: e["type"] == "msg" and e["text"] == "p14")
            texts = [e["text"] for e in bob.events if e["type"] == "msg" and e["text"].startswith("p")]
            assert texts == [f"p{i}" for i in range(15)]
            # Presence snapshot over the socket.
            pres = await alice.request("presence", user_ids=[b, c.users["user59"]])
            assert {s["user_id"]: s["status"] for s in pres["statuses"]} == {b: 1, c.users["user59"]: 2}
            # Resume: bob acks what he saw, goes away; what was sent meanwhile arrives after reconnecting.
            assert (await bob.request("ack", seq=bob.last_seq))["error_code"] == 0
            seen = bob.last_seq
            await bob.close()
            later = [await alice.request("send", to=b, text=f"while away {i}") for i in range(3)]
            bob = await WsClient.open(addr, bob_web.token, since=seen)
            for m in later:
                await bob.wait_for(lambda e, m=m: e["type"] == "msg" and e["msg_id"] == m["msg_id"])
            assert all(e["seq"] > seen for e in bob.events)
            # A second socket of the same session replaces the first (close 4003).
            bob2 = await WsClient.open(addr, bob_web.token, since=bob.last_seq)
            assert await bob.close_code() == gw_ws.CLOSE_REPLACED
            # Logout over the socket: answered, then closed normally; the token is dead for HTTP too.
            assert (await bob2.request("logout"))["error_code"] == 0
            assert await bob2.close_code() == gw_ws.CLOSE_LOGOUT
            rsp = await http_request(*addr, "GET", "/api/unread", headers=bob_web.headers())
            assert (rsp.status, rsp.json()["error_code"]) == (401, 2)
            await bob2.close()
            # A second login of the same class kicks alice's session: the socket gets the kick, then 4002.
            await WebClient.login(addr, "user40")
            kick = await alice.wait_for(lambda e: e["type"] == "kick")
            assert kick["reason"] == 1
            assert await alice.close_code() == gw_ws.CLOSE_ENDED
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_chat_page_reads_directory_groups_recent_history_and_foreign_sessions(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        storage = cluster_storage(c.data_dir)
        await storage.open()
        try:
            await storage.create_department("R&D <b>bold</b>", 1)
        finally:
            await storage.close()
        alice = await WebClient.login(addr, "user42")
        bob = await WebClient.login(addr, "user43")
        carol = await WebClient.login(addr, "user44")
        a, b = alice.user_id, bob.user_id
        gid = await create_group(c, addr, a, [a, b], "team <i>")

        async def get(client: WebClient, path: str) -> tuple[int, dict[str, Any]]:
            rsp = await http_request(*addr, "GET", path, headers=client.headers())
            doc: dict[str, Any] = rsp.json()
            return rsp.status, doc

        status, users = await get(alice, "/api/users")
        assert status == 200 and {u["user_id"] for u in users["users"]} >= {a, b}
        assert {"user_nick_name", "department_id", "avatar_url"} <= set(users["users"][0])
        status, depts = await get(alice, "/api/departments")
        assert [d["dept_name"] for d in depts["departments"]] == ["R&D <b>bold</b>"]
        status, info = await get(alice, f"/api/user_info?user_ids={b},{a}")
        assert sorted(u["user_id"] for u in info["users"]) == sorted([a, b])
        status, groups = await get(bob, "/api/groups")
        assert [(g["group_id"], g["group_name"]) for g in groups["groups"]] == [(gid, "team <i>")]
        assert sorted(groups["groups"][0]["group_member_list"]) == sorted([a, b])
        assert (await get(carol, f"/api/group?group_id={gid}")) == (
            403,
            {"error_code": 22, "error_msg": "not a member of that group (or no such group)"},
        )
        # Foreign sessions: carol is not a member of the group.
        for path, doc in (("/api/read", {"session_id": gid, "session_type": 2, "msg_id": 0}),):
            rsp = await carol.post(path, doc)
            assert (rsp.status, rsp.json()["error_code"]) == (403, 22)
        status, hist = await get(carol, f"/api/history?session_id={gid}&session_type=2")
        assert (status, hist["error_code"]) == (403, 22)
        sent = await carol.post("/api/send", {"to": gid, "group": True, "text": "intruder"})
        assert sent.json()["error_code"] == 22
        rsp = await carol.post("/api/typing", {"to": gid, "session_type": 2, "state": 1})
        assert rsp.json()["error_code"] == 22
        # History pages, newest first, by msg id.
        ids = [(await alice.send(gid, f"m{i}", group=True))["msg_id"] for i in range(7)]
        status, first = await get(bob, f"/api/history?session_id={gid}&session_type=2&limit=3")
        assert [m["msg_id"] for m in first["messages"]] == ids[::-1][:3] and first["more"] is True
        before = first["messages"][-1]["msg_id"]
        status, second = await get(
            bob, f"/api/history?session_id={gid}&session_type=2&limit=3&before={before}"
        )
        assert [m["msg_id"] for m in second["messages"]] == ids[::-1][3:6]
        assert second["messages"][0]["text"] == "m3" and second["messages"][0]["to"] == gid
        status, recent = await get(bob, "/api/recent")
        assert recent["sessions"][0]["session_id"] == gid and recent["sessions"][0]["latest_msg_text"] == "m6"
        # Bad parameters: clear errors, nothing else.
        for path in (
            "/api/history?session_id=x&session_type=1",
            f"/api/history?session_id={a}&session_type=3",
            f"/api/history?session_id={a}&limit=1000",
            "/api/user_info?user_ids=",
            "/api/presence?user_ids=1,-2",
            "/api/group?group_id=0",
        ):
            status, doc = await get(bob, path)
            assert (status, doc["error_code"]) == (400, 1), path
        status, doc = await get(bob, "/api/nope")
        assert (status, doc["error_code"]) == (404, 1)

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def _mask_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client (masked) WebSocket frame."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_socket(addr: tuple[str, int], token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand (authenticated in the query) whose receive buffer is small."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, addr)
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /api/ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def test_websocket_bad_input_is_refused_and_harms_nothing(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(gw_ws, "AUTH_TIMEOUT", 0.5)
    monkeypatch.setattr(gw_ws, "SEND_TIMEOUT", 1.0)
    monkeypatch.setattr(httpkit, "BODY_TIMEOUT", 0.5)

    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        (gw,) = c.services("gateway")
        web = await WebClient.login(addr, "user45")
        peer = await WebClient.login(addr, "user46")
        url = f"http://{addr[0]}:{addr[1]}/api/ws"
        async with aiohttp.ClientSession() as http:
            # Forged, expired and missing tokens: refused with error 2 / closed 4001.
            forged = web.token[:-2] + ("AA" if not web.token.endswith("AA") else "BB")
            for query in (f"?token={forged}", ""):
                ws = await http.ws_connect(url + query)
                if not query:
                    await ws.send_str(json.dumps({"op": "auth", "id": 1, "token": forged}))
                reply = await ws.receive_json(timeout=5)
                assert (reply["error_code"], reply["id"]) == (2, None if query else 1)
                await ws.receive(timeout=5)
                assert ws.closed and ws.close_code == gw_ws.CLOSE_AUTH
            silent = await http.ws_connect(url)
            msg = await silent.receive(timeout=5)  # no auth frame within AUTH_TIMEOUT
            assert msg.type == aiohttp.WSMsgType.CLOSE and silent.close_code == gw_ws.CLOSE_AUTH
            first_not_auth = await http.ws_connect(url)
            await first_not_auth.send_str(json.dumps({"op": "send", "to": 1, "text": "x"}))
            assert (await first_not_auth.receive_json(timeout=5))["error_code"] == 1
            await first_not_auth.receive(timeout=5)
            assert first_not_auth.close_code == gw_ws.CLOSE_AUTH
            # Malformed frames: each answered with error 1, the socket keeps working.
            client = await WsClient.open(addr, web.token)
            for frame in ("{not json", "[1, 2]", '"text"', '{"op": 5}', '{"op": "drop_tables"}', "[" * 50000):
                await client.ws.send_str(frame)
            await client.ws.send_str(json.dumps({"op": "ping", "id": {"nested": 1}}))
            await client.ws.send_str(json.dumps({"op": "send", "id": "bad", "to": "x", "text": "y"}))
            assert (await client.request("ping"))["error_code"] == 0
            assert len(client.errors) == 7 and all(e["error_code"] == 1 for e in client.errors)
            bad_send = await client.request("send", to=peer.user_id, text="x" * 5000)
            assert bad_send["error_code"] == 24
            html = await client.request("send", to=peer.user_id, text=EVIL)
            assert html["error_code"] == 0
            # An oversized frame closes the socket (1009); binary frames close it (1003).
            await client.ws.send_str(json.dumps({"op": "send", "to": peer.user_id, "text": "x" * 70000}))
            assert await client.close_code() == 1009
            await client.close()
            binary = await WsClient.open(addr, web.token)
            await binary.ws.send_bytes(b"\x00\x01")
            assert await binary.close_code() == 1003
            await binary.close()
            # Too many bad frames: closed 4029.
            noisy = await WsClient.open(addr, web.token)
            for _ in range(gw_ws.MAX_BAD + 1):
                await noisy.ws.send_str("nope")
            assert await noisy.close_code() == gw_ws.CLOSE_ABUSE
            await noisy.close()
        # A body that never arrives in full: 408 (error 1) after BODY_TIMEOUT, connection closed.
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(b"POST /api/send HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        slow = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert slow.startswith(b"HTTP/1.1 408") and b'"error_code":1' in slow
        # A socket that never reads: the gateway drops it once a send blocks, and keeps serving others.
        _reader, writer = await raw_socket(addr, web.token)
        await asyncio.sleep(0.2)
        (session,) = gw.sessions.of(web.user_id)
        assert session.socket is not None
        big = {"type": "msg", "text": "y" * 3000}
        for i in range(4000):  # 12 MB: more than the kernel buffers of both ends hold
            gw.push_event([web.user_id], big)
            if i % 10 == 0:
                await asyncio.sleep(0)
        for _ in range(100):
            if session.socket is None:
                break
            await asyncio.sleep(0.05)
        assert session.socket is None
        writer.close()
        assert (
            await post_json(*addr, "/api/send", {"to": web.user_id, "text": "still fine"}, peer.headers())
        ).json()["error_code"] == 0
        # Stored data: only the good sends (no refused frame stored anything).
        history = await http_request(
            *addr, "GET", f"/api/history?session_id={peer.user_id}&session_type=1", headers=web.headers()
        )
        assert [m["text"] for m in history.json()["messages"]] == ["still fine", EVIL]

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_files_and_images_through_the_gateway_for_the_parties_only(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        alice = await WebClient.login(addr, "user47")
        bob = await WebClient.login(addr, "user48")
        carol = await WebClient.login(addr, "user49")
        ctype, payload = encode_multipart([("file", "cat <b>.png", PNG)])
        up = await http_request(
            *addr, "POST", "/api/upload", payload, {**alice.headers(), "Content-Type": ctype}
        )
        doc = up.json()
        assert up.status == 200 and doc["error_code"] == 0, doc
        digest = hashlib.sha256(PNG).hexdigest()
        file = doc["file"]
        assert file == {
            "path": f"g0/{digest[:2]}/{digest}.png",
            "name": "cat <b>.png",
            "size": len(PNG),
            "mime": "image/png",
        }
        sent = await alice.send(bob.user_id, "", file=file)
        assert sent["error_code"] == 0, sent
        ev = await bob.wait_for(lambda e: e["type"] == "msg" and e["msg_id"] == sent["msg_id"])
        assert ev["file"]["name"] == "cat <b>.png" and ev["text"].startswith("ttfile:")
        url = ev["file"]["url"]
        got = await http_request(*addr, "GET", url, headers=bob.headers())
        assert got.status == 200 and got.body == PNG and got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        via_query = await http_request(*addr, "GET", f"{url}&token={alice.token}")
        assert via_query.status == 200 and via_query.body == PNG
        # Not a party, no token, a path the message does not carry, a forged message reference.
        assert (await http_request(*addr, "GET", url, headers=carol.headers())).json()["error_code"] == 22
        assert (await http_request(*addr, "GET", url)).json()["error_code"] == 2
        other = url.replace(digest, "0" * 64)
        assert (await http_request(*addr, "GET", other, headers=bob.headers())).json()["error_code"] == 22
        forged = url.replace(f"from={alice.user_id}", f"from={carol.user_id}")
        assert (await http_request(*addr, "GET", forged, headers=bob.headers())).status in (403,)
        # Refused uploads and sends: no token, not multipart, too large, a file never uploaded.
        rsp = await http_request(*addr, "POST", "/api/upload", payload, {"Content-Type": ctype})
        assert (rsp.status, rsp.json()["error_code"]) == (401, 2)
        rsp = await http_request(
            *addr, "POST", "/api/upload", b"{}", {**alice.headers(), "Content-Type": "application/json"}
        )
        assert (rsp.status, rsp.json()["error_code"]) == (400, 1)
        _ct, big = encode_multipart([("file", "big.bin", b"\0" * (5 * 1024 * 1024 + 1))])
        rsp = await http_request(
            *addr, "POST", "/api/upload", big, {**alice.headers(), "Content-Type": ctype}
        )
        assert (rsp.status, rsp.json()["error_code"]) == (413, 24)
        missing = {**file, "path": f"g0/ab/ab{'1' * 62}.png"}
        assert (await alice.send(bob.user_id, "", file=missing))["error_code"] == 21
        assert (await alice.send(bob.user_id, "", file={"path": "../../admin.key"}))["error_code"] == 1

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(WITH_BLOBS)))


def test_static_page_and_generated_client_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    web_root, gen_root = tmp_path / "static", tmp_path / "gen"
    web_root.mkdir()
    gen_root.mkdir()
    (web_root / "index.html").write_text("<!doctype html><title>chat</title>")
    (web_root / "app.js").write_text("console.log(1)")
    (gen_root / "client.js").write_text("export {}")
    (tmp_path / "secret.txt").write_text("no")
    services = {"gateway": {"instances": 1, "web_root": str(web_root), "web_gen_root": str(gen_root)}}

    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        page = await http_request(*addr, "GET", "/")
        assert page.status == 200 and page.body.startswith(b"<!doctype html>")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self' covers it
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        script = await http_request(*addr, "GET", "/static/app.js")
        assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
        assert (await http_request(*addr, "GET", "/gen/client.js")).body == b"export {}"
        for path in (
            "/static/../secret.txt",
            "/static/%2e%2e/secret.txt",
            "/static/.hidden.js",
            "/gen/x.exe",
            "/static/missing.css",
        ):
            assert (await http_request(*addr, "GET", path)).status == 404, path
        # Heads: 8 KiB in all (431), 32 lines (400), each line 8 KiB (400); the server keeps serving.
        padded = {f"X-Pad-{i}": "a" * 600 for i in range(15)}
        assert (await http_request(*addr, "GET", "/api/ping", headers=padded)).status == 431
        many = {f"X-{i}": "1" for i in range(40)}
        assert (await http_request(*addr, "GET", "/api/ping", headers=many)).status == 400
        assert (await http_request(*addr, "GET", "/api/ping", headers={"X": "a" * 9000})).status == 400
        assert (await http_request(*addr, "GET", "/")).status == 200

    (tmp_path / "data").mkdir()
    asyncio.run(
        run_file_cluster(tmp_path / "data", body, services={**GATEWAY, **services, "file": {"instances": 0}})
    )
