"""Unit tests of the dispatcher over in-memory transports (no sockets): replies, errors, gates, isolation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import rt_testproto as tp
from hypothesis import given
from hypothesis import strategies as st

from runtime.connection import Kind, State
from runtime.dispatch import Context, Dispatcher
from runtime.errors import StageError
from runtime.framing import Frame, FrameDecoder, encode_frame
from runtime.transport import Link


class MemoryTransport(asyncio.Transport):
    """Captures writes; closing reports connection_lost to the protocol like a real transport would."""

    def __init__(self, peer: tuple[str, int]) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.reading = True
        self.protocol: Link | None = None
        self.peer = peer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            assert self.protocol is not None
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    abort = close

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def frames(self) -> list[Frame]:
        return FrameDecoder().feed(b"".join(self.writes))


class Service:
    __mapping__ = {0x0103: "on_login", 0x0305: "on_echo", 0x0301: "on_msg"}

    def __init__(self) -> None:
        self.msgs: list[Any] = []
        self.rejected: list[StageError] = []
        self.gate = asyncio.Event()

    async def on_login(self, ctx: Context, msg: Any) -> Any:
        if msg.password != "ok":
            ctx.close("bad password")
            return tp.LoginRes(result_code=6)
        ctx.authenticate(len(msg.user_name), msg.client_type)
        return tp.LoginRes(result_code=0, user_id=ctx.user_id)

    async def on_echo(self, ctx: Context, msg: Any) -> Any:
        if msg.text == "boom":
            raise RuntimeError("handler bug")
        if msg.text == "wait":
            await self.gate.wait()
        if msg.text == "wrong type":
            return tp.Notify(text="?")
        if msg.text == "push":
            for link in LINKS:
                if link is not ctx.link:
                    ctx.push(link, "NOTIFY", tp.Notify(text="pushed"))
            return None
        return tp.Echo(text=msg.text.upper(), items=msg.items)

    async def on_msg(self, ctx: Context, msg: Any) -> Any:
        self.msgs.append(msg)
        return tp.MsgDataAck(user_id=ctx.user_id, session_id=msg.to_session_id, msg_id=len(self.msgs))

    def on_rejected(self, ctx: Context, msg: Any, error: StageError) -> None:
        self.rejected.append(error)


LINKS: list[Link] = []


def open_link(dispatcher: Dispatcher, port: int) -> tuple[Link, MemoryTransport]:
    link = Link(dispatcher.registry, Kind.CLIENT_SESSION, dispatcher)
    transport = MemoryTransport(("10.0.0.1", port))
    transport.protocol = link
    link.connection_made(transport)
    LINKS.append(link)
    return link, transport


def req(cid: int, seq: int, msg: Any, sid: int | None = None) -> bytes:
    return encode_frame(sid if sid is not None else cid >> 8, cid, seq, msg.SerializeToString())


LOGIN_OK = req(0x0103, 1, tp.LoginReq(user_name="alice", password="ok", client_type=1))


def run(
    test: Callable[[Dispatcher, Service], Awaitable[None]], overrides: dict[str, Any] | None = None
) -> None:
    async def main() -> None:
        LINKS.clear()
        service = Service()
        await test(Dispatcher(tp.build_registry(overrides), service), service)

    asyncio.run(main())


def msg_data(to: int = 9, data: bytes = b"hi") -> Any:
    return tp.MsgData(from_user_id=0, to_session_id=to, msg_id=0, msg_type=1, msg_data=data)


def test_login_then_request_reply_keeps_seq_and_uses_one_write() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0305, 77, tp.Echo(text="hi", items=[1])))
        assert len(t.writes) == 1  # both replies batched into one write
        login, echo = t.frames()
        assert (login.command_id, login.seq) == (0x0104, 1)
        assert tp.LoginRes.FromString(login.body).user_id == 5
        assert (echo.service_id, echo.command_id, echo.seq) == (3, 0x0306, 77)
        assert tp.Echo.FromString(echo.body).text == "HI"

    run(body)


def test_failed_login_replies_then_closes() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(req(0x0103, 1, tp.LoginReq(user_name="a", password="no", client_type=1)))
        assert tp.LoginRes.FromString(t.frames()[0].body).result_code == 6
        assert t.closing and link.conn is not None and link.conn.close_reason == "bad password"

    run(body)


def test_request_before_login_closes_only_that_connection() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        bad, bt = open_link(d, 1)
        good, gt = open_link(d, 2)
        good.data_received(LOGIN_OK)
        bad.data_received(req(0x0305, 1, tp.Echo(text="sneaky")))
        assert bt.closing and bt.frames() == []
        good.data_received(req(0x0305, 2, tp.Echo(text="fine")))
        assert not gt.closing and gt.frames()[-1].seq == 2
        await asyncio.wait_for(bad.closed, 1)
        assert "before authentication" in bad.closed.result()

    run(body)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xff\xff", "undecodable"),
        (tp.Echo(text="x").SerializeToString() + b"\x0a", "undecodable"),
        (tp.MsgData(from_user_id=1).SerializePartialToString(), "required"),
    ],
)
def test_garbage_and_incomplete_bodies_close_that_connection(
    payload: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        bad, bt = open_link(d, 1)
        good, gt = open_link(d, 2)
        for link in (bad, good):
            link.data_received(LOGIN_OK)
        cid = 0x0301 if reason == "required" else 0x0305
        bad.data_received(encode_frame(3, cid, 5, payload))
        assert bt.closing and len(bt.frames()) == 1  # only the login reply
        good.data_received(req(0x0301, 6, msg_data()))
        assert not gt.closing and gt.frames()[-1].command_id == 0x0302

    with caplog.at_level(logging.WARNING, logger="runtime.dispatch"):
        run(body)
    assert any("10.0.0.1:1" in r.getMessage() and "seq 5" in r.getMessage() for r in caplog.records)


def test_handler_exception_is_logged_and_the_connection_survives(caplog: pytest.LogCaptureFixture) -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(
            LOGIN_OK + req(0x0305, 2, tp.Echo(text="boom")) + req(0x0305, 3, tp.Echo(text="ok"))
        )
        assert [f.seq for f in t.frames()] == [1, 3] and not t.closing

    with caplog.at_level(logging.ERROR, logger="runtime.dispatch"):
        run(body)
    assert any("ECHO_REQ failed" in r.getMessage() for r in caplog.records)


def test_wrong_reply_type_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0305, 2, tp.Echo(text="wrong type")))
        assert [f.seq for f in t.frames()] == [1]

    with caplog.at_level(logging.ERROR, logger="runtime.dispatch"):
        run(body)
    assert any("returned a Notify" in r.getMessage() for r in caplog.records)


def test_suspending_handler_replies_later_and_in_its_own_task() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(
            LOGIN_OK + req(0x0305, 2, tp.Echo(text="wait")) + req(0x0305, 3, tp.Echo(text="now"))
        )
        assert [f.seq for f in t.frames()] == [1, 3]  # the waiting handler does not block the next one
        s.gate.set()
        await d.drain(1.0)
        await asyncio.sleep(0)  # let the scheduled flush run
        assert [f.seq for f in t.frames()] == [1, 3, 2]

    run(body)


def test_unknown_and_unhosted_commands_are_ignored_then_close() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK)
        unknown = encode_frame(9, 0x09EE, 2, b"")
        s2c = req(0x0306, 3, tp.Echo())  # a server-to-client command sent by a client
        s2s = req(0x0709, 4, tp.Notify())  # a server-only command
        link.data_received(unknown + s2c + s2s)
        assert not t.closing and link.conn is not None and link.conn.unknown_count == 3
        link.data_received(unknown * 6)
        assert t.closing

    run(body)


def test_service_id_mismatch_is_logged_but_dispatched(caplog: pytest.LogCaptureFixture) -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0305, 2, tp.Echo(text="x"), sid=6))
        assert t.frames()[-1].seq == 2

    with caplog.at_level(logging.WARNING, logger="runtime.dispatch"):
        run(body)
    assert any("service id 6" in r.getMessage() for r in caplog.records)


def test_input_stage_drops_self_and_empty_messages_and_rate_limits() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK)  # user id 5
        link.data_received(req(0x0301, 2, msg_data(to=5)) + req(0x0301, 3, msg_data(data=b"")))
        assert s.msgs == [] and not t.closing
        link.data_received(b"".join(req(0x0301, 10 + i, msg_data()) for i in range(25)))
        # 20/s per connection, counting the two dropped above (floods cost tokens whatever their content);
        # the excess is dropped silently as in TeamTalk.
        assert len(s.msgs) == 18
        other, _ot = open_link(d, 2)
        other.data_received(LOGIN_OK + req(0x0301, 2, msg_data()))
        assert len(s.msgs) == 19  # another connection has its own bucket

    run(body)


def test_unanswered_drops_are_logged_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.dispatch import dispatcher as dispatcher_mod

    def rate_lines() -> list[str]:
        return [m for r in caplog.records if "dropped unanswered (rate" in (m := r.getMessage())]

    async def body(d: Dispatcher, s: Service) -> None:
        link, _t = open_link(d, 1)
        link.data_received(LOGIN_OK)
        link.data_received(b"".join(req(0x0301, 10 + i, msg_data()) for i in range(25)))
        assert len(s.msgs) == 20  # five dropped by the 20/s rate limit
        assert len(rate_lines()) == 1 and "more since" not in rate_lines()[0]  # four of them unlogged
        monkeypatch.setattr(dispatcher_mod, "DROP_LOG_EVERY", 0.0)
        link.data_received(req(0x0301, 40, msg_data()))  # the interval has passed: logged, with the count
        assert len(rate_lines()) == 2 and "(4 more since the last such line)" in rate_lines()[1]

    with caplog.at_level(logging.INFO, logger="runtime.dispatch"):
        run(body)


def test_reject_action_reaches_the_service_hook() -> None:
    policy = {"MSG_DATA": {"input": {"rate": "1/s", "on_rate_exceeded": "reject"}}}

    async def body(d: Dispatcher, s: Service) -> None:
        link, _t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0301, 2, msg_data()) + req(0x0301, 3, msg_data()))
        assert len(s.msgs) == 1 and [e.rule for e in s.rejected] == ["rate"]

    run(body, policy)


def test_dedup_answers_a_retransmit_without_processing_it_twice() -> None:
    policy = {"MSG_DATA": {"transport": {"dedup": "per_sender", "retransmit": "until_ack"}}}

    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        frame = req(0x0301, 2, msg_data())
        link.data_received(LOGIN_OK + frame + frame)
        acks = [f for f in t.frames() if f.command_id == 0x0302]
        assert len(s.msgs) == 1 and len(acks) == 2 and acks[0].body == acks[1].body
        link.data_received(req(0x0301, 3, msg_data()))  # a new seq is a new message
        assert len(s.msgs) == 2

    run(body, policy)


def test_per_connection_dedup_never_answers_another_connection_of_the_same_user() -> None:
    """A second device (or the same client after a reconnect, whose seq restarts) sending the same text with
    the same seq is a new message; a retransmit on one connection is still answered from the window."""
    policy = {"MSG_DATA": {"transport": {"dedup": "per_connection", "retransmit": "until_ack"}}}

    async def body(d: Dispatcher, s: Service) -> None:
        pc, t_pc = open_link(d, 1)
        phone, t_phone = open_link(d, 2)
        frame = req(0x0301, 2, msg_data(data=b"ok"))
        pc.data_received(LOGIN_OK + frame)
        phone.data_received(LOGIN_OK + frame)  # same user (alice), same seq, same content
        assert len(s.msgs) == 2
        pc.data_received(frame)  # a retransmit on the first connection
        assert len(s.msgs) == 2
        pc_acks = [f for f in t_pc.frames() if f.command_id == 0x0302]
        phone_acks = [f for f in t_phone.frames() if f.command_id == 0x0302]
        assert len(pc_acks) == 2 and pc_acks[0].body == pc_acks[1].body
        assert len(phone_acks) == 1 and phone_acks[0].body != pc_acks[0].body
        pc.connection_lost(None)
        again, _ = open_link(d, 1)  # the same address and port, reconnected: seq restarts
        again.data_received(LOGIN_OK + frame)
        assert len(s.msgs) == 3

    run(body, policy)


def test_per_sender_dedup_matches_any_connection_of_the_user() -> None:
    """What `per_sender` means (and why the bundled spec does not use it): the second device's copy is taken
    for a retransmit of the first."""
    policy = {"MSG_DATA": {"transport": {"dedup": "per_sender", "retransmit": "until_ack"}}}

    async def body(d: Dispatcher, s: Service) -> None:
        pc, _ = open_link(d, 1)
        phone, _ = open_link(d, 2)
        frame = req(0x0301, 2, msg_data(data=b"ok"))
        pc.data_received(LOGIN_OK + frame)
        phone.data_received(LOGIN_OK + frame)
        assert len(s.msgs) == 1

    run(body, policy)


def test_compressed_bombs_are_held_to_the_connection_inflate_budget() -> None:
    """A 1 KiB zlib frame that inflates to the 1 MiB limit costs the attacker nothing and us a megabyte: a
    connection may make us inflate only so much (INFLATE_BURST at once), then it is closed; others go on."""
    import zlib

    from runtime.framing import FLAG_COMPRESSED
    from runtime.stages.unpack import INFLATE_BURST

    async def body(d: Dispatcher, s: Service) -> None:
        limit = d.routes[0x0305].stages.unpack.max_bytes
        bomb = zlib.compress(tp.Echo(blob=b"\0" * (limit - 8)).SerializeToString(), 9)
        assert len(bomb) < 2048
        frame = encode_frame(3, 0x0305, 5, bomb, flag=FLAG_COMPRESSED)
        attacker, t_attacker = open_link(d, 1)
        bystander, t_bystander = open_link(d, 2)
        attacker.data_received(LOGIN_OK)
        bystander.data_received(LOGIN_OK)
        answered = 0
        for _ in range(3 * INFLATE_BURST // limit):
            attacker.data_received(frame)
            if attacker.conn is None or not attacker.conn.is_open:
                break
            answered += 1
        await asyncio.sleep(0)
        assert t_attacker.closing
        assert answered == INFLATE_BURST // limit
        bystander.data_received(req(0x0305, 2, tp.Echo(text="hi")))
        assert [f.command_id for f in t_bystander.frames()] == [0x0104, 0x0306]

    run(body)


def test_the_decoded_body_is_held_to_the_input_limit_too() -> None:
    """`input.max_bytes` bounds the body as received; a compressed body may not inflate beyond it either."""
    import zlib

    from runtime.framing import FLAG_COMPRESSED

    async def body(d: Dispatcher, s: Service) -> None:
        assert d.routes[0x0305].stages.unpack.max_bytes == 100
        link, t = open_link(d, 1)
        small = zlib.compress(tp.Echo(text="x" * 90).SerializeToString())
        big = zlib.compress(tp.Echo(text="x" * 200).SerializeToString())
        assert len(big) < 100
        link.data_received(LOGIN_OK + encode_frame(3, 0x0305, 2, small, flag=FLAG_COMPRESSED))
        assert [f.command_id for f in t.frames()] == [0x0104, 0x0306]
        link.data_received(encode_frame(3, 0x0305, 3, big, flag=FLAG_COMPRESSED))
        await asyncio.sleep(0)
        assert t.closing

    run(body, {"ECHO_REQ": {"input": {"max_bytes": 100}}})


class DeferredService(Service):
    """Acks MSG_DATA from a later callback (`ctx.reply`), like msg does after biz stored the message."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Context, Any]] = []

    async def on_msg(self, ctx: Context, msg: Any) -> Any:
        self.msgs.append(msg)
        self.pending.append((ctx, msg))
        return None

    def answer(self, *, remember: bool = True) -> None:
        ctx, msg = self.pending.pop(0)
        ack = tp.MsgDataAck(user_id=ctx.user_id, session_id=msg.to_session_id, msg_id=len(self.msgs))
        ctx.reply(ack, remember=remember)


