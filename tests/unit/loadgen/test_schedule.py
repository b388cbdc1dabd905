"""runtime.loadgen.schedule: open-loop due times do not depend on when the caller looks."""

from __future__ import annotations

import pytest

from runtime.loadgen.schedule import OpenLoop


def test_events_are_due_at_fixed_times_round_robin() -> None:
    s = OpenLoop(100.0, rate=10.0, sources=3, count=7)
    assert list(s.take_due(99.9)) == []
    assert list(s.take_due(100.0)) == [(0, 0, 100.0)]
    got = list(s.take_due(100.25))
    assert [(i, src) for i, src, _ in got] == [(1, 1), (2, 2)]
    assert got[1][2] == pytest.approx(100.2)


def test_a_late_caller_gets_every_missed_event_with_its_original_due_time() -> None:
    s = OpenLoop(0.0, rate=1000.0, sources=4, count=10_000)
    events = list(s.take_due(2.0))  # the caller stalled for two seconds
    assert len(events) == 2001
    assert events[-1][2] == pytest.approx(2.0)
    assert events[500][2] == pytest.approx(0.5)  # due times are not shifted by the stall
    assert s.next_due() == pytest.approx(2.001)


def test_count_and_end_bound_the_schedule() -> None:
    s = OpenLoop(0.0, rate=100.0, sources=2, end=1.0)
    assert s.count == 100
    assert len(list(s.take_due(50.0))) == 100
    assert s.done and s.next_due() is None
    c = OpenLoop(0.0, rate=100.0, sources=2, count=5, end=1.0)
    assert len(list(c.take_due(50.0))) == 5


def test_periodic_spreads_sources_over_one_period() -> None:
    s = OpenLoop.periodic(10.0, period=30.0, sources=3, end=100.0)
    first = list(s.take_due(39.99))
    assert [(src, due) for _, src, due in first] == [(0, 10.0), (1, 20.0), (2, 30.0)]
    assert [src for _, src, _ in s.take_due(70.0)] == [0, 1, 2, 0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        OpenLoop(0.0, rate=0.0, sources=1, count=1)
    with pytest.raises(ValueError):
        OpenLoop(0.0, rate=1.0, sources=0, count=1)
    with pytest.raises(ValueError):
        OpenLoop(0.0, rate=1.0, sources=1)
