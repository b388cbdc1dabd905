"""Unit: the sans-IO internal-link protocol (runtime.connection.LinkConnection), two ends wired by hand."""

from __future__ import annotations

from generated.teamtalk.registry import REGISTRY
from runtime.connection import (
    CONFIRMED,
    FLAG_BATCH,
    FLAG_RELAY,
    FLAG_REQUEST,
    FLAG_RESPONSE,
    LinkAuth,
    LinkConnection,
    State,
    pack_relay,
    relay_head,
    relay_targets,
    unpack_relay,
)
from runtime.framing import Frame, FrameDecoder

SECRET = b"s" * 32
CID_MSG_DATA = REGISTRY.by_name("CID_MSG_DATA").command_id


def pair(
    dialer_secret: bytes = SECRET, listener_secret: bytes = SECRET
) -> tuple[LinkConnection, LinkConnection, LinkAuth]:
    listener_auth = LinkAuth(listener_secret)
    # Both ends on one host (loopback): not sealed by default (tests/unit/auth/test_link_seal.py)
    d = LinkConnection(REGISTRY, 0.0, peer="127.0.0.1:2", auth=LinkAuth(dialer_secret), dialer=True)
    lst = LinkConnection(REGISTRY, 0.0, peer="127.0.0.1:1", auth=listener_auth)
    return d, lst, listener_auth


def pump(a: LinkConnection, b: LinkConnection, now: float = 0.0) -> list[tuple[str, Frame]]:
    """Move bytes both ways until both are quiet; the frames each end yielded, tagged by receiver."""
    got: list[tuple[str, Frame]] = []
    for _ in range(10):
        moved = False
        for src, dst, tag in ((a, b, "b"), (b, a, "a")):
            data = src.data_to_send()
            if data:
                moved = True
                got.extend((tag, f) for f, _info in dst.receive_data(data, now))
        if not moved:
            return got
    raise AssertionError("the ends never went quiet")


def test_the_handshake_lifts_the_gate_and_releases_what_was_queued() -> None:
    d, lst, _ = pair()
    assert d.state is State.HANDSHAKE and lst.state is State.HANDSHAKE
    body = pack_relay([7], b"hello")
    assert d.send_link(CID_MSG_DATA, body, 0.0, flag=FLAG_RELAY)
    got = pump(d, lst)
    assert d.state is State.AUTHENTICATED and lst.state is State.AUTHENTICATED
    (frame,) = [f for tag, f in got if tag == "b"]
    assert frame.command_id == CID_MSG_DATA and frame.flag == FLAG_RELAY
    assert unpack_relay(frame.body) == ((7,), b"hello")


def test_a_peer_without_the_secret_is_refused_and_counted() -> None:
    for dialer_first in (True, False):
        ours, theirs = LinkAuth(SECRET), LinkAuth(b"x" * 32)
        a = LinkConnection(REGISTRY, 0.0, auth=ours, dialer=True)
        b = LinkConnection(REGISTRY, 0.0, auth=theirs)
        b.send_link(CID_MSG_DATA, b"forged", 0.0)
        got = pump(a, b) if dialer_first else pump(b, a)
        assert got == []  # nothing crossed
        # Each end sent its PROOF on the other's HELLO, so each finds the other's wrong and counts it.
        assert a.refused and b.refused and not a.is_open and not b.is_open
        assert ours.refused == 1 and theirs.refused == 1
        for end in (a, b):
            assert end.data_to_send() == b""  # nothing else ever leaves a refused link


def test_a_frame_before_the_handshake_is_refused() -> None:
    lst = LinkConnection(REGISTRY, 0.0, auth=LinkAuth(SECRET))
    plain = LinkConnection(REGISTRY, 0.0)  # no auth: sends at once
    plain.send_link(CID_MSG_DATA, b"x", 0.0)
    assert list(lst.receive_data(plain.data_to_send(), 0.0)) == []
    assert lst.refused and not lst.is_open


def test_the_handshake_deadline_refuses_a_silent_peer() -> None:
    lst = LinkConnection(REGISTRY, 100.0, auth=LinkAuth(SECRET))
    deadline = lst.next_deadline()
    assert deadline is not None and deadline <= 105.0
    lst.tick(104.0)
    assert lst.is_open
    lst.tick(105.0)
    assert lst.refused and not lst.is_open


