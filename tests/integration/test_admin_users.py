"""Integration: the user lifecycle on a running cluster, through the admin HTTP API and `ttgen admin`: disable
and delete end every session at once (TCP clients on both msg servers and long-poll sessions), logins are
refused until `enable`; passwd; CSV import in one transaction with per-row errors; every action audited;
the key checked before anything is read. Clients are the shipped ones (`ttgen chat`'s session)."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from generated.teamtalk.registry import REGISTRY
from runtime.client import ClientCore
from runtime.storage.models import UserStatus
from tests.http_support import http_request, post_json
from tests.integration.conftest import PASSWORD, cluster_config, cluster_storage
from tests.integration.file_support import FileCluster, run_file_cluster
from tests.integration.gateway_support import GATEWAY, WebClient, wait_gateway
from ttgen.cli import main as cli
from ttgen.commands.chat import ChatError, ChatSession
from ttgen.stack import load_stack

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]
STACK = load_stack("teamtalk")


async def chat(c: FileCluster, name: str, index: int = 0, password: str = PASSWORD) -> ChatSession:
    session = ChatSession(
        STACK,
        ClientCore(REGISTRY, host="127.0.0.1", port=c.msg_port(index), reconnect=True, backoff_initial=0.05),
        lambda _line: None,
    )
    await session.login(name, password)
    return session


def key_of(c: FileCluster) -> dict[str, str]:
    return {"X-Api-Key": (c.data_dir / "admin.key").read_text().strip()}


async def status_of(c: FileCluster, name: str) -> int:
    storage = cluster_storage(c.data_dir)
    await storage.open()
    try:
        user = await storage.get_user_by_login(name)
        assert user is not None
        return int(user.status)
    finally:
        await storage.close()


async def ended(session: ChatSession, timeout: float = 5.0) -> None:
    await asyncio.wait_for(session.lost.wait(), timeout)


def test_disable_kicks_every_session_at_once_and_enable_lets_the_user_back(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        pc, other = await chat(c, "user01", 0), await chat(c, "user02", 1)
        web = await WebClient.login(addr, "user01")
        for _ in range(20):  # past the login's own events and the presence flushes they start
            if not await web.poll(0.5):
                break
        polling = asyncio.create_task(web.poll(8.0))
        await asyncio.sleep(0.2)
        rsp = await post_json(*addr, "/admin/users/disable", {"user": "user01"}, key_of(c))
        assert rsp.status == 200 and rsp.json()["status"] == UserStatus.LEFT, rsp.body
        await ended(pc)  # kicked on its msg server, not reconnecting into a refusal loop
        assert pc.auth is not None and pc.auth.kicked
        events = await asyncio.wait_for(polling, 10)  # the pending poll returns with the kick
        assert {"type": "kick", "reason": 1} in [{k: e.get(k) for k in ("type", "reason")} for e in events]
        assert not other.lost.is_set()  # nobody else is touched
        with pytest.raises(ChatError, match="login refused"):
            await chat(c, "user01", 1)
        assert await status_of(c, "user01") == UserStatus.LEFT
        again = await post_json(*addr, "/admin/users/disable", {"user": "user01"}, key_of(c))
        assert again.status == 200  # disabling twice is harmless
        rsp = await post_json(*addr, "/admin/users/enable", {"user": "user01"}, key_of(c))
        assert rsp.status == 200 and rsp.json()["status"] == UserStatus.NORMAL
        back = await chat(c, "user01", 1)
        assert back.user_id == c.users["user01"]
        refused = await post_json(*addr, "/admin/users/enable", {"user": "user01"}, key_of(c))
        assert (refused.status, refused.json()["error_code"]) == (409, 5)
        await back.close()
        await other.close()

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_delete_passwd_and_bad_requests(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        victim = await chat(c, "user03", 0)
        rsp = await post_json(*addr, "/admin/users/delete", {"user_id": c.users["user03"]}, key_of(c))
        assert rsp.status == 200, rsp.body
        await ended(victim)
        with pytest.raises(ChatError, match="login refused"):
            await chat(c, "user03", 0)
        for verb in ("enable", "delete", "passwd"):
            doc = {"user": "user03", "password": "x"}
            rsp = await post_json(*addr, f"/admin/users/{verb}", doc, key_of(c))
            assert (rsp.status, rsp.json()["error_code"]) == (409, 5), (verb, rsp.body)
        watcher = await chat(c, "user04", 1)
        assert "user03" not in [u.user_domain for u in watcher.users.values()]  # hidden from the directory
        # passwd: the old password stops working, the new one works.
        rsp = await post_json(*addr, "/admin/users/passwd", {"user": "user05", "password": "n3w"}, key_of(c))
        assert rsp.status == 200
        with pytest.raises(ChatError, match="login refused"):
            await chat(c, "user05", 0)
        (await chat(c, "user05", 0, "n3w")).core.reconnect = False
        # Bad requests change nothing and say why.
        cases: list[tuple[str, Any, int]] = [
            ("/admin/users/disable", {"user": "nobody"}, 404),
            ("/admin/users/disable", {"user": ""}, 400),
            ("/admin/users/disable", ["user01"], 400),
            ("/admin/users/passwd", {"user": "user06", "password": ""}, 400),
            ("/admin/users/passwd", {"user": "user06", "password": 5}, 400),
            ("/admin/users/frobnicate", {"user": "user06"}, 404),
        ]
        for path, doc, status in cases:
            rsp = await post_json(*addr, path, doc, key_of(c))
            assert rsp.status == status, (path, doc, rsp.body)
        rsp = await http_request(*addr, "GET", "/admin/users/disable", headers=key_of(c))
        assert rsp.status == 405
        assert await status_of(c, "user06") == UserStatus.NORMAL
        await watcher.close()

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_the_key_is_checked_first_and_every_action_is_audited(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        for headers in ({}, {"X-Api-Key": ""}, {"X-Api-Key": "wrong"}):
            rsp = await post_json(*addr, "/admin/users/disable", {"user": "user07"}, headers)
            assert (rsp.status, rsp.json()["error_code"]) == (401, 2)
        # A wrong key is refused before a large body is read.
        big = b"name,password\n" + b"x,y\n" * 1_000_000
        rsp = await http_request(*addr, "POST", "/admin/users/import", big, {"X-Api-Key": "wrong"})
        assert rsp.status == 401
        assert await status_of(c, "user07") == UserStatus.NORMAL
        await post_json(*addr, "/admin/users/disable", {"user": "user07"}, key_of(c))
        await post_json(*addr, "/admin/users/passwd", {"user": "user08", "password": "s3cret!"}, key_of(c))
        await post_json(
            *addr,
            "/query/CreateGroup",
            {"req_user_id": 1, "group_name": "ops", "group_type": 1, "group_avatar": "", "user_id_list": [2]},
            key_of(c),
        )
        rsp = await http_request(*addr, "GET", "/admin/audit?limit=50", headers=key_of(c))
        records = rsp.json()["records"]
        actions = [(r["action"], r["target"], r["outcome"].split(":")[0]) for r in records]
        assert actions[:3] == [("/admin/users/disable", "-", "refused")] * 3
        assert ("/admin/users/import", "-", "refused") in actions
        assert ("user.disable", "user07", "ok") in actions
        assert ("user.passwd", "user08", "ok") in actions
        assert ("/query/CreateGroup", str(records[-1].get("target")), "ok") in actions
        assert all(r["actor"].startswith("http:127.0.0.1") for r in records)
        log = c.data_dir / "admin-audit.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600
        assert "s3cret!" not in log.read_text()  # no password is ever written

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_import_over_http_is_one_transaction_with_per_row_errors(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        addr = await wait_gateway(c)
        bad = "name,password,nick\nnew1,pw1,New One\nuser01,pw,Taken\n,pw,\nnew2,,x\nnew1,pw,again\n"
        rsp = await http_request(*addr, "POST", "/admin/users/import", bad.encode(), key_of(c))
        assert rsp.status == 422, rsp.body
        errors = [(e["line"], e["message"]) for e in rsp.json()["errors"]]
        assert errors == [
            (3, "the name is taken"),
            (4, "empty name"),
            (5, "empty password"),
            (6, "the name is also on line 2"),
        ]
        storage = cluster_storage(c.data_dir)
        await storage.open()
        try:
            assert await storage.get_user_by_login("new1") is None  # nothing written
        finally:
            await storage.close()
        rsp = await http_request(*addr, "POST", "/admin/users/import?partial=1", bad.encode(), key_of(c))
        assert rsp.status == 200 and rsp.json()["created"] == 1
        (await chat(c, "new1", 0, "pw1")).core.reconnect = False

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))


def test_the_cli_verbs_kick_through_the_running_gateway(tmp_path: Path) -> None:
    config = tmp_path / "ttgen.json"
    config.write_text(json.dumps(cluster_config(tmp_path)))  # the cluster's storage and hash policy
    csv_file = tmp_path / "users.csv"
    rows = "".join(f"bulk{i:04d},pw{i},Bulk {i},\n" for i in range(2000))
    csv_file.write_text("name,password,nick,department\n" + rows)

    def admin(*args: str) -> Any:
        return CliRunner().invoke(cli, ["admin", "--config", str(config), *args], catch_exceptions=False)

    async def body(c: FileCluster) -> None:
        await wait_gateway(c)
        session = await chat(c, "user09", 1)
        out = await asyncio.to_thread(admin, "user", "disable", "user09")
        assert out.exit_code == 0 and "sessions ended" in out.output, out.output
        await ended(session)
        out = await asyncio.to_thread(admin, "user", "enable", "user09")
        assert out.exit_code == 0, out.output
        (await chat(c, "user09", 0)).core.reconnect = False
        out = await asyncio.to_thread(admin, "user", "disable", "nobody")
        assert out.exit_code == 1 and "unknown user 'nobody'" in out.output
        out = await asyncio.to_thread(admin, "import", str(csv_file))
        assert out.exit_code == 0 and "imported 2000 user(s) of 2000 row(s)" in out.output, out.output
        out = await asyncio.to_thread(admin, "import", str(csv_file))
        assert out.exit_code == 1 and "nothing imported: 2000 bad row(s)" in out.output
        assert "line 2 (bulk0000): the name is taken" in out.output
        (await chat(c, "bulk1999", 0, "pw1999")).core.reconnect = False
        out = await asyncio.to_thread(admin, "audit", "--format", "json", "--limit", "20")
        records = json.loads(out.output)
        actions = [
            (r["action"], r["outcome"].split(":")[0]) for r in records if r["actor"].startswith("cli:")
        ]
        assert ("user.disable", "ok") in actions and ("user.enable", "ok") in actions
        assert ("user.disable", "refused") in actions and ("user.import", "refused") in actions

    asyncio.run(run_file_cluster(tmp_path, body, services=dict(GATEWAY)))
