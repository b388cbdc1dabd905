"""Storage layer (SQLite): a small pool of read-only connections, each owned by one worker thread."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from runtime.storage.errors import StorageClosed

T = TypeVar("T")


def database_digest(path: Path) -> str:
    """SHA-256 over every row of every table, read in one read-only snapshot.

    Tests and the fuzz oracle compare it before and after refused input to prove nothing stored changed.
    """
    digest = hashlib.sha256()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        db.execute("BEGIN")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        for table in tables:
            digest.update(table.encode())
            # Table names come from sqlite_master, not from input; identifiers cannot be bound parameters.
            for text in sorted(repr(row) for row in db.execute(f'SELECT * FROM "{table}"')):
                digest.update(text.encode())
        db.execute("COMMIT")
    finally:
        db.close()
    return digest.hexdigest()


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """A connection with the pragmas every ttgen connection uses (WAL, foreign keys, busy timeout)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 10000")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    return conn


class ReaderPool:
    """Runs read functions on worker threads; each call sees one consistent snapshot (a read transaction)."""

    def __init__(self, path: Path, size: int) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix="ttgen-sqlite-read")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, read_only=True)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            return fn(conn)
        finally:
            conn.execute("COMMIT")

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run fn(connection) on a reader thread inside a read transaction."""
        if self._closed:
            raise StorageClosed("storage is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def close(self) -> None:
        """Wait for running reads, then close every connection."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
