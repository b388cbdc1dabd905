"""A store whose first copy a biz committed just before it died is not stored again when msg resends it.

msg flags the resends of a store request (`pack_store_request(..., resend=True)`), and biz stores msg's token
with the message. A NEW biz service on the same database (its memory of tokens empty, as after a crash and a
restart) answers a flagged resend with the stored message (same msg id and time, duplicate flag) instead of
storing it twice. First sends are never looked up: they store as before.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.cluster.discovery import StaticDiscovery
from runtime.services.base import ServiceContext
from runtime.services.biz.service import BizService
from runtime.services.contracts import pack_store_request, unpack_store_reply
from runtime.services.links import FLAG_RELAY, Link, NoRequests, pack_relay
from runtime.storage import GroupType, NewUser

TOKEN = b"\x9a\x01\x02\x03\x00\x00\x00\x2a"
OTHER_TOKEN = b"\x9a\x01\x02\x03\x00\x00\x00\x2b"


@asynccontextmanager
async def running_biz(data_dir: Path) -> AsyncIterator[BizService]:
    """A biz service (a process of its own in a cluster) on the SQLite database in data_dir."""
    ctx = ServiceContext(
        name="biz",
        instance=0,
        registry=REGISTRY,
        config={"internal_port": 0},
        cluster_config={"storage": {"backend": "sqlite"}},
        data_dir=data_dir,
        discovery=StaticDiscovery([]),
    )
    biz = BizService(ctx)
    await biz.start()
    try:
        yield biz
    finally:
        await biz.stop()


async def store(
    biz: BizService,
    sender: int,
    to: int,
    text: bytes,
    token: bytes,
    *,
    resend: bool = False,
    command: str = "CID_MSG_DATA",
    group: bool = False,
) -> tuple[Any, bool]:
    """Send a store request as msg relays it; (biz's IMMsgData reply, its duplicate flag)."""
    info = REGISTRY.by_name(command)
    body = info.message_class(
        from_user_id=sender,
        to_session_id=to,
        msg_id=0,
        create_time=0,
        msg_type=0x11 if group else 0x01,
        msg_data=text,
        attach_data=pack_store_request(0, token, resend=resend),
    ).SerializeToString()
    (ep,) = biz.endpoints()
    _tr, link = await asyncio.get_running_loop().create_connection(
        lambda: Link(REGISTRY, NoRequests(), name="test->biz", dialer=True), ep.host, ep.port
    )
    try:
        frame = await link.call(info.command_id, pack_relay([sender], body), 10, flag=FLAG_RELAY)
    finally:
        link.close()
    cid, answer = frame.command_id, bytes(frame.body)
    reply: Any = biz.proto.parse(cid, answer)
    return reply, unpack_store_reply(reply.attach_data)[2]


def rows(db: Path, table: str = "messages") -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        found = conn.execute(f"SELECT msg_id, created, content, burn FROM {table} ORDER BY msg_id").fetchall()
    conn.close()
    return found


async def two_users(data_dir: Path) -> tuple[int, int]:
    async with running_biz(data_dir) as biz:
        a = await biz.storage.create_user(NewUser(login_name="a", password_hash="x"))
        b = await biz.storage.create_user(NewUser(login_name="b", password_hash="x"))
    return a.id, b.id


@pytest.mark.parametrize("command", ["CID_MSG_DATA", "CID_EXT_MSG_BURN"])
def test_resend_to_a_restarted_biz_is_answered_with_the_stored_message(tmp_path: Path, command: str) -> None:
    async def main() -> None:
        a, b = await two_users(tmp_path)
        async with running_biz(tmp_path) as first:
            stored, dup = await store(first, a, b, b"hello", TOKEN, command=command)
            assert stored.msg_id > 0 and not dup
        # biz is gone (its answer lost with it); msg resends, flagged, to the new biz process
        async with running_biz(tmp_path) as restarted:
            assert len(restarted._store_tokens) == 0
            again, dup = await store(restarted, a, b, b"hello", TOKEN, resend=True, command=command)
            assert (again.msg_id, again.create_time, dup) == (stored.msg_id, stored.create_time, True)
            # now remembered: a further resend is answered from memory, storage is not asked again
            assert len(restarted._store_tokens) == 1
            third, dup = await store(restarted, a, b, b"hello", TOKEN, resend=True, command=command)
            assert (third.msg_id, dup) == (stored.msg_id, True)
        assert rows(tmp_path / "ttgen.db") == [
            (stored.msg_id, stored.create_time, b"hello", int(command == "CID_EXT_MSG_BURN"))
        ]

    asyncio.run(main())


def test_first_sends_and_unknown_resends_store_normally(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = await two_users(tmp_path)
        async with running_biz(tmp_path) as first:
            one, dup = await store(first, a, b, b"one", TOKEN)
            assert not dup
        async with running_biz(tmp_path) as restarted:
            # an unflagged first send with a fresh token: stored, never looked up
            two, dup = await store(restarted, a, b, b"two", OTHER_TOKEN)
            assert two.msg_id == one.msg_id + 1 and not dup
            # a flagged resend whose token was never stored (its first copy was lost before the commit)
            three, dup = await store(restarted, b, a, b"three", TOKEN, resend=True)  # b never sent TOKEN
            assert three.msg_id == two.msg_id + 1 and not dup
            again, dup = await store(restarted, b, a, b"three", TOKEN, resend=True)  # its own resend: once
            assert (again.msg_id, dup) == (three.msg_id, True)
        assert [r[2] for r in rows(tmp_path / "ttgen.db")] == [b"one", b"two", b"three"]

    asyncio.run(main())


def test_group_resend_to_a_restarted_biz_is_answered_with_the_stored_message(tmp_path: Path) -> None:
    async def main() -> None:
        a, b = await two_users(tmp_path)
        async with running_biz(tmp_path) as first:
            group = await first.storage.create_group(a, "g", GroupType.TMP, [b])
            stored, dup = await store(first, a, group.id, b"hi all", TOKEN, group=True)
            assert stored.msg_id > 0 and not dup
        async with running_biz(tmp_path) as restarted:
            again, dup = await store(restarted, a, group.id, b"hi all", TOKEN, resend=True, group=True)
            assert (again.msg_id, again.create_time, dup) == (stored.msg_id, stored.create_time, True)
            members = unpack_store_reply(again.attach_data)[3]
            assert members is not None and sorted(members) == sorted([a, b])  # msg's cache was version 0
            other, dup = await store(restarted, a, group.id, b"next", OTHER_TOKEN, resend=True, group=True)
            assert other.msg_id == stored.msg_id + 1 and not dup
        with sqlite3.connect(tmp_path / "ttgen.db") as conn:
            found = conn.execute("SELECT msg_id, content FROM group_messages ORDER BY msg_id").fetchall()
        conn.close()
        assert found == [(stored.msg_id, b"hi all"), (stored.msg_id + 1, b"next")]

    asyncio.run(main())
