"""Runtime load-generation layer: a mergeable latency histogram with bounded memory and ~1.6% precision.

Values are recorded in microseconds into log-linear buckets (HDR-histogram style: values below 128 exactly,
above that 64 buckets per power of two), so a process can record millions of latencies in a few hundred
buckets, and the histograms of several load processes merge by adding counts (they travel as JSON).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_EXACT_BITS = 7  # values below 2**7 get a bucket each; above, 2**6 buckets per doubling


def bucket_of(value_us: int) -> int:
    """The bucket index of a non-negative value (negative values count as 0)."""
    if value_us < 128:
        return max(value_us, 0)
    shift = value_us.bit_length() - _EXACT_BITS
    return (shift << _EXACT_BITS) + (value_us >> shift)


def bucket_value(index: int) -> int:
    """A representative value of a bucket (the middle of its range)."""
    shift = index >> _EXACT_BITS
    if shift == 0:
        return index
    mantissa = index - (shift << _EXACT_BITS)
    return (mantissa << shift) + (1 << (shift - 1))


class Histogram:
    """Counts of latencies (µs) per bucket; `percentile` answers in milliseconds."""

    __slots__ = ("count", "counts", "max_us", "total_us")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total_us = 0
        self.max_us = 0

    def record(self, value_us: int) -> None:
        """Add one value in microseconds."""
        b = bucket_of(value_us)
        counts = self.counts
        counts[b] = counts.get(b, 0) + 1
        self.count += 1
        self.total_us += value_us
        if value_us > self.max_us:
            self.max_us = value_us

    def record_seconds(self, seconds: float) -> None:
        """Add one value in seconds."""
        self.record(int(seconds * 1e6))

    def merge(self, other: Histogram) -> None:
        """Add another histogram's counts to this one."""
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.count += other.count
        self.total_us += other.total_us
        self.max_us = max(self.max_us, other.max_us)

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1) in milliseconds; None when empty."""
        if not self.count:
            return None
        rank = max(1, min(self.count, int(q * self.count + 0.999999)))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(bucket_value(b), self.max_us) / 1000.0
        return self.max_us / 1000.0

    def summary(self) -> dict[str, float | int | None]:
        """count, p50, p90, p99, p999 and max in milliseconds."""
        return {
            "count": self.count,
            "p50_ms": self.percentile(0.5),
            "p90_ms": self.percentile(0.9),
            "p99_ms": self.percentile(0.99),
            "p999_ms": self.percentile(0.999),
            "max_ms": self.max_us / 1000.0 if self.count else None,
        }

    def to_json(self) -> dict[str, object]:
        """A JSON-safe form (`from_json` reads it back)."""
        return {
            "counts": {str(b): n for b, n in self.counts.items()},
            "total_us": self.total_us,
            "max_us": self.max_us,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, object]) -> Histogram:
        """Rebuild a histogram from `to_json`'s output."""
        h = cls()
        counts = doc.get("counts") or {}
        assert isinstance(counts, Mapping)
        h.counts = {int(b): int(n) for b, n in counts.items()}
        h.count = sum(h.counts.values())
        h.total_us = int(doc.get("total_us", 0))  # type: ignore[call-overload]
        h.max_us = int(doc.get("max_us", 0))  # type: ignore[call-overload]
        return h

    @classmethod
    def merged(cls, parts: Iterable[Histogram]) -> Histogram:
        """One histogram holding every part's values."""
        h = cls()
        for p in parts:
            h.merge(p)
        return h
