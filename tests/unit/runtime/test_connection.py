"""Unit tests of the sans-IO connection state machine: auth gate, heartbeats, deadlines (time is injected)."""

from __future__ import annotations

import pytest
import rt_testproto as tp
from hypothesis import given
from hypothesis import strategies as st

from runtime.connection import TRANSITIONS, Connection, Event, Kind, State, Timeouts
from runtime.errors import InvalidTransition
from runtime.framing import HEADER, FrameDecoder, encode_frame

REG = tp.build_registry()
LOGIN = encode_frame(
    1, 0x0103, 1, tp.LoginReq(user_name="u", password="p", client_type=1).SerializeToString()
)
ECHO = encode_frame(3, 0x0305, 2, tp.Echo(text="hi").SerializeToString())
HEARTBEAT = encode_frame(7, 0x0701, 3)


def session(now: float = 0.0) -> Connection:
    return Connection(REG, Kind.CLIENT_SESSION, now, peer="test")


def test_state_table_has_no_exit_from_closed() -> None:
    assert {new for (old, _e), new in TRANSITIONS.items() if old is State.CLOSED} == {State.CLOSED}
    conn = session()
    conn.authenticate(5, 1)
    with pytest.raises(InvalidTransition):
        conn.authenticate(6, 1)


def test_heartbeat_is_echoed_and_not_dispatched() -> None:
    conn = session()
    assert list(conn.receive_data(HEARTBEAT, 1.0)) == []
    assert conn.data_to_send() == HEARTBEAT
    assert conn.data_to_send() == b""


def test_login_is_allowed_before_authentication() -> None:
    conn = session()
    [(frame, info)] = list(conn.receive_data(LOGIN, 1.0))
    assert info.name == "LOGIN_REQ" and frame.seq == 1
    assert conn.state is State.HANDSHAKE


def test_other_commands_before_login_close_the_connection() -> None:
    conn = session()
    got = list(conn.receive_data(LOGIN + ECHO + LOGIN, 1.0))
    assert [info.name for _f, info in got] == ["LOGIN_REQ"]  # nothing after the violation is dispatched
    assert conn.state is State.CLOSING
    assert conn.close_reason is not None and "ECHO_REQ before authentication" in conn.close_reason
    assert list(conn.receive_data(LOGIN, 2.0)) == []


def test_after_authentication_commands_flow() -> None:
    conn = session()
    conn.authenticate(42, 0x11)
    assert conn.is_mobile and conn.user_id == 42
    assert [i.name for _f, i in conn.receive_data(ECHO + ECHO, 1.0)] == ["ECHO_REQ", "ECHO_REQ"]


def test_gate_is_applied_as_frames_are_taken() -> None:
    # A client may pipeline a request right behind its login: if the login is handled (and succeeds) before
    # the next frame is taken, that frame passes; if not, the connection closes.
    conn = session()
    frames = conn.receive_data(LOGIN + ECHO, 0.5)
    assert next(frames)[1].name == "LOGIN_REQ"
    conn.authenticate(1, 1)
    assert next(frames)[1].name == "ECHO_REQ"
    assert conn.is_open


def test_byte_at_a_time_gives_the_same_events() -> None:
    data = HEARTBEAT + LOGIN + HEARTBEAT
    a, b = session(), session()
    whole = list(a.receive_data(data, 1.0))
    trickled = [ev for i in range(len(data)) for ev in b.receive_data(data[i : i + 1], 1.0)]
    assert [(f, i.name) for f, i in whole] == [(f, i.name) for f, i in trickled]
    assert a.data_to_send() == b.data_to_send() == HEARTBEAT + HEARTBEAT


def test_unknown_commands_are_ignored_then_close_after_the_limit() -> None:
    conn = Connection(REG, Kind.CLIENT_SESSION, 0.0, timeouts=Timeouts(max_unknown_commands=2))
    conn.authenticate(1, 1)
    unknown = encode_frame(9, 0x09FF, 1, b"??")
    assert list(conn.receive_data(unknown + unknown, 1.0)) == []
    assert conn.is_open
    assert list(conn.receive_data(unknown + ECHO, 1.0)) == []
    assert conn.state is State.CLOSING and "unknown" in (conn.close_reason or "")


@pytest.mark.parametrize(
    "bad",
    [
        HEADER.pack(0, 1, 0, 1, 1, 1, 0),
        HEADER.pack(3, 1, 0, 1, 1, 1, 0),
        HEADER.pack(1 << 24, 1, 0, 1, 1, 1, 0),
    ],
)
def test_bad_frames_close(bad: bytes) -> None:
    conn = session()
    assert list(conn.receive_data(LOGIN + bad, 1.0)) == []  # the whole read is refused: the stream is broken
    assert conn.state is State.CLOSING and "bad frame" in (conn.close_reason or "")


