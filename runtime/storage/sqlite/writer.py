"""Storage layer (SQLite): the group-commit writer, one thread owning the only write connection.

Callers submit operations (functions of a connection). The thread takes every operation queued (up to
`max_batch`), runs them in one transaction, commits once, and only then resolves the callers' futures: an
acknowledged write is durable, and one fsync is shared by the whole batch. Operations run without savepoints
first; if one raises, the transaction is rolled back and the batch replayed with a savepoint per operation, so
the failing one is undone alone and the others still commit. Operations must therefore depend only on the
connection (they may run twice before the commit).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, TypeVar

from runtime.storage.errors import StorageClosed
from runtime.storage.sqlite.write_cache import WriteCache

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], Any]
Callback = Callable[[Any, BaseException | None], None]


@dataclass(slots=True)
class _Pending:
    op: Operation
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any] | Callback  # a future to resolve, or a callback(result, error) to call
    cached: bool = False  # the operation uses the write cache (and needs no flush before it runs)


_STOP = object()
_log = logging.getLogger(__name__)


def _settle_all(items: list[tuple[asyncio.Future[Any] | Callback, Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if not isinstance(future, asyncio.Future):
            try:
                future(result, error)
            except Exception:  # one caller's bug must not keep the others from their results
                _log.exception("write callback failed")
            continue
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class GroupCommitWriter:
    """A single writer thread that batches queued operations into one transaction per batch."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        max_batch: int = 1024,
        after_commit: Callable[[sqlite3.Connection], None] | None = None,
        cache: WriteCache | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._conn = conn
        self._cache = cache
        self._after_commit = after_commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ttgen-sqlite-writer", daemon=True)
        self._closed = False
        self.batches = 0  # committed transactions, for benchmarks and tests
        self.operations = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    async def submit(self, op: Callable[[sqlite3.Connection], T], *, cached: bool = False) -> T:
        """Queue an operation and wait until the transaction that ran it has committed.

        `cached` marks an operation that works through the write cache (see `WriteCache`)."""
        if self._closed:
            raise StorageClosed("storage is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(op, loop, future, cached))
        return await future

    def submit_nowait(
        self, op: Callable[[sqlite3.Connection], T], callback: Callback, *, cached: bool = False
    ) -> None:
        """Queue an operation; `callback(result, error)` runs on the calling loop once its batch committed
        (or failed). No future and no task per operation: the hot send path of biz uses this."""
        if self._closed:
            raise StorageClosed("storage is closed")
        self._queue.put(_Pending(op, asyncio.get_running_loop(), callback, cached))

    async def close(self) -> None:
        """Finish every queued operation, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _take_batch(self) -> tuple[list[_Pending], bool]:
        first = self._queue.get()
        if first is _STOP:
            return [], True
        assert isinstance(first, _Pending)
        batch = [first]
        stop = False
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            assert isinstance(item, _Pending)
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take_batch()
            if batch:
                self._run_batch(batch)

    def _run_batch(self, batch: list[_Pending]) -> None:
        conn = self._conn
        cache = self._cache
        results: list[Any]
        errors: list[BaseException | None] | None = None  # None: no operation failed
        try:
            conn.execute("BEGIN IMMEDIATE")
            fast = self._fast_pass(conn, batch, cache)
            if fast is None:  # an operation failed: undo, then replay with one savepoint per operation
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                if cache is not None:  # the replay runs every operation on the tables alone
                    cache.reset()
                    cache.enabled = False
                try:
                    results, errors = self._isolated_pass(conn, batch)
                finally:
                    if cache is not None:
                        cache.enabled = True
            else:
                results = fast
            conn.execute("COMMIT")
            self.batches += 1
            self.operations += len(batch)
        except Exception as exc:  # commit failed: nothing in the batch is durable, so nobody gets an ack
            if cache is not None:
                cache.reset()
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [None] * len(batch)
            errors = [exc] * len(batch)
        else:
            if self._after_commit is not None:
                try:
                    self._after_commit(conn)
                except Exception:  # housekeeping only: the batch is committed either way
                    _log.exception("after-commit hook failed")
        self._resolve(batch, results, errors)

    @staticmethod
    def _fast_pass(
        conn: sqlite3.Connection, batch: list[_Pending], cache: WriteCache | None
    ) -> list[Any] | None:
        """Run every operation with no savepoints (the common case) and return their results; None if any
        of them raised (the cache is then reset by the caller's rollback)."""
        try:
            if cache is None:
                return [pending.op(conn) for pending in batch]
            results: list[Any] = []
            append = results.append
            cache.begin(conn)
            for pending in batch:
                if pending.cached:
                    append(pending.op(conn))
                    continue
                # An operation that does not know the cache sees the queued rows, and may change what the
                # cache holds (pairs, sessions): flush before, forget after.
                if cache.pending:
                    cache.flush(conn)
                try:
                    append(pending.op(conn))
                finally:
                    cache.reset()
            cache.flush(conn)
        except Exception:
            return None
        return results

    @staticmethod
    def _isolated_pass(
        conn: sqlite3.Connection, batch: list[_Pending]
    ) -> tuple[list[Any], list[BaseException | None]]:
        """Run every operation in its own savepoint so a failing one is undone alone: (results, errors)."""
        results: list[Any] = []
        errors: list[BaseException | None] = []
        for pending in batch:
            conn.execute("SAVEPOINT op")
            try:
                result = pending.op(conn)
            except Exception as exc:  # the caller gets it; the rest of the batch goes on
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append(None)
                errors.append(exc)
            else:
                conn.execute("RELEASE op")
                results.append(result)
                errors.append(None)
        return results, errors

    @staticmethod
    def _resolve(
        batch: list[_Pending], results: list[Any], errors: list[BaseException | None] | None
    ) -> None:
        """Settle the futures and callbacks with one wake-up per event loop, not one per operation."""
        by_loop: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[Any] | Callback, Any, BaseException | None]],
        ] = {}
        loop: asyncio.AbstractEventLoop | None = None
        items: list[tuple[asyncio.Future[Any] | Callback, Any, BaseException | None]] = []
        for pending, result, error in zip(batch, results, errors or repeat(None), strict=False):
            if pending.loop is not loop:  # usually one loop for the whole batch: one dict lookup
                loop = pending.loop
                items = by_loop.setdefault(loop, [])
            items.append((pending.future, result, error))
        for target, settled in by_loop.items():
            try:
                target.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # the caller's loop is gone; nobody is waiting
                pass
