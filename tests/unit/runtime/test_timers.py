"""Unit tests of runtime.timers: the deadline wheel and connection deadlines driven through it (time is
injected: no sleeps, no event loop)."""

from __future__ import annotations

import random

import pytest
import rt_testproto as tp
from hypothesis import given
from hypothesis import strategies as st

from runtime.connection import Connection, Kind, State
from runtime.framing import FrameDecoder, encode_frame
from runtime.timers import NO_SLOT, ConnectionTimers, DeadlineWheel

REG = tp.build_registry()
HEARTBEAT = encode_frame(7, 0x0701, 3)


def test_keys_fire_in_their_bucket_never_before_the_deadline() -> None:
    w: DeadlineWheel[str] = DeadlineWheel(1.0)
    w.add("a", 2.5)
    w.add("b", 3.0)
    w.add("c", 10.1)
    assert w.next_deadline() == 3.0
    assert w.expire(2.9) == []
    assert sorted(w.expire(3.0)) == ["a", "b"]
    assert w.expire(10.9) == []
    assert w.expire(11.0) == ["c"]
    assert w.next_deadline() is None and len(w) == 0


def test_discard_and_a_late_expire_collects_every_missed_bucket() -> None:
    w: DeadlineWheel[int] = DeadlineWheel(0.5)
    slots = {k: w.add(k, k * 0.3) for k in range(20)}
    w.discard(7, slots[7])
    w.discard(7, slots[7])  # twice: harmless
    w.discard(99, slots[3])  # not there: harmless
    assert sorted(w.expire(100.0)) == [k for k in range(20) if k != 7]


@given(st.lists(st.floats(min_value=0, max_value=1000, allow_nan=False), max_size=60), st.floats(0.01, 5))
def test_expire_returns_exactly_the_keys_due(deadlines: list[float], resolution: float) -> None:
    w: DeadlineWheel[int] = DeadlineWheel(resolution)
    for k, d in enumerate(deadlines):
        w.add(k, d)
    fired: dict[int, float] = {}
    now = 0.0
    while len(fired) < len(deadlines):
        now += resolution * random.Random(len(fired)).choice((0.5, 1.0, 3.0))
        for k in w.expire(now):
            fired[k] = now
    for k, d in enumerate(deadlines):
        assert fired[k] >= d - 1e-9  # never early
        assert fired[k] <= d + 4 * resolution + 1e-9  # late by at most a bucket plus the caller's step


def test_bad_resolution() -> None:
    with pytest.raises(ValueError):
        DeadlineWheel(0.0)


class FakeLink:
    """A `Timed` over a sans-IO Connection, as runtime.transport.Link is over its socket."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.timer_slot = NO_SLOT
        self.ticks = 0

    def next_deadline(self) -> float | None:
        return self.conn.next_deadline()

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.conn.tick(now)


def session(now: float = 0.0) -> FakeLink:
    return FakeLink(Connection(REG, Kind.CLIENT_SESSION, now, peer="t"))


def test_idle_sessions_are_only_ticked_at_their_deadlines() -> None:
    timers: ConnectionTimers[FakeLink] = ConnectionTimers(1.0)
    links = [session(0.0) for _ in range(1000)]
    for link in links:
        timers.track(link)  # as a server does when the connection is made, before the login
        link.conn.authenticate(1, 0x12 if link is links[0] else 0x01)  # one mobile, the rest PC
    ticked = sum(timers.run(float(t)) for t in range(1, 15))
    assert ticked == 0  # nothing due before the 15 s login deadline: no per-second pass over the links
    assert timers.run(15.0) == 1000  # the login-deadline bucket: re-checked, rescheduled at the idle deadline
    assert all(link.conn.is_open for link in links)
    assert sum(timers.run(float(t)) for t in range(16, 120)) == 0
    assert timers.run(120.0) == 999  # PCs idle for 120 s close
    assert [link.conn.is_open for link in links].count(True) == 1
    assert links[1].conn.state is State.CLOSING and "idle" in (links[1].conn.close_reason or "")
    assert timers.run(300.0) == 1 and not links[0].conn.is_open  # the mobile after 300 s
    assert len(timers.wheel) == 0  # closed links are not rescheduled


def test_heartbeats_move_the_idle_deadline_without_touching_the_wheel() -> None:
    timers: ConnectionTimers[FakeLink] = ConnectionTimers(1.0)
    link = session(0.0)
    link.conn.authenticate(1, 0x01)
    timers.track(link)
    for t in range(30, 400, 30):  # a client heartbeating every 30 s
        list(link.conn.receive_data(HEARTBEAT, float(t)))
        timers.run(float(t))
    assert link.conn.is_open
    assert link.ticks <= 1 + 400 // 120 + 1  # ticked about once per idle period, not every second
    timers.run(390.0 + 120.0)
    assert not link.conn.is_open


def test_login_deadline_through_the_wheel() -> None:
    timers: ConnectionTimers[FakeLink] = ConnectionTimers(1.0)
    link = session(100.0)
    timers.track(link)
    assert timers.run(114.0) == 0 and link.conn.is_open
    assert timers.run(115.0) == 1
    assert link.conn.state is State.CLOSING and "login" in (link.conn.close_reason or "")


def test_server_link_heartbeats_and_untrack() -> None:
    timers: ConnectionTimers[FakeLink] = ConnectionTimers(0.5)
    link = FakeLink(Connection(REG, Kind.SERVER_LINK, 0.0))
    other = FakeLink(Connection(REG, Kind.SERVER_LINK, 0.0))
    timers.track(link)
    timers.track(other)
    timers.untrack(other)
    assert timers.run(5.0) == 1  # only `link`: the heartbeat after 5 s without sending
    assert FrameDecoder().feed(link.conn.data_to_send())[0].command_id == 0x0701
    assert link.next_deadline() == 10.0
    for t in (10.0, 15.0, 20.0, 25.0):
        timers.run(t)
    assert timers.run(30.0) == 1 and not link.conn.is_open  # nothing received for 30 s


def test_a_failing_tick_is_reported_and_the_others_still_run() -> None:
    errors: list[Exception] = []
    timers: ConnectionTimers[FakeLink] = ConnectionTimers(1.0, lambda _link, exc: errors.append(exc))
    bad, good = session(0.0), session(0.0)

    def boom(now: float) -> None:
        raise RuntimeError("boom")

    bad.tick = boom  # type: ignore[method-assign]
    timers.track(bad)
    timers.track(good)
    assert timers.run(15.0) == 2
    assert len(errors) == 1 and not good.conn.is_open
