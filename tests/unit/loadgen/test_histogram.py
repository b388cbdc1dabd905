"""runtime.loadgen.histogram: buckets, percentiles within the stated precision, merging, JSON round trip."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from runtime.loadgen.histogram import Histogram, bucket_of, bucket_value


@given(st.integers(min_value=0, max_value=10**10))
def test_bucket_value_is_within_two_percent(value: int) -> None:
    approx = bucket_value(bucket_of(value))
    assert abs(approx - value) <= max(1, value * 0.016)


def test_buckets_are_monotonic() -> None:
    last = -1
    for v in range(0, 200_000, 7):
        b = bucket_of(v)
        assert b >= last
        last = b


def test_small_values_are_exact() -> None:
    h = Histogram()
    for v in (0, 1, 5, 127):
        h.record(v)
    assert h.percentile(0.0) == 0.0
    assert h.percentile(1.0) == 0.127
    assert h.count == 4


def test_percentiles_of_a_known_distribution() -> None:
    h = Histogram()
    values = list(range(1, 100_001))  # 1 µs .. 100 ms
    random.Random(1).shuffle(values)
    for v in values:
        h.record(v)
    assert abs(h.percentile(0.5) - 50.0) < 50.0 * 0.02
    assert abs(h.percentile(0.99) - 99.0) < 99.0 * 0.02
    assert h.summary()["max_ms"] == 100.0
    assert Histogram().percentile(0.5) is None


def test_merge_and_json_round_trip() -> None:
    a, b = Histogram(), Histogram()
    for v in range(1000):
        a.record(v)
    for v in range(1000, 3000):
        b.record(v * 10)
    merged = Histogram.merged([Histogram.from_json(a.to_json()), Histogram.from_json(b.to_json())])
    assert merged.count == 3000
    assert merged.max_us == 29_990
    assert merged.percentile(1 / 3) <= 1.0  # the first third are a's values, all below 1 ms
    assert merged.percentile(0.34) >= 10.0


def test_negative_values_count_as_zero() -> None:
    h = Histogram()
    h.record(-5)
    assert h.percentile(0.5) == 0.0
