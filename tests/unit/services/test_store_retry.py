"""A store whose answer is lost with the msg-biz link is sent again by msg and stored once by biz.

msg side: `_PendingStore` resends the same request when the link drops unanswered (flagged as a resend when it
carries a token), and acks with the stored id once an answer comes. biz side: a request without a client msg
id carries msg's token; biz answers the token's second copy with the id it already stored instead of storing
the message again (tests/unit/services/test_store_resend_durable.py: also after biz restarted).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from generated.teamtalk.registry import REGISTRY
from runtime.framing import Frame
from runtime.monitor.metrics import Metrics
from runtime.services.biz.handlers_msg import MessageHandlers, new_store_tokens
from runtime.services.contracts import (
    StoreAttempt,
    StoreTokens,
    is_resend,
    pack_store_request,
    request_token,
    resend_request,
    unpack_store_reply,
)
from runtime.services.links import Proto, relay_head
from runtime.services.msg import chat as chat_mod
from runtime.services.protocol import enums_of
from runtime.storage import NewUser
from runtime.storage.sqlite import SqliteStorage

MsgData = REGISTRY.by_name("CID_MSG_DATA").message_class


class Biz(MessageHandlers):
    def __init__(self, storage: SqliteStorage) -> None:
        self.storage = storage
        self.proto = Proto(REGISTRY)
        self._group_cache = {}
        self._store_tokens = new_store_tokens()
        self._group_bit = int(enums_of(REGISTRY).MsgTypeBits.GROUP)


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])


def test_biz_stores_a_resent_token_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with SqliteStorage(tmp_path) as store:
            a = await store.create_user(NewUser(login_name="a", password_hash="x"))
            b = await store.create_user(NewUser(login_name="b", password_hash="x"))
            biz = Biz(store)
            request = MsgData(
                from_user_id=a.id,
                to_session_id=b.id,
                msg_id=0,
                create_time=0,
                msg_type=1,
                msg_data=b"hello",
                attach_data=pack_store_request(0, b"\x01\x02\x03\x04\x00\x00\x00\x07"),
            ).SerializeToString()
            replies: list[Any] = []
            for _ in range(2):  # the first answer was lost with the link: msg sends the same bytes again
                done = asyncio.get_running_loop().create_future()
                assert biz.store_single_nowait(a.id, MsgData.FromString(request), False, done.set_result)
                replies.append(await done)
            first, again = replies
            assert (
                first.msg_id > 0 and again.msg_id == first.msg_id and again.create_time == first.create_time
            )
            assert unpack_store_reply(first.attach_data)[2] is False
            assert unpack_store_reply(again.attach_data)[2] is True  # flagged as a duplicate
            # Another token (another message with the same text) is a new message.
            other = MsgData.FromString(request)
            other.attach_data = pack_store_request(0, b"\x01\x02\x03\x04\x00\x00\x00\x08")
            done = asyncio.get_running_loop().create_future()
            biz.store_single_nowait(a.id, other, False, done.set_result)
            assert (await done).msg_id == first.msg_id + 1
        assert rows(tmp_path / "ttgen.db") == 2

    asyncio.run(main())


class FakeLink:
    """Records requests; answers each with `answer(request)` (None: the link drops before answering)."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.sent: list[bytes] = []

    def request(self, cid: int, body: bytes, callback: Any, *, flag: int = 0, head: bytes = b"") -> bool:
        self.sent.append(head + body)
        answer = self.answers.pop(0)
        frame = None if answer is None else Frame(3, cid, 1, answer, flag=0x8000)
        asyncio.get_running_loop().call_soon(callback, frame)
        return True


class FakeBiz:
    def __init__(self, link: FakeLink) -> None:
        self._link = link

    def link(self, _user: int) -> FakeLink:
        return self._link


class FakeChat:
    """What `_PendingStore` is given of the chat component: its biz pool, counter, `stored` and `ack`."""

    def __init__(self, link: FakeLink) -> None:
        self.link = link
        self.biz = FakeBiz(link)
        self.m_store_retries = Metrics().counter("retries", "")
        self.m_store_unknown = Metrics().counter("unknown", "")
        self.stored_bodies: list[bytes] = []
        self.acks: list[Any] = []

    def stored(self, _c: Any, _st: Any, _command: str, _cid: int, _msg: Any, result: Any, _g: bool) -> None:
        self.stored_bodies.append(result.message.msg_data)

    def ack(self, user: int, to: int, is_group: bool) -> Any:
        return ("ack0", user, to)


