"""Unit tests (no sockets) of the messaging core: relay envelopes, delivery, admission, routing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generated.teamtalk.registry import REGISTRY
from runtime.errors import FrameError
from runtime.monitor.metrics import Metrics
from runtime.services.contracts import pack_store_reply, unpack_store_reply
from runtime.services.links import pack_relay, unpack_relay
from runtime.services.login import MSG_SERVER_FULL, NO_MSG_SERVER, NONE, Admission, MsgServer
from runtime.services.msg.delivery import ChatKinds, ClientState, DeliveryTracker, delivery_key, same_class
from runtime.services.router import UserTable


@given(st.one_of(st.none(), st.lists(st.integers(0, 2**32 - 1), max_size=300)), st.binary(max_size=200))
def test_relay_envelope_round_trips(targets: list[int] | None, body: bytes) -> None:
    got_targets, got_body = unpack_relay(pack_relay(targets, body))
    assert got_body == body
    assert got_targets == (None if targets is None else tuple(targets))


def test_truncated_relay_envelope_is_refused() -> None:
    with pytest.raises(FrameError):
        unpack_relay(pack_relay([1, 2, 3], b"")[:7])


def test_store_reply_round_trips_with_and_without_members() -> None:
    assert unpack_store_reply(pack_store_reply(0, 7, True, [3, 1])) == (0, 7, True, [3, 1])
    assert unpack_store_reply(pack_store_reply(22)) == (22, 0, False, None)
    assert unpack_store_reply(b"")[0] != 0  # a reply without an envelope is an error, never a success


class FakeMsg:
    def __init__(self, from_user_id: int, to_session_id: int, msg_id: int, msg_type: int = 1) -> None:
        self.from_user_id, self.to_session_id, self.msg_id, self.msg_type = (
            from_user_id,
            to_session_id,
            msg_id,
            msg_type,
        )


def test_delivery_key_is_the_receivers_view() -> None:
    m = FakeMsg(1, 2, 9)
    kinds = ChatKinds.of(REGISTRY.enums)
    assert kinds == (0x10, 1, 2)  # the spec's group bit and session types
    assert delivery_key(2, m, kinds) == (1, 1, 9)  # the recipient acks with the sender as session
    assert delivery_key(1, m, kinds) == (1, 2, 9)  # the sender's other device acks with the peer as session
    assert delivery_key(5, FakeMsg(1, 77, 3, 0x11), kinds) == (2, 77, 3)


def test_same_class_rule() -> None:
    assert same_class(0x01, 0x02) and same_class(0x11, 0x12)
    assert not same_class(0x01, 0x11)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_tracker(clock: Clock, max_attempts: int = 3) -> tuple[DeliveryTracker, list[tuple[Any, str, Any]]]:
    sent: list[tuple[Any, str, Any]] = []

    def send(link: Any, command: str, msg: Any, body: bytes | None) -> bool:
        assert body is None or body == msg.SerializeToString()  # a given body is the message serialized
        sent.append((link, command, msg))
        return True

    return DeliveryTracker(send, Metrics(), timeout=1.0, max_attempts=max_attempts, clock=clock), sent


def test_retransmits_with_backoff_until_acked() -> None:
    clock = Clock()
    tracker, sent = make_tracker(clock)
    state = ClientState(link="L")
    state.logged_in = True
    assert tracker.deliver(state, "CID_MSG_DATA", "m", (1, 2, 3))
    clock.now = 0.9
    tracker.tick()
    assert len(sent) == 1
    clock.now = 1.0
    tracker.tick()
    assert len(sent) == 2  # first retransmit after the timeout
    clock.now = 2.5
    tracker.tick()
    assert len(sent) == 2  # the next waits twice as long (due at 3.0)
    assert tracker.ack(state, (1, 2, 3))
    clock.now = 10.0
    tracker.tick()
    assert len(sent) == 2 and not state.unacked
    assert not tracker.ack(state, (1, 2, 3))  # a second ack is a no-op


def test_gives_up_after_max_attempts_and_suppresses_duplicates() -> None:
    clock = Clock()
    tracker, sent = make_tracker(clock, max_attempts=2)
    state = ClientState(link="L")
    state.logged_in = True
    tracker.deliver(state, "CID_MSG_DATA", "m", (1, 2, 3))
    assert not tracker.deliver(state, "CID_MSG_DATA", "m", (1, 2, 3))  # a relayed copy is not shown twice
    for t in (1.0, 3.0, 7.0, 15.0):
        clock.now = t
        tracker.tick()
    assert len(sent) == 2 and not state.unacked
    assert tracker.m_gave_up.value == 1 and tracker.m_dups.value == 1


def server(cur: int, max_conn: int = 10, port: int = 1) -> MsgServer:
    return MsgServer("10.0.0.1", "10.0.0.2", port, max_conn, cur, "h")


def test_admission_picks_least_loaded_under_max() -> None:
    adm = Admission(rate=1000, burst=1000, ticket_ttl=30)
    assert adm.decide([]).code == NO_MSG_SERVER
    full, busy, idle = server(10, port=1), server(5, port=2), server(2, port=3)
    d = adm.decide([full, busy, idle])
    assert d.code == NONE and d.server is idle
    chosen = [adm.decide([full, busy, idle]).server for _ in range(7)]
    # Assignments count as load until the msg servers' counters catch up, so a storm is spread out.
    assert full not in chosen and busy in chosen
    assert abs(busy.load(0.0) - idle.load(0.0)) <= 1 and busy.load(0.0) + idle.load(0.0) == 15


def test_admission_queues_when_full_and_keeps_the_place() -> None:
    adm = Admission(rate=1000, burst=1000, ticket_ttl=30)
    full = server(10)
    a = adm.decide([full])
    b = adm.decide([full])
    assert (a.code, a.position, b.position) == (MSG_SERVER_FULL, 1, 2)
    assert adm.decide([full], a.ticket).position == 1
    full.cur_conn = 9
    assert adm.decide([full], b.ticket).code == MSG_SERVER_FULL  # second in line waits for the first
    assert adm.decide([full], a.ticket).code == NONE


def test_user_table_presence_counts_pcs_only() -> None:
    table = UserTable(REGISTRY.enums.ClientTypeBits.MOBILE)
    link_a: Any = object()
    link_b: Any = object()
    table.update(link_a, 7, 0x11, +1)
    assert not table.pc_online(7)  # mobile-only users look offline, as in TeamTalk
    table.update(link_b, 7, 0x01, +1)
    assert table.pc_online(7) and table.links_for([7]) == {link_a, link_b}
    assert table.drop_link(link_b) == [7]
    assert not table.pc_online(7) and table.links_for([7, 8]) == {link_a}
    table.update(link_a, 7, 0x11, -1)
    assert table.users == {}


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> None:
        return None


def _link(name: str = "t") -> Any:
    from generated.teamtalk.registry import REGISTRY
    from runtime.services.links import Link, NoRequests

    return Link(REGISTRY, NoRequests(), name=name)


def test_link_heartbeats_when_idle_and_closes_when_peer_is_silent() -> None:
    import asyncio

    from runtime.framing import FrameDecoder
    from runtime.services.links import HEARTBEAT_CID

    async def body() -> None:
        link = _link()
        transport = FakeTransport()
        link.connection_made(transport)
        t0 = link.conn.last_sent
        link.tick(t0 + 4.0)
        await asyncio.sleep(0)
        assert transport.written == []  # nothing sent for only 4 s: no heartbeat yet
        link.tick(t0 + 5.0)
        await asyncio.sleep(0)
        (frame,) = FrameDecoder().feed(b"".join(transport.written))
        assert frame.command_id == HEARTBEAT_CID
        link.tick(link.conn.last_received + 30.0)
        assert transport.closed  # the peer said nothing for 30 s

    asyncio.run(body())


def test_file_service_refuses_the_handshake_with_no_common_suite() -> None:
    import asyncio
    from types import SimpleNamespace

    from generated.teamtalk.registry import REGISTRY
    from runtime.services.file.handlers import FileHandlers
    from runtime.services.links import Proto

    handlers = FileHandlers(SimpleNamespace(proto=Proto(REGISTRY)))  # type: ignore[arg-type]
    req = REGISTRY.by_name("CID_EXT_HANDSHAKE_REQ").message_class(
        client_public_key=b"k" * 32, client_nonce=b"n" * 16, suites=[1, 2]
    )
    rsp = asyncio.run(handlers.on_cid_ext_handshake_req(None, req))  # type: ignore[arg-type]
    enum = type(rsp).DESCRIPTOR.fields_by_name["result_code"].enum_type
    assert enum.values_by_number[rsp.result_code].name == "HANDSHAKE_NO_COMMON_SUITE"


@given(
    st.one_of(st.none(), st.lists(st.integers(0, 2**32 - 1), max_size=12)),
    st.binary(max_size=64),
    st.integers(1, 0xFFFF),
)
def test_a_relay_sent_in_two_parts_is_the_same_frame(
    targets: list[int] | None, body: bytes, cid: int
) -> None:
    """`Link.send(..., head=relay_head(t))` writes exactly the frame of `Link.send(pack_relay(t, body))`."""
    import asyncio

    from runtime.services.links import relay_head

    async def frames() -> tuple[bytes, bytes]:
        out = []
        for parts in ({"head": relay_head(targets), "body": body}, {"body": pack_relay(targets, body)}):
            link = _link()
            transport = FakeTransport()
            link.connection_made(transport)
            assert link.send(cid, parts["body"], flag=0x1000, head=parts.get("head", b""))
            link.flush()
            out.append(b"".join(transport.written))
        return out[0], out[1]

    split, joined = asyncio.run(frames())
    assert split == joined


def test_confirmations_of_one_iteration_leave_in_one_frame_and_answer_each_request() -> None:
    import asyncio

    from runtime.framing import FrameDecoder
    from runtime.services.links import CONFIRMED, FLAG_BATCH, FLAG_RESPONSE

    async def body() -> None:
        asker, answerer = _link("asker"), _link("answerer")
        to_answerer, to_asker = FakeTransport(), FakeTransport()
        asker.connection_made(to_answerer)
        answerer.connection_made(to_asker)
        got: dict[int, object] = {}
        for i in range(3):
            asker.request(0x0711, b"relay %d" % i, lambda f, i=i: got.__setitem__(i, f))
        await asyncio.sleep(0)
        requests = FrameDecoder().feed(b"".join(to_answerer.written))
        for frame in requests:
            assert answerer.confirm(frame)
        assert not answerer.confirm(requests[0]._replace(flag=0))  # not a request: nothing to answer
        await asyncio.sleep(0)
        (batch,) = FrameDecoder().feed(b"".join(to_asker.written))  # three answers, one frame
        assert batch.flag == FLAG_RESPONSE | FLAG_BATCH and len(batch.body) == 12
        asker.data_received(b"".join(to_asker.written))
        assert got == {0: CONFIRMED, 1: CONFIRMED, 2: CONFIRMED} and asker.in_flight == 0
        asker.data_received(b"".join(to_asker.written))  # the same ids again: already answered, ignored
        assert asker.in_flight == 0

    asyncio.run(body())
