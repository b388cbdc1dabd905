"""Runtime monitor layer: in-process counters, gauges and latency histograms with Prometheus text exposition.

Deliberately tiny and allocation-free on the hot path: a counter increment is one attribute add. Latency
histograms keep fixed buckets for the Prometheus output plus a bounded reservoir for p50/p99
(`ttgen status`).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Counter:
    """A monotonically increasing count."""

    __slots__ = ("help", "name", "value")

    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help, self.value = name, help_, 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Gauge:
    """A value that goes up and down (connections, queue depth)."""

    __slots__ = ("help", "name", "value")

    def __init__(self, name: str, help_: str) -> None:
        self.name, self.help, self.value = name, help_, 0.0

    def set(self, v: float) -> None:
        self.value = v

    def inc(self, n: float = 1) -> None:
        self.value += n

    def dec(self, n: float = 1) -> None:
        self.value -= n


class Histogram:
    """Latency distribution in seconds: cumulative buckets plus a reservoir sample for percentiles."""

    __slots__ = ("buckets", "count", "counts", "help", "name", "reservoir", "reservoir_size", "sum")

    def __init__(
        self, name: str, help_: str, buckets: Iterable[float] = DEFAULT_BUCKETS, reservoir_size: int = 4096
    ) -> None:
        self.name, self.help = name, help_
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)
        self.count = 0
        self.sum = 0.0
        self.reservoir: list[float] = []
        self.reservoir_size = reservoir_size

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.sum += seconds
        if len(self.reservoir) < self.reservoir_size:
            self.reservoir.append(seconds)
        else:  # reservoir sampling keeps a uniform sample of everything observed
            j = int(random.random() * self.count)  # uniform in [0, count); a C call, unlike randrange
            if j < self.reservoir_size:
                self.reservoir[j] = seconds

    def percentile(self, q: float) -> float | None:
        if not self.reservoir:
            return None
        data = sorted(self.reservoir)
        return data[min(len(data) - 1, int(q * len(data)))]


class Metrics:
    """A named set of metrics for one service instance."""

    def __init__(self, prefix: str = "ttgen", labels: dict[str, str] | None = None) -> None:
        self.prefix = prefix
        self.labels = dict(labels or {})
        self._metrics: dict[str, Counter | Gauge | Histogram] = {}

    def _get(self, kind: type, name: str, help_: str) -> Counter | Gauge | Histogram:
        full = f"{self.prefix}_{name}"
        metric = self._metrics.get(full)
        if metric is None:
            metric = kind(full, help_)
            self._metrics[full] = metric
        elif not isinstance(metric, kind):
            raise TypeError(f"metric {full} already registered as {type(metric).__name__}")
        return metric

    def counter(self, name: str, help_: str = "") -> Counter:
        m = self._get(Counter, name, help_)
        assert isinstance(m, Counter)
        return m

    def gauge(self, name: str, help_: str = "") -> Gauge:
        m = self._get(Gauge, name, help_)
        assert isinstance(m, Gauge)
        return m

    def histogram(self, name: str, help_: str = "") -> Histogram:
        m = self._get(Histogram, name, help_)
        assert isinstance(m, Histogram)
        return m

    def snapshot(self) -> dict[str, float]:
        """Flat values for `ttgen status` (histograms as _count, _p50, _p99)."""
        out: dict[str, float] = {}
        for full, m in sorted(self._metrics.items()):
            if isinstance(m, Histogram):
                out[f"{full}_count"] = m.count
                for q in (0.5, 0.99):
                    p = m.percentile(q)
                    if p is not None:
                        out[f"{full}_p{int(q * 100)}"] = p
            else:
                out[full] = m.value
        return out

    def render(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""
        lines: list[str] = []
        base = self.labels
        for full, m in sorted(self._metrics.items()):
            kind = {Counter: "counter", Gauge: "gauge", Histogram: "histogram"}[type(m)]
            if m.help:
                lines.append(f"# HELP {full} {m.help}")
            lines.append(f"# TYPE {full} {kind}")
            if isinstance(m, Histogram):
                cumulative = 0
                for bound, n in zip(m.buckets, m.counts, strict=False):
                    cumulative += n
                    lines.append(f"{full}_bucket{_labels({**base, 'le': repr(bound)})} {cumulative}")
                lines.append(f"{full}_bucket{_labels({**base, 'le': '+Inf'})} {m.count}")
                lines.append(f"{full}_sum{_labels(base)} {m.sum}")
                lines.append(f"{full}_count{_labels(base)} {m.count}")
            else:
                lines.append(f"{full}{_labels(base)} {m.value}")
        return "\n".join(lines) + "\n"
