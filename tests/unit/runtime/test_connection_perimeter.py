"""Unit tests of the connection layer's limits before and after login: heartbeat echoes, the pre-login frame
limit, and the slow-read deadline (time is injected)."""

from __future__ import annotations

import rt_testproto as tp

from runtime.connection import PRELOGIN_MAX_FRAME_BYTES, Connection, Kind, State, Timeouts
from runtime.framing import HEADER_SIZE, encode_frame

REG = tp.build_registry()
LOGIN = encode_frame(
    1, 0x0103, 1, tp.LoginReq(user_name="u", password="p", client_type=1).SerializeToString()
)
ECHO = encode_frame(3, 0x0305, 2, tp.Echo(text="hi").SerializeToString())


def heartbeat(body: bytes, seq: int = 3) -> bytes:
    return encode_frame(7, 0x0701, seq, body)


def session(now: float = 0.0, **timeouts: float) -> Connection:
    return Connection(REG, Kind.CLIENT_SESSION, now, peer="test", timeouts=Timeouts(**timeouts))  # type: ignore[arg-type]


def test_heartbeat_before_login_is_echoed_without_its_body() -> None:
    conn = session()
    assert list(conn.receive_data(heartbeat(b"x" * 60) * 3, 1.0)) == []
    assert conn.data_to_send() == heartbeat(b"") * 3  # 16 bytes each, whatever they carried


def test_heartbeat_after_login_echoes_a_short_body_only() -> None:
    conn = session()
    conn.authenticate(7, 1)
    list(conn.receive_data(heartbeat(b"ping"), 1.0))
    assert conn.data_to_send() == heartbeat(b"ping")
    list(conn.receive_data(heartbeat(b"y" * 4000), 2.0))
    assert conn.data_to_send() == heartbeat(b"")


def test_heartbeats_before_login_do_not_extend_the_login_deadline() -> None:
    conn = session(login=15.0)
    for t in range(1, 15):
        list(conn.receive_data(heartbeat(b""), float(t)))
        conn.tick(float(t))
    assert conn.is_open
    assert conn.next_deadline() == 15.0
    conn.tick(15.0)
    assert not conn.is_open and conn.close_reason is not None and "login not completed" in conn.close_reason


def test_a_large_frame_before_login_closes_and_after_login_is_accepted() -> None:
    big = heartbeat(b"z" * PRELOGIN_MAX_FRAME_BYTES)
    conn = session()
    assert list(conn.receive_data(big[:HEADER_SIZE], 1.0)) == []
    assert conn.state is State.CLOSING and "exceeds the limit" in (conn.close_reason or "")
    conn = session()
    list(conn.receive_data(LOGIN, 1.0))
    conn.authenticate(7, 1)
    assert list(conn.receive_data(big, 2.0)) == [] and conn.is_open


def test_slow_loris_trickling_one_frame_is_closed_at_the_frame_read_deadline() -> None:
    conn = session(frame_read=30.0, idle_pc=120.0)
    list(conn.receive_data(LOGIN, 0.0))
    conn.authenticate(7, 1)
    # one byte every 5 s of a frame that would take minutes to complete: bytes alone are no activity
    for i, t in enumerate(range(5, 35, 5)):
        assert list(conn.receive_data(ECHO[i : i + 1], float(t))) == []
        conn.tick(float(t))
        if t < 35 - 5:
            assert conn.is_open, t
    assert conn.last_received == 0.0
    assert conn.next_deadline() == 35.0  # the frame began at 5 s
    conn.tick(35.0)
    assert not conn.is_open and "slow read" in (conn.close_reason or "")


def test_bytes_that_never_complete_a_frame_do_not_hold_an_idle_session_open() -> None:
    conn = session(frame_read=1000.0, idle_pc=120.0)
    list(conn.receive_data(LOGIN, 0.0))
    conn.authenticate(7, 1)
    list(conn.receive_data(ECHO[:3], 100.0))
    conn.tick(119.0)
    assert conn.is_open
    conn.tick(120.0)
    assert not conn.is_open and "idle" in (conn.close_reason or "")


def test_a_frame_completed_in_time_clears_the_slow_read_deadline() -> None:
    conn = session(frame_read=30.0)
    list(conn.receive_data(LOGIN, 0.0))
    conn.authenticate(7, 1)
    list(conn.receive_data(ECHO[:5], 10.0))
    assert conn.partial_since == 10.0
    got = list(conn.receive_data(ECHO[5:], 20.0))
    assert [info.name for _f, info in got] == ["ECHO_REQ"]
    assert conn.partial_since is None and conn.last_received == 20.0
    conn.tick(45.0)
    assert conn.is_open
