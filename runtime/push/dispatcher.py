"""Runtime push layer: a bounded queue in front of a sink, with retries and metrics.

Notifications wait in a queue of at most `max_queue` (a full queue drops the new one and counts it); one
worker sends them in order. A failure that may pass (network, 429, 5xx) is retried after `backoff` seconds,
doubling up to `backoff_max`, at most `max_attempts` times in all; then it is dropped and counted. The same
(user, session, msg id) is sent once within `dedup_window` seconds (a relay retried after a router failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

from runtime.monitor.metrics import Metrics
from runtime.push.sinks import Notification, PushError, Sink

log = logging.getLogger("ttgen.push")


class PushDispatcher:
    """Queue, worker, retries."""

    def __init__(
        self,
        sink: Sink,
        metrics: Metrics,
        *,
        max_queue: int = 10_000,
        max_attempts: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 30.0,
        dedup_window: float = 600.0,
    ) -> None:
        self.sink = sink
        self.max_attempts = max(1, max_attempts)
        self.backoff, self.backoff_max = backoff, backoff_max
        self.dedup_window = dedup_window
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(max(1, max_queue))
        self._seen: OrderedDict[tuple[int, int, int, int], float] = OrderedDict()
        self._worker: asyncio.Task[None] | None = None
        self.m_sent = metrics.counter("push_sent_total", "notifications the sink accepted")
        self.m_failed = metrics.counter("push_failed_total", "notifications dropped after their last attempt")
        self.m_retries = metrics.counter("push_retries_total", "send attempts repeated after a failure")
        self.m_dropped = metrics.counter("push_dropped_total", "notifications dropped: queue full")
        self.m_duplicates = metrics.counter("push_duplicates_total", "notifications already sent (skipped)")
        self.g_queue = metrics.gauge("push_queue", "notifications waiting")

    def start(self) -> None:
        """Start the worker (on the running loop)."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="push")

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Send what is queued (up to `drain_timeout`), then stop and close the sink."""
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout)
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        await self.sink.close()

    def submit(self, note: Notification) -> bool:
        """Queue a notification; False if it was a duplicate or the queue is full."""
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now - self.dedup_window:
            self._seen.popitem(last=False)
        key = (note.user_id, note.session_type, note.session_id, note.msg_id)
        if key in self._seen:
            self.m_duplicates.inc()
            return False
        try:
            self._queue.put_nowait(note)
        except asyncio.QueueFull:
            self.m_dropped.inc()
            return False
        self._seen[key] = now
        while len(self._seen) > 100_000:
            self._seen.popitem(last=False)
        self.g_queue.set(self._queue.qsize())
        return True

    async def _run(self) -> None:
        while True:
            note = await self._queue.get()
            try:
                await self._deliver(note)
            finally:
                self._queue.task_done()
                self.g_queue.set(self._queue.qsize())

    async def _deliver(self, note: Notification) -> None:
        delay = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            try:
                await self.sink.send(note)
            except PushError as exc:
                if not exc.retry or attempt == self.max_attempts:
                    self.m_failed.inc()
                    log.warning("push to user %d dropped after %d attempt(s): %s", note.user_id, attempt, exc)
                    return
                self.m_retries.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
            except Exception:
                self.m_failed.inc()
                log.exception("push sink %s failed", self.sink.name)
                return
            else:
                self.m_sent.inc()
                return