def test_login_deadline() -> None:
    conn = session(100.0)
    list(conn.receive_data(HEARTBEAT, 110.0))  # heartbeats do not extend the login deadline
    conn.tick(114.9)
    assert conn.is_open
    conn.tick(115.0)
    assert conn.state is State.CLOSING and "login" in (conn.close_reason or "")


@pytest.mark.parametrize(
    ("client_type", "idle"), [(0x01, 120.0), (0x02, 120.0), (0x11, 300.0), (0x12, 300.0)]
)
def test_idle_timeouts_pc_and_mobile(client_type: int, idle: float) -> None:
    conn = session()
    conn.authenticate(7, client_type)
    list(conn.receive_data(HEARTBEAT, 10.0))
    conn.tick(10.0 + idle - 0.5)
    assert conn.is_open
    conn.tick(10.0 + idle)
    assert conn.state is State.CLOSING and "idle" in (conn.close_reason or "")


def test_server_link_heartbeats_after_5s_quiet_and_dies_after_30s_silence() -> None:
    link = Connection(REG, Kind.SERVER_LINK, 0.0)
    assert link.state is State.AUTHENTICATED
    link.tick(4.9)
    assert link.data_to_send() == b""
    link.tick(5.0)
    assert FrameDecoder().feed(link.data_to_send())[0].command_id == 0x0701
    link.tick(6.0)
    assert link.data_to_send() == b""  # sent 1 s ago
    list(link.receive_data(HEARTBEAT, 20.0))
    assert link.data_to_send() == b""  # links do not echo; each side initiates its own
    link.tick(49.9)
    assert link.is_open
    link.tick(50.0)
    assert link.state is State.CLOSING


def test_client_and_server_back_to_back() -> None:
    client = Connection(REG, Kind.CLIENT, 0.0)
    server = session(0.0)
    client.tick(30.0)  # the client's heartbeat is due
    assert list(server.receive_data(client.data_to_send(), 30.0)) == []
    assert (
        list(client.receive_data(server.data_to_send(), 30.0)) == []
    )  # the echo is consumed, not dispatched
    assert client.last_received == 30.0
    client.tick(89.9)
    assert client.is_open
    client.tick(90.0)
    assert client.state is State.CLOSING


def test_connection_lost_and_close_reason() -> None:
    conn = session()
    conn.close("logout")
    conn.connection_lost()
    assert conn.state is State.CLOSED and conn.close_reason == "logout"
    assert Event.CLOSE.value == "close"


@given(st.binary(max_size=600), st.integers(1, 64), st.booleans())
def test_arbitrary_bytes_never_raise(data: bytes, step: int, authenticated: bool) -> None:
    conn = session()
    if authenticated:
        conn.authenticate(1, 1)
    for i in range(0, len(data), step):
        for frame, info in conn.receive_data(data[i : i + step], 1.0):
            assert info.command_id == frame.command_id
    assert conn.is_open or conn.close_reason


@pytest.mark.parametrize("action", ["drop", "close"])
def test_heartbeat_rate_policy_is_applied_by_the_connection(action: str) -> None:
    """Heartbeats never reach the stages, so the connection applies the heartbeat's input rate itself."""
    reg = tp.build_registry(
        {
            "HEARTBEAT": {
                "input": {"rate": "10/s", "burst": 10, "on_rate_exceeded": action, "require_auth": False}
            }
        }
    )
    conn = Connection(reg, Kind.CLIENT_SESSION, 0.0, peer="test")
    list(conn.receive_data(HEARTBEAT * 10, 0.0))
    assert conn.data_to_send() == HEARTBEAT * 10 and conn.is_open  # the burst is echoed
    list(conn.receive_data(HEARTBEAT * 3, 0.0))
    if action == "close":
        assert not conn.is_open and "heartbeats above 10/s" in (conn.close_reason or "")
        return
    assert conn.data_to_send() == b"" and conn.is_open  # beyond it: not echoed
    list(conn.receive_data(HEARTBEAT * 3, 0.25))  # 2.5 tokens came back
    assert conn.data_to_send() == HEARTBEAT * 2


def test_server_links_are_not_heartbeat_limited() -> None:
    reg = tp.build_registry({"HEARTBEAT": {"input": {"rate": "1/s", "on_rate_exceeded": "close"}}})
    link = Connection(reg, Kind.SERVER_LINK, 0.0, peer="peer")
    list(link.receive_data(HEARTBEAT * 50, 0.0))
    assert link.is_open


def test_the_bundled_spec_closes_a_heartbeat_flood_but_not_a_client() -> None:
    from generated.teamtalk.registry import REGISTRY

    hb = encode_frame(7, 0x0701, 0)
    conn = Connection(REGISTRY, Kind.CLIENT_SESSION, 0.0, peer="test")
    for second in range(60):  # a busy client: a heartbeat every second
        list(conn.receive_data(hb, float(second)))
    assert conn.is_open
    list(conn.receive_data(hb * 2000, 60.0))  # two thousand in one read
    assert not conn.is_open