class FakeCtx:
    def __init__(self, chat: FakeChat) -> None:
        self.chat = chat
        self.forgotten = False

    def reply(self, ack: Any, *, remember: bool = True) -> None:
        self.chat.acks.append((ack, remember))

    def forget(self) -> None:
        self.forgotten = True


class FakeState:
    user_id = 7


def test_msg_resends_the_same_request_after_the_link_dropped() -> None:
    async def main() -> tuple[FakeChat, FakeLink, bytes]:
        stored = MsgData(from_user_id=7, to_session_id=8, msg_id=41, create_time=5, msg_type=1)
        stored.msg_data = b"ok"
        link = FakeLink([None, None, stored.SerializeToString()])  # dropped twice, then answered
        chat = FakeChat(link)
        msg = MsgData(from_user_id=7, to_session_id=8, msg_id=0, create_time=0, msg_type=1, msg_data=b"x")
        # as `ChatHandlers.send` makes it when the client gave no id: a token of ours in the request
        attempt = StoreAttempt(msg, StoreTokens(), group=False, delays=(0.01, 0.01, 0.01))
        pending = chat_mod._PendingStore(
            chat, FakeCtx(chat), FakeState(), "CID_MSG_DATA", 0x301, attempt, False
        )  # type: ignore[arg-type]
        first_request = attempt.request
        link.request(0x301, first_request, pending.stored, head=relay_head((7,)))  # as `send` sends it
        await asyncio.sleep(0.2)
        return chat, link, first_request

    chat, link, first_request = asyncio.run(main())
    assert len(link.sent) == 3 and link.sent[1] == link.sent[2] != link.sent[0]
    head = len(relay_head((7,)))
    assert link.sent[0][head:] == first_request
    first, resent = (MsgData.FromString(body[head:]) for body in link.sent[:2])
    # the same message, its resends flagged as such (so biz also asks storage for the token)
    assert not is_resend(first.attach_data) and is_resend(resent.attach_data)
    assert resent.attach_data == resend_request(first.attach_data)
    assert request_token(resent.attach_data) == request_token(first.attach_data) != 0
    resent.attach_data = first.attach_data
    assert resent == first
    assert chat.stored_bodies == [b"ok"] and chat.acks == []  # acked by `stored`, never with msg id 0
    assert chat.m_store_retries.value == 2


@pytest.mark.parametrize("answer", [None, b""], ids=["link-lost", "empty-answer"])
def test_msg_gives_up_after_its_retries_without_calling_the_message_refused(answer: bytes | None) -> None:
    """The store outcome stays unknown (biz may have committed before its answer was lost): no msg id 0 (that
    says "not stored"); no ack at all, the request forgotten by the dedup window, so the client's retransmit
    is processed afresh and answered by biz with the stored id if there is one."""

    async def main() -> tuple[FakeChat, FakeCtx]:
        link = FakeLink([answer, answer, answer])
        chat = FakeChat(link)
        msg = MsgData(from_user_id=7, to_session_id=8, msg_id=3, create_time=0, msg_type=1, msg_data=b"x")
        attempt = StoreAttempt(msg, StoreTokens(), group=False, delays=(0.01, 0.01))  # a client msg id
        ctx = FakeCtx(chat)
        pending = chat_mod._PendingStore(chat, ctx, FakeState(), "CID_MSG_DATA", 0x301, attempt, False)  # type: ignore[arg-type]
        link.request(0x301, attempt.request, pending.stored)
        await asyncio.sleep(0.2)
        return chat, ctx

    chat, ctx = asyncio.run(main())
    assert chat.stored_bodies == [] and chat.acks == []  # neither acked nor refused
    assert ctx.forgotten and chat.m_store_unknown.value == 1 and chat.m_store_retries.value == 2
    request = chat.link.sent[0]
    assert chat.link.sent[1:] == [relay_head((7,)) + request] * 2  # no token, nothing to flag: the same bytes