def run_deferred(test: Callable[[Dispatcher, DeferredService], Awaitable[None]]) -> None:
    policy = {"MSG_DATA": {"transport": {"dedup": "per_sender", "retransmit": "until_ack"}}}

    async def main() -> None:
        LINKS.clear()
        service = DeferredService()
        await test(Dispatcher(tp.build_registry(policy), service), service)

    asyncio.run(main())


def acks_of(t: MemoryTransport) -> list[Frame]:
    return [f for f in t.frames() if f.command_id == 0x0302]


def test_dedup_answers_a_retransmit_with_a_reply_sent_later_by_ctx_reply() -> None:
    async def body(d: Dispatcher, s: DeferredService) -> None:
        link, t = open_link(d, 1)
        frame = req(0x0301, 2, msg_data())
        link.data_received(LOGIN_OK + frame)
        s.answer()
        await asyncio.sleep(0)
        link.data_received(frame)  # the ack was lost: the client sends again
        acks = acks_of(t)
        assert len(s.msgs) == 1 and len(acks) == 2 and acks[0].body == acks[1].body and acks[1].seq == 2

    run_deferred(body)


def test_a_duplicate_arriving_before_the_first_reply_gets_that_reply() -> None:
    async def body(d: Dispatcher, s: DeferredService) -> None:
        a, at = open_link(d, 1)
        b, bt = open_link(d, 2)  # the same user on a new connection, e.g. after a reconnect
        frame = req(0x0301, 2, msg_data())
        a.data_received(LOGIN_OK + frame)
        b.data_received(LOGIN_OK + frame)
        assert len(s.msgs) == 1 and acks_of(bt) == []
        s.answer()
        await asyncio.sleep(0)  # writes outside a read are flushed once per loop iteration
        assert len(acks_of(at)) == 1 and len(acks_of(bt)) == 1
        assert acks_of(at)[0].body == acks_of(bt)[0].body

    run_deferred(body)


