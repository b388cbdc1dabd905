"""Unit: long-poll sessions (queue, ack, gap, waking polls), token buckets, events (no sockets)."""

from __future__ import annotations

import asyncio

from generated.teamtalk.registry import REGISTRY
from runtime.services.gateway import sessions as sessions_mod
from runtime.services.gateway.relays import chat_event, chat_key, generic_event
from runtime.services.gateway.sessions import SessionTable, TokenBucket


def test_events_stay_until_acked_and_overflow_reports_a_gap(monkeypatch: object) -> None:
    table = SessionTable(idle_timeout=90)
    s = table.create(7, 1)
    assert table.get(s.token) is s and len(s.token) >= 40
    for i in range(5):
        s.push({"type": "x", "i": i})
    assert [e["seq"] for e in s.pending(2)] == [3, 4, 5]
    s.ack(3)
    assert [e["seq"] for e in s.pending(0)] == [4, 5]
    sessions_mod.MAX_QUEUE, saved = 3, sessions_mod.MAX_QUEUE
    try:
        for _ in range(5):
            s.push({"type": "y"})
    finally:
        sessions_mod.MAX_QUEUE = saved
    events, gap = asyncio.run(s.wait(0, 0))
    assert gap and [e["seq"] for e in events] == [8, 9, 10]
    assert table.remove(s) and table.get(s.token) is None and not table.remove(s)


def test_a_waiting_poll_returns_when_an_event_arrives_and_a_newer_poll_ends_an_older_one() -> None:
    async def main() -> None:
        s = SessionTable(90).create(1, 1)
        waiter = asyncio.create_task(s.wait(0, 10))
        await asyncio.sleep(0)
        s.push({"type": "msg"})
        events, gap = await asyncio.wait_for(waiter, 2)
        assert [e["type"] for e in events] == ["msg"] and not gap
        old = asyncio.create_task(s.wait(1, 10))
        await asyncio.sleep(0)
        new = asyncio.create_task(s.wait(1, 0.05))
        assert (await asyncio.wait_for(old, 2)) == ([], False)
        assert (await asyncio.wait_for(new, 2)) == ([], False)

    asyncio.run(main())


def test_duplicate_chat_keys_are_suppressed() -> None:
    s = SessionTable(90).create(1, 1)
    assert s.first_delivery((1, 2, 3)) and not s.first_delivery((1, 2, 3))


def test_token_bucket_limits_bursts() -> None:
    bucket = TokenBucket(rate=1.0, burst=2.0, stamp=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert bucket.take(1.0) and not bucket.take(1.0)


def test_events_from_messages() -> None:
    cls = REGISTRY.by_name("CID_MSG_DATA").message_class
    msg = cls(from_user_id=1, to_session_id=2, msg_id=5, create_time=9, msg_type=0x01, msg_data="hé".encode())
    enums = REGISTRY.enums
    ev = chat_event(msg, enums)
    assert (ev["type"], ev["text"], ev["session_type"], ev["data_b64"]) == ("msg", "hé", 1, "aMOp")
    assert chat_key(2, msg, enums) == (1, 1, 5) and chat_key(1, msg, enums) == (1, 2, 5)
    binary = cls(from_user_id=1, to_session_id=2, msg_id=6, create_time=9, msg_type=0x11, msg_data=b"\xff")
    assert chat_event(binary, enums)["text"] is None and chat_event(binary, enums)["session_type"] == 2
    note = REGISTRY.by_name("CID_MSG_READ_NOTIFY").message_class(
        user_id=1, session_id=2, msg_id=3, session_type=1
    )
    assert generic_event("CID_MSG_READ_NOTIFY", note)["type"] == "read"
