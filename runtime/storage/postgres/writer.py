"""Storage layer (PostgreSQL): the group-commit writer, one asyncio task owning the write connection.

Callers queue operations (async functions of a connection) and 1:1 sends. The task takes everything queued
(up to `max_batch`), runs it in one transaction and commits once; only then are the callers' futures and
callbacks settled, so an acknowledged write is durable and one WAL flush serves the whole batch. Runs of
consecutive first sends are stored in bulk (`messages.store_singles`). If an operation raises, the
transaction is rolled back and the batch replayed with a savepoint per operation, so the failing one is undone
alone. A deadlock or serialization failure between writers (rare: counters are locked in a fixed order)
replays the whole batch. When the server cannot be reached, the batch fails with StorageUnavailable (nothing
of it was acked) and the next batch connects again.
"""

from __future__ import annotations

import asyncio
import collections
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


class PgWriter:
    """The single writer of one storage instance: a task that batches queued work into one transaction."""

    def __init__(
        self, connect: Callable[[], Awaitable[Conn]], ctx: OpContext, conn: Conn, max_batch: int = 1024
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._connect = connect
        self._ctx = ctx
        self._conn: Conn | None = conn
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
        """Finish every queued operation, then stop the task and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            conn, self._conn = self._conn, None
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
            n = min(len(queue), self.max_batch)
            batch = [queue.popleft() for _ in range(n)]
            try:
                await self._run_batch(batch)
            except Exception as exc:  # a bug: fail the batch rather than leave its callers waiting forever
                _log.exception("postgres writer: batch failed unexpectedly")
                self._drop_connection()
                for pending in batch:
                    _settle(pending, None, exc)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn

    async def _run_batch(self, batch: list[_Pending]) -> None:
        last: BaseException | None = None
        for _attempt in range(_RETRIES):
            stage = "connect"
            try:
                conn = await self._connection()
                stage = "begin"
                await conn.execute("BEGIN")
                stage = "run"
                results, errors = await self._in_transaction(conn, batch)
                stage = "commit"
                await conn.execute("COMMIT")
            except asyncpg.exceptions.TransactionRollbackError as exc:  # deadlock: replay the whole batch
                last = exc
                await self._rollback()
                continue
            except CONNECTION_ERRORS as exc:
                self._drop_connection()
                if stage == "begin" and last is None:  # a connection that died while idle: nothing sent
                    last = exc
                    continue
                for pending in batch:
                    _settle(pending, None, unavailable(exc))
                return
            self.batches += 1
            self.operations += len(batch)
            for pending, result, error in zip(batch, results, errors, strict=True):
                _settle(pending, result, error)
            return
        error = StorageError(f"gave up after {_RETRIES} attempts: {last}")
        for pending in batch:
            _settle(pending, None, error)

    async def _rollback(self) -> None:
        if self._conn is None:
            return
        try:
            await self._conn.execute("ROLLBACK")
        except CONNECTION_ERRORS:
            self._drop_connection()

    async def _in_transaction(
        self, conn: Conn, batch: list[_Pending]
    ) -> tuple[list[Any], list[BaseException | None]]:
        try:
            return await self._fast_pass(conn, batch), [None] * len(batch)
        except _OpFailed:
            await conn.execute("ROLLBACK")
            await conn.execute("BEGIN")
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