def test_a_provisional_reply_is_not_remembered() -> None:
    async def body(d: Dispatcher, s: DeferredService) -> None:
        link, t = open_link(d, 1)
        frame = req(0x0301, 2, msg_data())
        link.data_received(LOGIN_OK + frame)
        s.answer(remember=False)  # e.g. "not stored, send again"
        link.data_received(frame)
        assert len(s.msgs) == 2  # processed afresh, not answered from the window
        s.answer()
        await asyncio.sleep(0)
        assert len(acks_of(t)) == 2

    run_deferred(body)


def test_push_to_another_connection_is_flushed_once_per_loop_iteration() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        a, _at = open_link(d, 1)
        b, bt = open_link(d, 2)
        a.data_received(LOGIN_OK)
        b.data_received(LOGIN_OK)
        a.data_received(req(0x0305, 2, tp.Echo(text="push")) + req(0x0305, 3, tp.Echo(text="push")))
        writes = len(bt.writes)
        await asyncio.sleep(0)
        assert len(bt.writes) == writes + 1  # two pushes, one write
        pushes = [f for f in bt.frames() if f.command_id == 0x0203]
        assert [(p.seq, tp.Notify.FromString(p.body).text) for p in pushes] == [(0, "pushed")] * 2

    run(body)


def test_flow_control_pauses_reading_while_the_peer_does_not_read() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        link.pause_writing()
        assert not t.reading
        link.resume_writing()
        assert t.reading

    run(body)


