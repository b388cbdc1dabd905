"""Storage layer (PostgreSQL): the group-commit writer, one asyncio task owning the write connection.

Callers queue operations (async functions of a connection) and 1:1 sends. The task takes everything queued (up
to `max_batch`), runs it in one transaction (opened by the previous batch's COMMIT, in the same round trip)
and commits once; only then are the callers' futures and callbacks settled, so an acknowledged write is
durable and one WAL flush serves the whole batch. Runs of consecutive first sends are stored in bulk
(`messages.store_singles`). If an operation raises, the transaction is rolled back and the batch replayed with
a savepoint per operation, so the failing one is undone alone. A deadlock or serialization failure between
writers (rare: counters are locked in a fixed order) replays the whole batch. When the server cannot be
reached, the batch fails with StorageUnavailable (nothing of it was acked) and the next batch connects again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from runtime.storage.errors import StorageClosed, StorageError, StorageUnavailable
from runtime.storage.postgres.common import Conn, require_users
from runtime.storage.postgres.messages import SingleSend, store_single_checked, store_singles
from runtime.storage.sqlite.context import OpContext

T = TypeVar("T")
Operation = Callable[[Conn], Awaitable[Any]]
Callback = Callable[[Any, BaseException | None], None]
_log = logging.getLogger(__name__)
_RETRIES = 5  # whole-batch replays after a deadlock or serialization failure

# The server is down, restarting, unreachable, or dropped the connection: nothing in flight was acked.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    OSError,
    TimeoutError,
)


def unavailable(exc: BaseException) -> StorageUnavailable:
    """The error callers see when the database cannot be reached."""
    detail = str(exc) or type(exc).__name__
    return StorageUnavailable(f"database unavailable ({detail}); nothing was stored, try again")


@dataclass(slots=True)
class _Pending:
    op: Operation | None  # None: `send` is a first 1:1 send, stored in bulk with its neighbours
    send: SingleSend | None
    future: asyncio.Future[Any] | Callback


class _OpFailed(Exception):
    """An operation of the fast pass raised: the batch is replayed operation by operation."""


def _settle(pending: _Pending, result: Any, error: BaseException | None) -> None:
    target = pending.future
    if isinstance(target, asyncio.Future):
        if target.done():
            return
        if error is not None:
            target.set_exception(error)
        else:
            target.set_result(result)
        return
    try:
        target(result, error)
    except Exception:  # one caller's bug must not keep the others from their results
        _log.exception("write callback failed")


class _Slot:
    """One write connection, the COMMIT it may have in flight, and whether its next transaction is already
    open (`begun`: the BEGIN went with the last COMMIT, in the same round trip)."""

    __slots__ = ("begun", "commit", "conn")

    def __init__(self, conn: Conn | None) -> None:
        self.conn = conn
        self.commit: asyncio.Task[None] | None = None
        self.begun = False

    def drop(self) -> None:
        self.begun = False
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None


class PgWriter:
    """The single writer of one storage instance: a task that batches queued work into one transaction.

    Commits are pipelined `depth` deep (2, on two connections): once a batch's statements have run (and its
    row locks are held), its COMMIT goes on in the background while the next batch runs on the other
    connection, so the WAL flush of one batch overlaps the work of the next. A later batch that touches the
    same conversation waits for the earlier one's COMMIT on the counter row lock, and callers are answered in
    batch order, so ids and answers keep their order."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[Conn]],
        ctx: OpContext,
        conn: Conn,
        max_batch: int = 1024,
        depth: int = 2,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._connect = connect
        self._ctx = ctx
        self._slots = [_Slot(conn)] + [_Slot(None) for _ in range(max(1, depth) - 1)]
        self._next_slot = 0
        self._last_commit: asyncio.Task[None] | None = None
        self.max_batch = max_batch
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # committed transactions, for benchmarks and tests
        self.operations = 0

    def start(self) -> None:
        """Start the writer task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ttgen-pg-writer")

    def _put(self, pending: _Pending) -> None:
        if self._closed:
            raise StorageClosed("storage is closed")
        self._queue.append(pending)
        self._wake.set()

    async def submit(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        """Queue an operation and wait until the transaction that ran it has committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put(_Pending(op, None, future))
        return await future

    def submit_nowait(self, op: Operation, callback: Callback) -> None:
        """Queue an operation; `callback(result, error)` runs once its batch committed (or failed)."""
        self._put(_Pending(op, None, callback))

    def submit_send(self, send: SingleSend, target: asyncio.Future[Any] | Callback) -> None:
        """Queue a checked 1:1 send (bulk when it has nothing to look up first)."""
        if send.bulk:
            self._put(_Pending(None, send, target))
        else:
            ctx = self._ctx
            self._put(_Pending(lambda c: store_single_checked(c, ctx, send), None, target))

    async def close(self) -> None:
        """Finish every queued operation, then stop the task and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._last_commit is not None:  # every batch answered, in order
            with contextlib.suppress(Exception):
                await self._last_commit
        for slot in self._slots:
            if slot.commit is not None:
                await slot.commit
            if slot.conn is not None:
                conn, slot.conn = slot.conn, None
                try:
                    await asyncio.wait_for(conn.close(), 5)
                except Exception:  # already broken: nothing to close cleanly
                    conn.terminate()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            slot = self._slots[self._next_slot]
            self._next_slot = (self._next_slot + 1) % len(self._slots)
            if slot.commit is not None:  # this connection's previous COMMIT must finish first
                await slot.commit
                slot.commit = None
            n = min(len(queue), self.max_batch)  # taken only now: everything queued meanwhile joins
            batch = [queue.popleft() for _ in range(n)]
            try:
                await self._run_batch(slot, batch)
            except Exception as exc:  # a bug: fail the batch rather than leave its callers waiting forever
                _log.exception("postgres writer: batch failed unexpectedly")
                slot.drop()
                for pending in batch:
                    _settle(pending, None, exc)

    async def _run_batch(self, slot: _Slot, batch: list[_Pending]) -> None:
        """Run the batch's statements; its COMMIT then goes on in the background (`_commit`)."""
        last: BaseException | None = None
        for _attempt in range(_RETRIES):
            stage = "connect"
            try:
                if slot.conn is None or slot.conn.is_closed():
                    slot.conn = await self._connect()
                conn = slot.conn
                stage = "begin"
                opened_idle, slot.begun = slot.begun, False
                if not opened_idle:
                    await conn.execute("BEGIN")
                stage = "run"
                results, errors = await self._in_transaction(conn, batch)
            except asyncpg.exceptions.TransactionRollbackError as exc:  # deadlock: replay the whole batch
                last = exc
                await self._rollback(slot)
                continue
            except CONNECTION_ERRORS as exc:
                slot.drop()
                # A connection that died while idle (before this batch, or in the transaction opened ahead
                # of it): nothing of the batch can have committed, so it is run once more on a new one.
                if (stage == "begin" or (stage == "run" and opened_idle)) and last is None:
                    last = exc
                    continue
                self._finish(batch, None, unavailable(exc))
                return
            commit = asyncio.get_running_loop().create_task(
                self._commit(slot, conn, batch, results, errors, self._last_commit)
            )
            slot.commit = commit
            self._last_commit = commit
            return
        self._finish(batch, None, StorageError(f"gave up after {_RETRIES} attempts: {last}"))

    def _finish(self, batch: list[_Pending], result: Any, error: BaseException) -> None:
        """Fail a batch that never reached its COMMIT (after the batches before it are answered)."""
        previous = self._last_commit
        if previous is None or previous.done():
            for pending in batch:
                _settle(pending, result, error)
            return

        async def after() -> None:
            with contextlib.suppress(Exception):
                await previous
            for pending in batch:
                _settle(pending, result, error)

        self._last_commit = asyncio.get_running_loop().create_task(after())

    async def _commit(
        self,
        slot: _Slot,
        conn: Conn,
        batch: list[_Pending],
        results: list[Any],
        errors: list[BaseException | None],
        previous: asyncio.Task[None] | None,
    ) -> None:
        failure: BaseException | None = None
        try:
            # COMMIT and the slot's next BEGIN in one simple query, one round trip: the next batch then starts
            # with its first statement (the round trips, not the rows, are most of a small batch's cost, on
            # both ends). The server runs the BEGIN only once the COMMIT succeeded; in READ COMMITTED a BEGIN
            # alone takes no snapshot and no lock, so an open, idle transaction holds nothing back.
            reopen = not self._closed
            await conn.execute("COMMIT; BEGIN" if reopen else "COMMIT")
            slot.begun = reopen and slot.conn is conn
        except CONNECTION_ERRORS as exc:  # in doubt: reported as not stored (docs/storage-postgres.md)
            if slot.conn is conn:
                slot.drop()
            failure = unavailable(exc)
        except Exception as exc:
            _log.exception("postgres writer: COMMIT failed")
            if slot.conn is conn:
                slot.drop()
            failure = exc
        if previous is not None:  # answer in batch order
            with contextlib.suppress(Exception):
                await previous
        if failure is not None:
            for pending in batch:
                _settle(pending, None, failure)
            return
        self.batches += 1
        self.operations += len(batch)
        for pending, result, error in zip(batch, results, errors, strict=True):
            _settle(pending, result, error)

    async def _rollback(self, slot: _Slot) -> None:
        if slot.conn is None:
            return
        try:
            await slot.conn.execute("ROLLBACK")
        except CONNECTION_ERRORS:
            slot.drop()

    async def _in_transaction(
        self, conn: Conn, batch: list[_Pending]
    ) -> tuple[list[Any], list[BaseException | None]]:
        try:
            return await self._fast_pass(conn, batch), [None] * len(batch)
        except _OpFailed:
            await conn.execute("ROLLBACK; BEGIN")
            return await self._isolated_pass(conn, batch)

    async def _fast_pass(self, conn: Conn, batch: list[_Pending]) -> list[Any]:
        """Every operation without savepoints, runs of first sends in bulk; _OpFailed if one raises."""
        ctx = self._ctx
        results: list[Any] = []
        run: list[SingleSend] = []
        try:
            for pending in batch:
                if pending.send is not None:
                    run.append(pending.send)
                    continue
                if run:
                    results.extend(await store_singles(conn, ctx, run))
                    run = []
                assert pending.op is not None
                results.append(await pending.op(conn))
            if run:
                results.extend(await store_singles(conn, ctx, run))
        except (*CONNECTION_ERRORS, asyncpg.exceptions.TransactionRollbackError):
            raise
        except Exception as exc:
            raise _OpFailed from exc
        return results

    async def _isolated_pass(
        self, conn: Conn, batch: list[_Pending]
    ) -> tuple[list[Any], list[BaseException | None]]:
        """Every operation in its own savepoint, so a failing one is undone alone: (results, errors)."""
        ctx = self._ctx
        results: list[Any] = []
        errors: list[BaseException | None] = []
        for pending in batch:
            await conn.execute("SAVEPOINT op")
            try:
                if pending.send is not None:
                    send = pending.send  # alone now: an unknown user is a NotFound, not a foreign-key error
                    await require_users(conn, [send.from_id, send.to_id])
                    result = (await store_singles(conn, ctx, [send]))[0]
                else:
                    assert pending.op is not None
                    result = await pending.op(conn)
            except (*CONNECTION_ERRORS, asyncpg.exceptions.TransactionRollbackError):
                raise
            except Exception as exc:  # the caller gets it; the rest of the batch goes on
                await conn.execute("ROLLBACK TO SAVEPOINT op")
                await conn.execute("RELEASE SAVEPOINT op")
                results.append(None)
                errors.append(exc)
            else:
                await conn.execute("RELEASE SAVEPOINT op")
                results.append(result)
                errors.append(None)
        return results, errors