class GoneBiz:
    """A biz pool with no live instance for the first `down` lookups, then `link`."""

    def __init__(self, link: FakeLink, down: int) -> None:
        self._link, self.down = link, down

    def link(self, _user: int) -> FakeLink | None:
        if self.down:
            self.down -= 1
            return None
        return self._link


@pytest.mark.parametrize("down", [3, 1], ids=["never-back", "back-in-time"])
def test_no_biz_reachable_waits_out_the_retries_then_says_not_stored(down: int) -> None:
    """No biz instance is reachable when the message comes (one restarting): msg tries again after the
    attempt's delays rather than refusing at once; if none came back, nothing left for biz, so msg id 0 (not
    stored, not remembered) is the truth; if one came back, the message is stored and acked."""

    async def main() -> FakeChat:
        stored = MsgData(
            from_user_id=7, to_session_id=8, msg_id=41, create_time=5, msg_type=1, msg_data=b"ok"
        )
        link = FakeLink([stored.SerializeToString()])
        chat = FakeChat(link)
        chat.biz = GoneBiz(link, down)  # type: ignore[assignment]
        msg = MsgData(from_user_id=7, to_session_id=8, msg_id=3, create_time=0, msg_type=1, msg_data=b"x")
        attempt = StoreAttempt(msg, StoreTokens(), group=False, delays=(0.01, 0.01))
        ctx = FakeCtx(chat)
        pending = chat_mod._PendingStore(chat, ctx, FakeState(), "CID_MSG_DATA", 0x301, attempt, False)  # type: ignore[arg-type]
        pending.stored(None)  # as `ChatHandlers.send` does when no link is up
        await asyncio.sleep(0.2)
        return chat

    chat = asyncio.run(main())
    if down == 3:
        assert chat.link.sent == [] and chat.acks == [(("ack0", 7, 8), False)] and chat.stored_bodies == []
        assert chat.m_store_unknown.value == 0
    else:
        assert len(chat.link.sent) == 1 and chat.acks == [] and chat.stored_bodies == [b"ok"]


def test_a_store_attempt_prepares_the_request_and_reads_the_answer() -> None:
    tokens = StoreTokens()
    msg = MsgData(from_user_id=7, to_session_id=9, msg_id=0, create_time=0, msg_type=0x11, msg_data=b"x")
    attempt = StoreAttempt(msg, tokens, group=True, version=4, delays=(0.5,))
    sent = MsgData.FromString(attempt.request)
    assert sent.attach_data[:4] == b"\x00\x00\x00\x04" and request_token(sent.attach_data) != 0
    assert attempt.retry_delay() == 0.5 and attempt.retry_delay() is None  # the delays, then give up
    assert attempt.answer(b"") is None  # an empty answer: biz failed without one
    reply = MsgData(from_user_id=7, to_session_id=9, msg_id=77, create_time=3, msg_type=0x11, msg_data=b"x")
    from runtime.services.contracts import pack_store_reply

    reply.attach_data = pack_store_reply(0, 5, False, [7, 9])
    result = attempt.answer(reply.SerializeToString())
    assert result is not None and result.stored and result.message.msg_id == 77
    assert (result.result, result.version, result.duplicate, result.members) == (0, 5, False, [7, 9])
    # A client msg id: no token; a 1:1 message's stray attach_data is dropped.
    one = MsgData(from_user_id=7, to_session_id=9, msg_id=12, create_time=0, msg_type=1, msg_data=b"x")
    one.attach_data = b"client junk"
    assert not MsgData.FromString(StoreAttempt(one, tokens, group=False).request).HasField("attach_data")


def test_store_request_formats() -> None:
    token = b"\x01\x02\x03\x04\x00\x00\x00\x07"
    first = pack_store_request(9, token)
    assert len(first) == 12 and not is_resend(first)  # the format before resend flags: not a resend
    flagged = pack_store_request(9, token, resend=True)
    assert flagged == first + b"\x01" and is_resend(flagged) and resend_request(first) == flagged
    assert resend_request(flagged) is None and resend_request(b"\x00\x00\x00\x09") is None  # no token
    assert request_token(first) == request_token(flagged) == 0x0102030400000007
    assert request_token(b"\xff" * 12) == -1 and request_token(b"\x00\x00\x00\x09") == 0  # signed; none
    assert not is_resend(b"") and not is_resend(b"\x00" * 4)