def test_connection_state_after_lost() -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        link, _t = open_link(d, 1)
        link.close("bye")
        assert await asyncio.wait_for(link.closed, 1) == "bye"
        assert link.conn is not None and link.conn.state is State.CLOSED
        assert not link.send_frame(1, 2, 3, b"")

    run(body)


@given(st.lists(st.binary(max_size=200), max_size=6), st.booleans())
def test_arbitrary_bytes_reach_no_exception_and_spare_other_connections(
    chunks: list[bytes], login: bool
) -> None:
    async def body(d: Dispatcher, s: Service) -> None:
        fuzz, _ft = open_link(d, 1)
        good, gt = open_link(d, 2)
        good.data_received(LOGIN_OK)
        if login:
            fuzz.data_received(LOGIN_OK)
        for chunk in chunks:
            fuzz.data_received(chunk)
        before = len(gt.frames())
        good.data_received(req(0x0305, 9, tp.Echo(text="ok")))
        assert len(gt.frames()) == before + 1 and not gt.closing

    run(body)


class _CaptureLink:
    """Just what `Dispatcher.send` touches of a link."""

    def __init__(self, data: dict[str, Any] | None) -> None:
        self.kind = Kind.CLIENT_SESSION
        self.data = data
        self.sent: list[tuple[int, bytes, int]] = []

    def send_frame(self, service_id: int, command_id: int, seq: int, body: Any, *, flag: int = 0) -> bool:
        self.sent.append((command_id, bytes(body), flag))
        return True


