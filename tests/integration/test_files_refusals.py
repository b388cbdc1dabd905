"""Integration: the file service refuses oversized files, foreign or unknown task ids and stray pulls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from runtime.services.file.offline_store import offline_path
from tests.integration.file_support import (
    DOWNLOAD,
    OFFLINE,
    ONLINE,
    RECVER,
    SENDER,
    UPLOAD,
    FileClient,
    FileCluster,
    msg,
    run_file_cluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]
CREATE_TASK_ERROR, LOGIN_INVALID_TOKEN, INVALID_USER_FOR_TASK, PULL_INVALID_TASK = 2, 3, 4, 5
DONE = 3


def test_oversized_file_is_refused_and_creates_no_task(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        a = await c.login("user00", 0)
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=c.users["user01"],
            file_name="huge.iso",
            file_size=1_000_001,
            trans_mode=OFFLINE,
        )
        assert rsp.result_code == CREATE_TASK_ERROR and rsp.task_id == ""
        (svc,) = c.services("file")
        assert not svc.tasks.tasks and svc.m_refused.value == 1
        ok = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=c.users["user01"],
            file_name="ok.bin",
            file_size=1_000_000,
            trans_mode=OFFLINE,
        )
        assert ok.result_code == 0 and ok.task_id

    asyncio.run(
        run_file_cluster(tmp_path, body, services={"file": {"instances": 1, "max_file_bytes": 1_000_000}})
    )


def test_login_needs_a_task_issued_for_that_user_in_a_fitting_role(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        a = await c.login("user02", 0)
        b = await c.login("user03", 1)
        mallory = c.users["user09"]
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=b.user_id,
            file_name="f.txt",
            file_size=10,
            trans_mode=ONLINE,
        )
        addr = rsp.ip_addr_list[0]
        for user, task, role, code in [
            (mallory, rsp.task_id, SENDER, INVALID_USER_FOR_TASK),  # someone else's task
            (mallory, rsp.task_id, RECVER, INVALID_USER_FOR_TASK),
            (b.user_id, rsp.task_id, SENDER, INVALID_USER_FOR_TASK),  # the receiver posing as sender
            (a.user_id, rsp.task_id, UPLOAD, INVALID_USER_FOR_TASK),  # offline role on an online task
            (a.user_id, "00000000-0000-4000-8000-000000000000", SENDER, LOGIN_INVALID_TOKEN),
            (b.user_id, "../../etc/passwd", DOWNLOAD, LOGIN_INVALID_TOKEN),
            (b.user_id, "00000000-0000-4000-8000-000000000000", DOWNLOAD, LOGIN_INVALID_TOKEN),
        ]:
            client, login = await FileClient.login(addr, user, task, role)
            assert login.result_code == code, (user, task, role)
            await client.close()
        sender, login = await FileClient.login(addr, a.user_id, rsp.task_id, SENDER, b"0123456789")
        assert login.result_code == 0
        twin, login = await FileClient.login(addr, a.user_id, rsp.task_id, SENDER)  # the slot is taken
        assert login.result_code == INVALID_USER_FOR_TASK
        await twin.close()
        await sender.close()

    asyncio.run(run_file_cluster(tmp_path, body))


def test_pull_without_login_and_download_by_a_stranger_are_refused(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        a = await c.login("user04", 0)
        b_id, mallory = c.users["user05"], c.users["user09"]
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=b_id,
            file_name="s.txt",
            file_size=5,
            trans_mode=OFFLINE,
        )
        up, _ = await FileClient.login(rsp.ip_addr_list[0], a.user_id, rsp.task_id, UPLOAD, b"hello")
        await up.wait_state(DONE)
        thief, login = await FileClient.login(rsp.ip_addr_list[0], mallory, rsp.task_id, DOWNLOAD)
        assert login.result_code == LOGIN_INVALID_TOKEN  # a bare task id is no download grant
        await thief.close()
        from generated.teamtalk.registry import REGISTRY
        from runtime.client import ClientCore

        raw = ClientCore(
            REGISTRY, host=rsp.ip_addr_list[0].ip, port=rsp.ip_addr_list[0].port, reconnect=False
        )
        await raw.connect()
        with pytest.raises(Exception):  # noqa: B017 - unauthenticated: the auth gate drops or closes
            await raw.call(
                "CID_FILE_PULL_DATA_REQ",
                msg(
                    "CID_FILE_PULL_DATA_REQ",
                    task_id=rsp.task_id,
                    user_id=b_id,
                    trans_mode=OFFLINE,
                    offset=0,
                    data_size=5,
                ),
                timeout=1.0,
            )
        await raw.close()
        # A stranger cannot delete the record or the file either.
        await a.send(
            "CID_FILE_ADD_OFFLINE_REQ",
            from_user_id=0,
            to_user_id=b_id,
            task_id=rsp.task_id,
            file_name="s.txt",
            file_size=5,
        )
        b = await c.login("user05", 1)
        for _ in range(200):  # IMFileAddOfflineReq has no reply: wait until the record is written
            listing = await b.call("CID_FILE_HAS_OFFLINE_REQ", user_id=0)
            if listing.offline_file_list:
                break
            await asyncio.sleep(0.01)
        assert [f.task_id.split("~")[0] for f in listing.offline_file_list] == [rsp.task_id]
        m = await c.login("user09", 1)
        await m.send("CID_FILE_DEL_OFFLINE_REQ", from_user_id=a.user_id, to_user_id=b_id, task_id=rsp.task_id)
        (svc,) = c.services("file")
        for _ in range(200):  # the refusal is counted once the file service has handled the request
            if svc.m_offline_refused.value:
                break
            await asyncio.sleep(0.01)
        assert svc.m_offline_refused.value == 1
        listing = await b.call("CID_FILE_HAS_OFFLINE_REQ", user_id=0)
        assert [f.task_id.split("~")[0] for f in listing.offline_file_list] == [rsp.task_id]
        assert offline_path(c.data_dir, rsp.task_id).exists()
        await up.close()

    asyncio.run(run_file_cluster(tmp_path, body))


def test_idle_task_times_out(tmp_path: Path) -> None:
    async def body(c: FileCluster) -> None:
        a = await c.login("user06", 0)
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=c.users["user07"],
            file_name="t",
            file_size=3,
            trans_mode=OFFLINE,
        )
        (svc,) = c.services("file")
        assert rsp.task_id in svc.tasks.tasks
        for _ in range(400):
            if rsp.task_id not in svc.tasks.tasks:
                break
            await asyncio.sleep(0.01)
        assert rsp.task_id not in svc.tasks.tasks and svc.m_expired.value == 1
        client, login = await FileClient.login(rsp.ip_addr_list[0], a.user_id, rsp.task_id, UPLOAD, b"abc")
        assert login.result_code == LOGIN_INVALID_TOKEN
        await client.close()

    asyncio.run(run_file_cluster(tmp_path, body, services={"file": {"instances": 1, "task_timeout": 0.5}}))
