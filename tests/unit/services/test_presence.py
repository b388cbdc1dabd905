"""Unit tests (no sockets) of presence coalescing: the sans-IO Coalescer with an explicit clock, its asyncio
driver, the spec's policy as the registry carries it, and the pushes a flush becomes."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generated.teamtalk.registry import REGISTRY
from runtime.registry import Registry
from runtime.services.presence import MAX_BATCH, Coalescer, Flusher, PresenceCodec, PresencePolicy

ONLINE, OFFLINE = REGISTRY.presence["online"], REGISTRY.presence["offline"]  # type: ignore[index]


def test_first_change_is_due_at_once_then_held_for_the_interval() -> None:
    c: Coalescer[str] = Coalescer(0.5)
    c.put("pc1", 7, ONLINE, now=10.0)
    assert c.next_due() == 10.0
    assert c.pop_due(10.0) == [("pc1", {7: ONLINE})]
    c.put("pc1", 8, ONLINE, now=10.1)
    c.put("pc1", 7, OFFLINE, now=10.2)
    c.put("pc1", 8, OFFLINE, now=10.3)
    c.put("pc1", 8, ONLINE, now=10.4)
    assert c.next_due() == pytest.approx(10.5)
    assert c.pop_due(10.49) == []  # not before the interval has passed since the last flush
    # Only the latest state of each user, in one flush.
    assert c.pop_due(10.5) == [("pc1", {7: OFFLINE, 8: ONLINE})]
    assert c.next_due() is None


def test_recipients_are_held_independently() -> None:
    c: Coalescer[str] = Coalescer(1.0)
    c.put("a", 1, ONLINE, now=0.0)
    assert c.pop_due(0.0) == [("a", {1: ONLINE})]
    c.put("a", 2, ONLINE, now=0.2)  # a was flushed at 0.0: held until 1.0
    c.put("b", 2, ONLINE, now=0.2)  # b never was: due at once
    assert c.pop_due(0.2) == [("b", {2: ONLINE})]
    assert c.pop_due(1.0) == [("a", {2: ONLINE})]


def test_dropped_recipient_loses_its_pending_states_and_starts_afresh() -> None:
    c: Coalescer[str] = Coalescer(1.0)
    c.put("a", 1, ONLINE, now=0.0)
    c.pop_due(0.0)
    c.put("a", 1, OFFLINE, now=0.1)
    c.drop("a")
    assert c.next_due() is None and len(c) == 0
    c.put("a", 2, ONLINE, now=0.3)  # a new connection reusing the key: due at once, not at 1.0
    assert c.pop_due(0.3) == [("a", {2: ONLINE})]


def test_quiet_recipients_are_forgotten() -> None:
    c: Coalescer[int] = Coalescer(0.1)
    for r in range(1000):
        c.put(r, 1, ONLINE, now=0.0)
    assert len(c.pop_due(0.0)) == 1000
    c.put(5000, 1, ONLINE, now=1.0)
    c.pop_due(1.0)
    assert len(c._last) < 300  # flush times older than the interval are dropped


changes = st.lists(
    st.tuples(
        st.floats(0.0, 0.3),  # time since the previous change
        st.integers(0, 3),  # recipient
        st.integers(0, 5),  # user
        st.sampled_from([1, 2]),  # status
    ),
    min_size=1,
    max_size=200,
)


@given(changes)
def test_storm_invariants(storm: list[tuple[float, int, int, int]]) -> None:
    """Whatever the storm, with the driver flushing at each due time: a recipient is flushed at most once per
    interval, every change is flushed within an interval of being made, and the last state flushed for each
    (recipient, user) is the latest state."""
    interval = 0.5
    c: Coalescer[int] = Coalescer(interval)
    now = 0.0
    made: dict[tuple[int, int], int] = {}
    pending_since: dict[tuple[int, int], float] = {}
    seen: dict[tuple[int, int], int] = {}
    flush_times: dict[int, list[float]] = {}

    def flush_until(limit: float) -> None:
        while (due := c.next_due()) is not None and due <= limit:
            for recipient, states in c.pop_due(due):
                flush_times.setdefault(recipient, []).append(due)
                for user, status in states.items():
                    seen[(recipient, user)] = status
                    assert due - pending_since.pop((recipient, user)) <= interval + 1e-9

    for dt, recipient, user, status in storm:
        flush_until(now + dt)
        now += dt
        c.put(recipient, user, status, now)
        made[(recipient, user)] = status
        pending_since.setdefault((recipient, user), now)
    flush_until(float("inf"))
    assert seen == made and not pending_since
    for times in flush_times.values():
        assert all(b - a >= interval - 1e-9 for a, b in itertools.pairwise(times))


def test_policy_of_the_bundled_spec() -> None:
    policy = PresencePolicy.from_registry(REGISTRY)
    assert policy.company and policy.clients == "pc" and policy.interval == 0.5
    assert policy.wants(mobile=False) and not policy.wants(mobile=True)
    assert (policy.status(True), policy.status(False)) == (ONLINE, OFFLINE) == (1, 2)
    with pytest.raises(ValueError, match="declares no presence policy"):
        PresencePolicy.from_registry(Registry("bare", "1.0.0", list(REGISTRY)))


def test_a_small_flush_is_notifies_a_large_one_is_one_batch() -> None:
    codec = PresenceCodec(PresencePolicy.from_registry(REGISTRY), REGISTRY)
    (single,) = codec.pushes({9: ONLINE})
    assert single.command == "CID_BUDDY_LIST_STATUS_NOTIFY"
    msg, body = single.for_recipient(3)
    assert (msg.user_stat.user_id, msg.user_stat.status) == (9, ONLINE)
    assert codec.states_of(single.command, type(msg).FromString(body)) == {9: ONLINE}
    states = {uid: ONLINE if uid % 2 else OFFLINE for uid in range(1, 301)}
    (batch,) = codec.pushes(states)
    assert batch.command == "CID_BUDDY_LIST_USERS_STATUS_RESPONSE"
    for recipient in (5, 300, 2**32 - 1):
        msg, body = batch.for_recipient(recipient)
        # The shared tail plus the recipient's own user_id is exactly the message's serialization.
        assert body == msg.SerializeToString()
        parsed = type(msg).FromString(body)
        assert parsed.user_id == recipient
        assert codec.states_of(batch.command, parsed) == states


def test_a_huge_flush_is_split_into_bounded_batches() -> None:
    codec = PresenceCodec(PresencePolicy.from_registry(REGISTRY), REGISTRY)
    states = {uid: OFFLINE for uid in range(1, 2 * MAX_BATCH + 2)}
    pushes = codec.pushes(states)
    assert len(pushes) == 3
    merged: dict[int, int] = {}
    for p in pushes:
        msg, body = p.for_recipient(1)
        assert len(body) < 200_000
        merged.update(codec.states_of(p.command, type(msg).FromString(body)) or {})
    assert merged == states


def test_flusher_sends_a_burst_as_one_flush_then_waits_the_interval() -> None:
    async def main() -> None:
        flushed: list[tuple[float, dict[int, int]]] = []
        arrived = asyncio.Event()
        loop = asyncio.get_running_loop()

        def deliver(_recipient: str, states: dict[int, int]) -> None:
            flushed.append((loop.time(), dict(states)))
            arrived.set()

        f: Flusher[str] = Flusher(0.2, deliver)
        start = loop.time()
        for uid in range(50):  # a burst within one event-loop turn
            f.put("all", uid, ONLINE)
        await asyncio.wait_for(arrived.wait(), 2.0)
        arrived.clear()
        assert len(flushed) == 1 and len(flushed[0][1]) == 50
        for uid in range(50):
            f.put("all", uid, OFFLINE)
        await asyncio.wait_for(arrived.wait(), 2.0)
        assert len(flushed) == 2 and set(flushed[1][1].values()) == {OFFLINE}
        assert flushed[1][0] - flushed[0][0] >= 0.2 - 0.01  # timer resolution
        assert flushed[0][0] - start < 0.2  # the first went out at once
        f.close()

    asyncio.run(main())