def test_send_reuses_a_serialized_body_only_where_packing_would_give_the_same_bytes() -> None:
    from generated.teamtalk.registry import REGISTRY
    from runtime.framing import FLAG_ENCRYPTED
    from runtime.stages.crypto import SessionCipher, SessionKeys

    class NoHandlers:
        __mapping__: dict[int, str] = {}

    dispatcher = Dispatcher(REGISTRY, NoHandlers())
    data_cls = REGISTRY.by_name("CID_MSG_DATA").message_class
    msg = data_cls(from_user_id=1, to_session_id=2, msg_id=9, create_time=5, msg_type=1, msg_data=b"hi")
    body = msg.SerializeToString()

    plain = _CaptureLink(None)
    assert dispatcher.send(plain, "CID_MSG_DATA", msg, 0, body)  # type: ignore[arg-type]
    assert plain.sent[0][1] is body and plain.sent[0][2] == 0

    # IMMsgData is sealed on a session with agreed keys: the given body must not go out in the clear.
    cipher = SessionCipher(SessionKeys(send_key=b"k" * 32, recv_key=b"r" * 32))
    sealed = _CaptureLink({"cipher": cipher})
    assert dispatcher.send(sealed, "CID_MSG_DATA", msg, 0, body)  # type: ignore[arg-type]
    _, out, flag = sealed.sent[0]
    assert flag & FLAG_ENCRYPTED and body not in out


