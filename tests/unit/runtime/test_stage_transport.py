"""Unit tests of the transport stage: ack tracking and retransmit caps, send-wait ordering, dedup windows."""

from __future__ import annotations

import heapq
import random

import pytest

from runtime.stages.transport import AckTracker, DedupWindow, SendWait, TransportPolicy

UNSEEN = object()  # `DedupWindow.get` default: tells "not seen" from a remembered None


def test_policy_parsing() -> None:
    p = TransportPolicy.from_mapping(
        {
            "ack": "MSG_DATA_ACK",
            "timeout": "5s",
            "retransmit": "until_ack",
            "max_attempts": 4,
            "dedup": "per_sender",
            "dedup_window": "10m",
            "ordering": "send_wait",
        }
    )
    assert (p.timeout, p.retransmit, p.max_attempts, p.dedup, p.dedup_window, p.send_wait) == (
        5.0,
        True,
        4,
        True,
        600.0,
        True,
    )
    with pytest.raises(ValueError):
        TransportPolicy.from_mapping({"retransmit": "sometimes"})


def test_ack_tracker_retransmits_until_cap() -> None:
    t: AckTracker[int, str] = AckTracker(5.0, retransmit=True, max_attempts=3)
    t.track(1, "m1", 0.0)
    t.track(2, "m2", 1.0)
    assert t.due(4.9) == ([], [])
    assert t.due(5.0) == ([(1, "m1")], [])
    assert t.ack(2) == "m2" and t.ack(2) is None  # duplicate ack is harmless
    assert t.due(10.0) == ([(1, "m1")], [])  # third attempt
    assert t.due(15.0) == ([], [(1, "m1")])  # cap reached: given up, reported once
    assert len(t) == 0 and t.due(100.0) == ([], [])


def test_ack_tracker_without_retransmit_only_times_out() -> None:
    t: AckTracker[int, str] = AckTracker(15.0, retransmit=False)
    t.track(9, "x", 0.0)
    assert t.due(15.0) == ([], [(9, "x")])


def simulate(send_wait: bool, seed: int, n: int = 12) -> list[int]:
    """A simulated network with random per-message delays; returns the order the receiver saw messages in."""
    rng = random.Random(seed)
    events: list[tuple[float, int, str, int]] = []
    order = 0
    received: list[int] = []
    sw: SendWait[int, int] = SendWait()

    def transmit(now: float, key: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (now + rng.uniform(0.001, 0.5), order, "deliver", key))

    for key in range(n):
        if not send_wait or sw.submit("peer", key, key):
            transmit(0.0, key)
    while events:
        now, _o, kind, key = heapq.heappop(events)
        if kind == "deliver":
            received.append(key)
            order += 1
            heapq.heappush(events, (now + rng.uniform(0.001, 0.5), order, "ack", key))
        elif send_wait:
            nxt = sw.ack("peer", key)
            if nxt is not None:
                transmit(now, nxt[0])
    return received


@pytest.mark.parametrize("seed", range(10))
def test_send_wait_preserves_order_under_random_delays(seed: int) -> None:
    assert simulate(True, seed) == list(range(12))


def test_without_send_wait_the_same_delays_reorder() -> None:
    assert any(simulate(False, seed) != list(range(12)) for seed in range(10))


def test_send_wait_ignores_stale_acks_and_streams_are_independent() -> None:
    sw: SendWait[int, str] = SendWait()
    assert sw.submit("a", 1, "a1") and sw.submit("b", 1, "b1")
    assert not sw.submit("a", 2, "a2")
    assert sw.ack("a", 2) is None and sw.inflight("a") == 1  # not the in-flight one
    assert sw.ack("a", 1) == (2, "a2")
    assert sw.ack("a", 2) is None and sw.inflight("a") is None
    assert sw.submit("a", 3, "a3")


def test_dedup_window_per_sender_with_expiry() -> None:
    d = DedupWindow(window=10.0)
    assert d.get(7, "k", 0.0, UNSEEN) is UNSEEN
    d.remember(7, "k", "reply", 0.0)
    assert d.get(7, "k", 9.9) == "reply"
    assert d.get(8, "k", 1.0, UNSEEN) is UNSEEN  # another sender's identical key is not a duplicate
    assert d.get(7, "k", 10.0) == "reply"  # kept at least the window, less than twice it
    assert d.get(7, "k", 20.0, UNSEEN) is UNSEEN
    assert len(d) == 0


def test_dedup_window_drops_everything_after_a_long_silence() -> None:
    d = DedupWindow(window=10.0)
    d.remember(1, "a", 1, 0.0)
    d.remember(1, "b", 2, 9.0)
    assert d.get(1, "b", 18.0) == 2
    assert d.get(1, "a", 30.0, UNSEEN) is UNSEEN and len(d) == 0
    d.remember(1, "c", 3, 100.0)
    assert d.get(1, "c", 109.0) == 3 and d.get(1, "b", 109.0, UNSEEN) is UNSEEN


def test_dedup_window_forget_and_refresh() -> None:
    d = DedupWindow(window=10.0)
    d.remember(1, "a", "x", 0.0)
    assert d.get(1, "a", 12.0) == "x"  # in the old generation now
    d.remember(1, "a", "y", 12.0)  # back in the young one with the new result
    assert d.get(1, "a", 25.0) == "y"
    d.forget(1, "a")
    assert d.get(1, "a", 25.0) is None and d.get(1, "a", 25.0, UNSEEN) is UNSEEN


def test_dedup_window_is_bounded() -> None:
    d = DedupWindow(window=100.0, max_entries=3)
    for i in range(5):
        d.remember(1, i, None, 0.0)
    assert len(d) == 3 and d.get(1, 0, 0.0, UNSEEN) is UNSEEN and d.get(1, 4, 0.0, UNSEEN) is None
