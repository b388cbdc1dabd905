"""Runtime load-generation layer: open-loop schedules (sans-IO: the caller passes the time).

An open-loop load fixes when every event is *due* before the run starts, whatever happens to earlier events.
Latency is then measured from the due time, not from when the load process got round to sending, so a load
process that falls behind shows up as latency instead of silently offering less load (coordinated
omission). `n` sources that each fire every `period` seconds, phases spread evenly, fire in round-robin
order: event j is due at `start + j * period / n` and belongs to source `j % n`, so the schedule costs O(1)
per event and no per-source timer.
"""

from __future__ import annotations

from collections.abc import Iterator


class OpenLoop:
    """Events due at a fixed rate, round-robin over `sources`, from `start` for `count` events (or until
    `end`, whichever comes first)."""

    __slots__ = ("count", "end", "interval", "next_index", "sources", "start")

    def __init__(
        self, start: float, rate: float, sources: int, *, count: int | None = None, end: float | None = None
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if sources <= 0:
            raise ValueError("sources must be positive")
        self.start = start
        self.interval = 1.0 / rate
        self.sources = sources
        limit = count if count is not None else None
        if end is not None:
            by_time = max(0, int((end - start) * rate - 1e-9) + 1) if end > start else 0
            limit = by_time if limit is None else min(limit, by_time)
        if limit is None:
            raise ValueError("an open loop needs a count or an end")
        self.count = limit
        self.end = end
        self.next_index = 0

    @classmethod
    def periodic(cls, start: float, period: float, sources: int, end: float) -> OpenLoop:
        """Each of `sources` fires every `period` seconds (heartbeats), phases spread over one period."""
        return cls(start, sources / period, sources, end=end)

    @property
    def done(self) -> bool:
        """Every event has been taken."""
        return self.next_index >= self.count

    def due_at(self, index: int) -> float:
        """When event `index` is due."""
        return self.start + index * self.interval

    def next_due(self) -> float | None:
        """When the next untaken event is due (None when done)."""
        return None if self.done else self.due_at(self.next_index)

    def take_due(self, now: float) -> Iterator[tuple[int, int, float]]:
        """Yield (event index, source, due time) of every untaken event due at or before `now`."""
        stop = min(self.count, int((now - self.start) / self.interval) + 1) if now >= self.start else 0
        i = self.next_index
        sources = self.sources
        while i < stop:
            self.next_index = i + 1
            yield i, i % sources, self.start + i * self.interval
            i += 1

    @property
    def taken(self) -> int:
        """Events taken so far."""
        return self.next_index