def test_the_dedup_window_keeps_answered_requests_as_bytes() -> None:
    """Once answered, a request's window entry is the serialized reply: nothing the cycle collector must
    visit stays in the window for its whole lifetime (up to a million entries per command)."""
    import gc

    async def body(d: Dispatcher, s: DeferredService) -> None:
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0301, 2, msg_data()) + req(0x0301, 3, msg_data()))
        window = d.routes[0x0301].dedup
        assert window is not None and len(window) == 2
        s.answer()
        entries = list(window._young.values()) + list(window._old.values())
        assert sum(type(e) is bytes for e in entries) == 1  # the answered one; the other still waits
        assert all(not gc.is_tracked(e) for e in entries if type(e) is bytes)
        s.answer()
        await asyncio.sleep(0)
        link.data_received(req(0x0301, 2, msg_data()))  # a retransmit of the first: answered from the bytes
        assert len(s.msgs) == 2 and [a.seq for a in acks_of(t)] == [2, 3, 2]
        assert acks_of(t)[0].body == acks_of(t)[2].body

    run_deferred(body)


def test_a_remembered_reply_is_sealed_again_on_an_encrypted_session() -> None:
    """A duplicate on a session with keys gets the remembered reply through the pack stage (sealed), never
    the plain bytes the window keeps."""
    from runtime.framing import FLAG_ENCRYPTED
    from runtime.stages.crypto import SessionCipher, SessionKeys

    policy = {
        "MSG_DATA": {"transport": {"dedup": "per_sender", "retransmit": "until_ack"}},
        "MSG_DATA_ACK": {"pack": {"encrypt": "session_aead"}},
    }

    async def body(d: Dispatcher, s: Service) -> None:
        link, t = open_link(d, 1)
        frame = req(0x0301, 2, msg_data())
        link.data_received(LOGIN_OK + frame)  # no keys yet: the ack goes out plain
        link.extras()["cipher"] = SessionCipher(SessionKeys(send_key=b"s" * 32, recv_key=b"r" * 32))
        link.data_received(frame)  # the retransmit, now on a session with keys
        first, again = [f for f in t.frames() if f.command_id == 0x0302]
        assert not first.flag & FLAG_ENCRYPTED
        assert again.flag & FLAG_ENCRYPTED and first.body not in again.body
        assert len(s.msgs) == 1

    run(body, policy)


class PlainService(Service):
    """MSG_DATA handled by a plain function, as msg does for its hot path."""

    def on_msg(self, ctx: Context, msg: Any) -> Any:  # type: ignore[override]
        if msg.msg_data == b"boom":
            raise RuntimeError("handler bug")
        self.msgs.append(msg)
        return tp.MsgDataAck(user_id=ctx.user_id, session_id=msg.to_session_id, msg_id=len(self.msgs))


def test_a_plain_function_handler_is_called_and_answered_inline() -> None:
    async def main() -> None:
        LINKS.clear()
        service = PlainService()
        d = Dispatcher(tp.build_registry(), service)
        assert not d.routes[0x0301].is_async
        link, t = open_link(d, 1)
        link.data_received(LOGIN_OK + req(0x0301, 2, msg_data()) + req(0x0301, 3, msg_data(data=b"boom")))
        link.data_received(req(0x0301, 4, msg_data()))  # a failing call does not stop the next one
        acks = acks_of(t)
        assert [a.seq for a in acks] == [2, 4] and len(service.msgs) == 2
        assert tp.MsgDataAck.FromString(acks[1].body).msg_id == 2

    asyncio.run(main())