def test_requests_get_their_own_answers_and_confirmations_leave_in_one_frame() -> None:
    d, lst, _ = pair()
    pump(d, lst)
    answers: dict[int, Frame | None] = {}
    for i in range(3):
        assert d.request(CID_MSG_DATA, b"r%d" % i, lambda f, i=i: answers.__setitem__(i, f), 0.0)
    assert d.in_flight == 3
    requests = [f for f, _info in lst.receive_data(d.data_to_send(), 0.0)]
    assert all(f.flag & FLAG_REQUEST for f in requests)
    assert lst.reply(requests[1], CID_MSG_DATA, b"answer", 0.0)
    assert lst.confirm(requests[0]) and lst.confirm(requests[2])
    assert not lst.confirm(requests[0]._replace(flag=0))  # not a request: nothing to answer
    out = lst.data_to_send()
    frames = FrameDecoder().feed(out)
    assert [f.flag for f in frames] == [FLAG_RESPONSE, FLAG_RESPONSE | FLAG_BATCH]
    assert len(frames[1].body) == 8  # two confirmations, one frame
    assert list(d.receive_data(out, 0.0)) == []  # answers are not dispatched
    assert answers[0] is CONFIRMED and answers[2] is CONFIRMED
    reply = answers[1]
    assert reply is not None and reply.body == b"answer"
    assert d.in_flight == 0
    assert list(d.receive_data(out, 0.0)) == [] and d.in_flight == 0  # answered twice: ignored


def test_a_failing_answer_callback_is_logged_and_the_link_goes_on() -> None:
    d, lst, _ = pair()
    pump(d, lst)
    got: list[Frame | None] = []

    def broken(_frame: Frame | None) -> None:
        raise RuntimeError("a buggy callback")

    for callback in (broken, got.append, broken, got.append):
        assert d.request(CID_MSG_DATA, b"x", callback, 0.0, flag=FLAG_RELAY, head=relay_head((5,)))
    requests = [f for f, _info in lst.receive_data(d.data_to_send(), 0.0)]
    assert [relay_targets(f.body)[0] for f in requests] == [(5,)] * 4  # the head went before the body
    lst.reply(requests[0], CID_MSG_DATA, b"a", 0.0)
    lst.reply(requests[1], CID_MSG_DATA, b"b", 0.0)
    lst.confirm(requests[2])
    lst.confirm(requests[3])
    assert list(d.receive_data(lst.data_to_send(), 0.0)) == []
    assert d.is_open and d.in_flight == 0
    assert got[0] is not None and got[0].body == b"b" and got[1] is CONFIRMED


def test_correlation_ids_use_all_32_bits() -> None:
    d, lst, _ = pair()
    pump(d, lst)
    d._next_corr = 0x12345678
    got: list[Frame | None] = []
    d.request(CID_MSG_DATA, b"", got.append, 0.0)
    (req,) = [f for f, _ in lst.receive_data(d.data_to_send(), 0.0)]
    assert (req.seq, req.reserved) == (0x5678, 0x1234)
    lst.reply(req, CID_MSG_DATA, b"ok", 0.0)
    list(d.receive_data(lst.data_to_send(), 0.0))
    assert got and got[0] is not None and got[0].body == b"ok"


def test_a_lost_link_answers_every_outstanding_request_with_none() -> None:
    d, lst, _ = pair()
    pump(d, lst)
    got: list[Frame | None] = []
    d.request(CID_MSG_DATA, b"", got.append, 0.0)
    d.request(CID_MSG_DATA, b"", got.append, 0.0)
    d.connection_lost()
    assert got == [None, None] and d.in_flight == 0
    assert not d.request(CID_MSG_DATA, b"", got.append, 0.0)


def test_heartbeats_when_idle_and_closes_a_silent_peer() -> None:
    d, lst, _ = pair()
    pump(d, lst)
    d.tick(4.0)
    assert d.data_to_send() == b""
    d.tick(5.0)
    data = d.data_to_send()
    (hb,) = FrameDecoder().feed(data)
    assert hb.command_id == 0x0701
    assert list(lst.receive_data(data, 6.0)) == []  # never dispatched
    d.tick(30.0)
    assert not d.is_open and d.close_reason is not None


def test_relay_envelopes() -> None:
    for targets in (None, [], [1], [1, 2], list(range(20))):
        body = pack_relay(targets, b"inner")
        got, start = relay_targets(body)
        assert got == (None if targets is None else tuple(targets)) and body[start:] == b"inner"
        assert relay_head(targets) + b"inner" == body
