"""Account security layer: the bounded worker pool that runs password hashing off the event loop.

argon2 releases the GIL while it hashes, so threads sized to the cores verify in parallel while the event loop
keeps delivering messages. The pool is bounded twice: `workers` run at once and at most `max_queue` wait;
anything beyond is refused at once (`PoolBusy`) so a login storm turns into "busy, try later" answers instead
of an unbounded backlog. The pool also measures itself (verifications per second it can sustain, how full it
is), which biz reports in its metrics and health.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class PoolBusy(Exception):
    """The pool's queue is full: the caller should answer "busy, try later"."""


class VerifyPool:
    """`workers` threads (default: the cores) and a queue of at most `max_queue` waiting jobs."""

    def __init__(self, workers: int | None = None, max_queue: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_queue = max(0, self.workers * 32 if max_queue is None else max_queue)
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="verify")
        self.pending = 0  # running plus waiting jobs
        self.done = 0
        self.refused = 0
        self._avg = 0.0  # EWMA of one job's run time, seconds

    @property
    def occupancy(self) -> float:
        """Pending jobs over capacity (workers + queue): 1.0 means the next job is refused."""
        return self.pending / (self.workers + self.max_queue)

    @property
    def capacity_per_second(self) -> float:
        """Jobs per second the pool sustains at the measured job time (0 until a job has run)."""
        return self.workers / self._avg if self._avg > 0 else 0.0

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run `fn(*args)` on a worker; `PoolBusy` at once if `workers + max_queue` jobs are pending."""
        if self.pending >= self.workers + self.max_queue:
            self.refused += 1
            raise PoolBusy("password verification is saturated")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, fn, args)
        finally:
            self.pending -= 1
            self.done += 1

    def _timed(self, fn: Callable[..., T], args: tuple[object, ...]) -> T:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            spent = time.perf_counter() - started
            # A float store is atomic under the GIL; a lost update between workers only blurs the average.
            self._avg = spent if self._avg == 0 else self._avg * 0.9 + spent * 0.1

    def close(self) -> None:
        """Stop the threads once running jobs finish."""
        self._executor.shutdown(wait=False, cancel_futures=True)
