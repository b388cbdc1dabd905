"""Runtime timer layer: deadlines of many connections in one structure (sans-IO: the caller passes the time).

A `DeadlineWheel` keeps keys in buckets of `resolution` seconds (a hashed timing wheel without a fixed size:
the buckets sit in a dict and a min-heap orders the non-empty ones). Adding or removing a key is O(1);
`expire(now)` touches only the buckets that came due. A server with 100,000 idle connections therefore does
work in proportion to the deadlines that arrive, not a pass over every connection each second.

Deadlines that move often (a connection's idle deadline moves with every frame it receives) are not moved in
the wheel: the owner re-checks a key when its bucket fires and adds it again at its new deadline, so a busy
connection costs one wheel operation per timeout period, not one per frame (`ConnectionTimers` does this).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)
NO_SLOT = -1


class DeadlineWheel(Generic[K]):
    """Keys due at deadlines rounded up to `resolution`; `expire(now)` returns the keys that came due."""

    __slots__ = ("_buckets", "_heap", "resolution")

    def __init__(self, resolution: float = 1.0) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        self.resolution = resolution
        self._buckets: dict[int, set[K]] = {}
        self._heap: list[int] = []  # slot numbers of non-empty buckets (may hold stale, emptied ones)

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def slot_of(self, deadline: float) -> int:
        """The bucket a deadline falls in: it fires at `slot * resolution`, never before the deadline."""
        return math.ceil(deadline / self.resolution)

    def add(self, key: K, deadline: float) -> int:
        """Schedule `key` at `deadline`; returns its slot (keep it to `discard` the key later)."""
        slot = self.slot_of(deadline)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = set()
            heapq.heappush(self._heap, slot)
        bucket.add(key)
        return slot

    def discard(self, key: K, slot: int) -> None:
        """Unschedule `key` from `slot` (nothing if it is not there)."""
        bucket = self._buckets.get(slot)
        if bucket is not None:
            bucket.discard(key)
            if not bucket:
                del self._buckets[slot]  # its heap entry is dropped when it surfaces

    def next_deadline(self) -> float | None:
        """When the earliest non-empty bucket fires (None: nothing scheduled)."""
        heap = self._heap
        while heap and heap[0] not in self._buckets:
            heapq.heappop(heap)
        return heap[0] * self.resolution if heap else None

    def expire(self, now: float) -> list[K]:
        """Remove and return every key whose bucket fires at or before `now`."""
        due: list[K] = []
        heap, buckets = self._heap, self._buckets
        limit = math.floor(now / self.resolution + 1e-9)
        while heap and heap[0] <= limit:
            bucket = buckets.pop(heapq.heappop(heap), None)
            if bucket:
                due.extend(bucket)
        return due


class Timed(Protocol):
    """What `ConnectionTimers` drives: a link whose deadlines a `tick(now)` applies."""

    timer_slot: int

    def __hash__(self) -> int: ...

    def tick(self, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...


T = TypeVar("T", bound=Timed)


class ConnectionTimers(Generic[T]):
    """The deadlines of a server's connections in one wheel: `track` a new link, `untrack` a lost one, and
    call `run(now)` periodically; each link due is ticked and scheduled again at its next deadline."""

    __slots__ = ("on_error", "wheel")

    def __init__(
        self, resolution: float = 1.0, on_error: Callable[[T, Exception], None] | None = None
    ) -> None:
        self.wheel: DeadlineWheel[T] = DeadlineWheel(resolution)
        self.on_error = on_error

    def track(self, link: T) -> None:
        deadline = link.next_deadline()
        link.timer_slot = NO_SLOT if deadline is None else self.wheel.add(link, deadline)

    def untrack(self, link: T) -> None:
        if link.timer_slot != NO_SLOT:
            self.wheel.discard(link, link.timer_slot)
            link.timer_slot = NO_SLOT

    def run(self, now: float) -> int:
        """Tick every link whose bucket came due and reschedule it; returns how many were ticked."""
        due = self.wheel.expire(now)
        for link in due:
            link.timer_slot = NO_SLOT
            try:
                link.tick(now)
            except Exception as exc:  # one broken link must not stop the deadlines of all others
                if self.on_error is not None:
                    self.on_error(link, exc)
            self.track(link)
        return len(due)

    def track_all(self, links: Iterable[T]) -> None:
        for link in links:
            self.track(link)
