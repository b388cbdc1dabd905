"""Integration: the admin HTTP API: key authentication, validation, group changes that reach every client."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.http_support import http_request, post_json
from tests.integration.conftest import cluster_storage
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, wait_gateway

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]
EVIL = "'); DROP TABLE groups; -- \" OR 1=1 ;"


async def group_count(data_dir: Path) -> int:
    storage = cluster_storage(data_dir)
    await storage.open()
    try:
        return len(await storage.list_user_groups(1))
    finally:
        await storage.close()


def test_admin_api_needs_the_key_and_changes_nothing_without_it(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        key_file = c.data_dir / "admin.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        doc: dict[str, Any] = {
            "req_user_id": 1,
            "group_name": "ops",
            "group_type": 1,
            "group_avatar": "",
            "user_id_list": [2, 3],
        }
        before = await group_count(c.data_dir)
        for auth in (
            {},
            {"app_key": ""},
            {"app_key": "0" * len(key)},
            {"app_key": key[:-1]},
            {"app_key": 12},
        ):
            rsp = await post_json(*addr, "/query/CreateGroup", {**doc, **auth})
            assert (rsp.status, rsp.json()["error_code"]) == (401, 2), auth
        wrong_header = await post_json(
            *addr,
            "/query/ChangeMembers",
            {"req_user_id": 1, "group_id": 1, "modify_type": 1, "user_id_list": [4]},
            {"X-Api-Key": "nope"},
        )
        assert (wrong_header.status, wrong_header.json()["error_code"]) == (401, 2)
        assert await group_count(c.data_dir) == before
        for raw in (b"{", b"[]", b"\xff\xfe", b""):
            rsp = await http_request(
                *addr, "POST", "/query/CreateGroup", raw, {"Content-Type": "application/json"}
            )
            assert (rsp.status, rsp.json()["error_code"]) == (400, 1), raw
        for bad in (
            {"group_type": 3},
            {"group_type": True},
            {"group_name": ""},
            {"group_name": "a\x00b"},
            {"user_id_list": "1,2"},
            {"user_id_list": [1, -2]},
            {"req_user_id": "1 OR 1=1"},
            {"group_name": "n" * 300},
        ):
            rsp = await post_json(*addr, "/query/CreateGroup", {**doc, "app_key": key, **bad})
            assert (rsp.status, rsp.json()["error_code"]) == (400, 1), bad
        unknown = await post_json(
            *addr, "/query/CreateGroup", {**doc, "app_key": key, "user_id_list": [99999]}
        )
        assert (unknown.status, unknown.json()["error_code"]) == (404, 4)
        assert await group_count(c.data_dir) == before
        get = await http_request(*addr, "GET", "/query/CreateGroup")
        assert get.status == 405

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_admin_created_group_with_sql_metacharacters_works_for_tcp_and_http(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        key = (c.data_dir / "admin.key").read_text().strip()
        a = await c.login("user20", 0)
        b = await c.login("user21", 1)
        web = await WebClient.login(addr, "user22")
        late = await c.login("user23", 0)
        rsp = await post_json(
            *addr,
            "/query/CreateGroup",
            {
                "req_user_id": a.user_id,
                "app_key": key,
                "group_name": EVIL,
                "group_type": 1,
                "group_avatar": "",
                "user_id_list": [b.user_id, web.user_id],
            },
        )
        doc = rsp.json()
        assert rsp.status == 200 and doc["error_code"] == 0 and doc["group_id"] > 0, doc
        gid = doc["group_id"]
        (note,) = await b.wait_for("CID_GROUP_CHANGE_MEMBER_NOTIFY")
        assert note.group_id == gid and sorted(note.cur_user_id_list) == sorted(
            [a.user_id, b.user_id, web.user_id]
        )
        await web.wait_for(lambda e: e["type"] == "CID_GROUP_CHANGE_MEMBER_NOTIFY")
        info = await a.call(
            "CID_GROUP_INFO_REQUEST", user_id=0, group_version_list=[{"group_id": gid, "version": 0}]
        )
        (g,) = info.group_info_list
        assert g.group_name == EVIL and g.group_type == 1  # stored literally, NORMAL
        ack = await a.text(gid, b"to the group", group=True)
        assert ack.msg_id > 0
        await b.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"to the group")
        ev = await web.wait_for(lambda e: e["type"] == "msg" and e["text"] == "to the group")
        assert ev["session_type"] == 2 and ev["to"] == gid
        sent = await web.send(gid, "web to the group", group=True)
        assert sent["error_code"] == 0, sent
        await a.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"web to the group")
        # A member added by the admin gets the next group message (every member cache was dropped).
        change = await post_json(
            *addr,
            "/query/ChangeMembers",
            {
                "req_user_id": a.user_id,
                "app_key": key,
                "group_id": gid,
                "modify_type": 1,
                "user_id_list": [late.user_id],
            },
        )
        assert change.json()["error_code"] == 0 and late.user_id in change.json()["cur_user_id_list"]
        await late.wait_for("CID_GROUP_CHANGE_MEMBER_NOTIFY")
        await b.text(gid, b"after the change", group=True)
        await late.wait_for("CID_MSG_DATA", lambda m: m.msg_data == b"after the change")
        gone = await post_json(
            *addr,
            "/query/ChangeMembers",
            {
                "req_user_id": a.user_id,
                "app_key": key,
                "group_id": 424242,
                "modify_type": 1,
                "user_id_list": [late.user_id],
            },
        )
        assert (gone.status, gone.json()["error_code"]) == (404, 4)

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
