"""Integration: file transfer through the file service on a real cluster (online relay, offline store)."""

from __future__ import annotations

import asyncio
import hashlib
import os
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
    run_file_cluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("backend_storage")]
FIVE_MB = 5 * 1024 * 1024
DONE = 3


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_online_transfer_of_5mb_arrives_byte_identical(tmp_path: Path) -> None:
    payload = os.urandom(FIVE_MB)

    async def body(c: FileCluster) -> None:
        a = await c.login("user00", 0)
        b = await c.login("user01", 1)
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=b.user_id,
            file_name="big.bin",
            file_size=len(payload),
            trans_mode=ONLINE,
        )
        assert rsp.result_code == 0 and rsp.trans_mode == ONLINE and len(rsp.task_id) == 36
        (note,) = await b.wait_for("CID_FILE_NOTIFY")
        assert (
            note.task_id == rsp.task_id and note.from_user_id == a.user_id and note.file_size == len(payload)
        )
        sender, login = await FileClient.login(rsp.ip_addr_list[0], a.user_id, rsp.task_id, SENDER, payload)
        assert login.result_code == 0
        receiver, login = await FileClient.login(note.ip_addr_list[0], b.user_id, note.task_id, RECVER)
        assert login.result_code == 0
        got = await receiver.pull_all(note.file_size)
        assert sha(got) == sha(payload)
        await receiver.core.send("CID_FILE_STATE", receiver_state(note.task_id, b.user_id))
        await sender.wait_state(DONE)
        await sender.close()
        await receiver.close()

    asyncio.run(run_file_cluster(tmp_path, body))


def receiver_state(task_id: str, user_id: int) -> object:
    from tests.integration.file_support import msg

    return msg("CID_FILE_STATE", state=DONE, task_id=task_id, user_id=user_id)


def test_offline_transfer_of_5mb_upload_list_download_delete(tmp_path: Path) -> None:
    payload = os.urandom(FIVE_MB)

    async def body(c: FileCluster) -> None:
        a = await c.login("user02", 0)
        b_id = c.users["user03"]
        # The receiver is not logged in: an ONLINE request is downgraded to OFFLINE.
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=b_id,
            file_name="report.pdf",
            file_size=len(payload),
            trans_mode=ONLINE,
        )
        assert rsp.result_code == 0 and rsp.trans_mode == OFFLINE
        up, login = await FileClient.login(rsp.ip_addr_list[0], a.user_id, rsp.task_id, UPLOAD, payload)
        assert login.result_code == 0
        await up.wait_state(DONE, timeout=30)
        assert up.pulls_served == FIVE_MB // (32 * 1024)  # pulled in 32 KiB segments
        stored = offline_path(c.data_dir, rsp.task_id)
        assert stored.exists() and stored.stat().st_size > FIVE_MB  # header + content
        await a.send(
            "CID_FILE_ADD_OFFLINE_REQ",
            from_user_id=0,
            to_user_id=b_id,
            task_id=rsp.task_id,
            file_name="report.pdf",
            file_size=len(payload),
        )
        await up.close()
        b = await c.login("user03", 1)
        # IMFileAddOfflineReq has no reply: the record appears once the file service has written it.
        for _ in range(200):
            listing = await b.call("CID_FILE_HAS_OFFLINE_REQ", user_id=0)
            if listing.offline_file_list:
                break
            await asyncio.sleep(0.01)
        (item,) = listing.offline_file_list
        # the listing hands the receiver a grant (task id ~ expiry ~ tag) made for it, not the bare task id
        assert (item.task_id.split("~")[0], item.from_user_id, item.file_name, item.file_size) == (
            rsp.task_id,
            a.user_id,
            "report.pdf",
            len(payload),
        )
        for user, task in ((b.user_id, rsp.task_id), (a.user_id, item.task_id), (a.user_id, rsp.task_id)):
            thief, refused = await FileClient.login(listing.ip_addr_list[0], user, task, DOWNLOAD)
            assert refused.result_code != 0, (user, task)  # the bare id, or another user's grant
            await thief.close()
        down, login = await FileClient.login(listing.ip_addr_list[0], b.user_id, item.task_id, DOWNLOAD)
        assert login.result_code == 0
        got = await down.pull_all(item.file_size, 128 * 1024, mode=OFFLINE)
        assert sha(got) == sha(payload)
        await down.close()
        await b.send(
            "CID_FILE_DEL_OFFLINE_REQ", from_user_id=a.user_id, to_user_id=b.user_id, task_id=item.task_id
        )
        for _ in range(200):
            if not stored.exists():
                break
            await asyncio.sleep(0.01)
        assert not stored.exists()
        assert not (await b.call("CID_FILE_HAS_OFFLINE_REQ", user_id=0)).offline_file_list

    asyncio.run(run_file_cluster(tmp_path, body))


def test_offline_ready_notify_reaches_online_receiver(tmp_path: Path) -> None:
    payload = b"x" * 100_000

    async def body(c: FileCluster) -> None:
        a = await c.login("user04", 0)
        b = await c.login("user05", 1)
        rsp = await a.call(
            "CID_FILE_REQUEST",
            from_user_id=0,
            to_user_id=b.user_id,
            file_name="n.txt",
            file_size=len(payload),
            trans_mode=OFFLINE,
        )
        assert rsp.result_code == 0 and rsp.trans_mode == OFFLINE
        up, _ = await FileClient.login(rsp.ip_addr_list[0], a.user_id, rsp.task_id, UPLOAD, payload)
        await up.wait_state(DONE)
        await a.send(
            "CID_FILE_ADD_OFFLINE_REQ",
            from_user_id=0,
            to_user_id=b.user_id,
            task_id=rsp.task_id,
            file_name="n.txt",
            file_size=len(payload),
        )
        (note,) = await b.wait_for("CID_FILE_NOTIFY", lambda m: m.offline_ready == 1)
        assert (note.task_id.split("~")[0], note.file_size, note.trans_mode) == (
            rsp.task_id,
            len(payload),
            OFFLINE,
        )
        await up.close()

    asyncio.run(run_file_cluster(tmp_path, body))
