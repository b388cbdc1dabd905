"""Storage layer (SQLite): write-behind state of the 1:1 send path, owned by the group-commit writer thread.

A 1:1 send used to run four statements (pair counter upsert, message insert, session touch, and dedup when
keyed). Under the single writer, the pair counters and the session touches can live in memory: a send takes
its msg_id from the cached counter and queues its rows; `flush` writes every queued row with one
`executemany` per statement, inside the same transaction, before COMMIT. So an acknowledged message is still
durable (the futures resolve after COMMIT), but a batch of N sends costs three statements, not 3N.

The cache is only a copy of committed (or about-to-commit) rows, and it is dropped whenever it could be
wrong: on rollback, when another connection committed (`PRAGMA data_version` changed, e.g. `ttgen admin`),
and after any other kind of write operation ran (it may have touched pairs or sessions). Operations that do
not know about the cache see the queued rows, because `flush` runs before each of them.
"""

from __future__ import annotations

import sqlite3
from itertools import chain

# The same statements as the uncached path (runtime.storage.sqlite.messages), run once per batch. Messages go
# in as multi-row INSERTs of 2**k rows (64 down to 1): one sqlite3_step per statement instead of one per row
# (executemany), a fixed handful of cached statements, and at most 64 x 10 bound values.
_INSERT_MESSAGES_HEAD = (
    "INSERT INTO messages "
    "(pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, token) VALUES "
)
_MESSAGE_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_CHUNKS = tuple(
    (n, _INSERT_MESSAGES_HEAD + ", ".join([_MESSAGE_VALUES] * n)) for n in (64, 32, 16, 8, 4, 2, 1)
)
_UPDATE_PAIRS = "UPDATE pairs SET last_msg_id = ? WHERE id = ?"
_TOUCH_BOTH = (
    "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
    "VALUES (?, 1, ?, 0, 0, ?, ?), (?, 1, ?, 0, 0, ?, ?) "
    "ON CONFLICT DO UPDATE SET status = 0, updated = excluded.updated "
    "WHERE sessions.status != 0 OR sessions.updated != excluded.updated"
)
# pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, token (0: none)
MessageRow = tuple[int, int, int, int, int, bytes | bytearray, int, int, int, int]


class WriteCache:
    """Pair counters, session-touch times and the rows queued by cached sends (writer thread only)."""

    __slots__ = ("_data_version", "enabled", "messages", "pairs", "pairs_dirty", "touched", "touches")

    def __init__(self) -> None:
        self.enabled = True  # off while the writer replays a failed batch operation by operation
        self.pairs: dict[tuple[int, int], list[int]] = {}  # (small id, big id) -> [pair id, last msg_id]
        self.pairs_dirty: dict[int, list[int]] = {}  # pair id -> the cached entry to write back
        self.touched: dict[tuple[int, int], int] = {}  # (small id, big id) -> second of the last touch
        self.messages: list[MessageRow] = []
        self.touches: list[tuple[int, ...]] = []
        self._data_version: int | None = None

    @property
    def pending(self) -> bool:
        """Whether queued rows wait for `flush`."""
        return bool(self.messages or self.touches or self.pairs_dirty)

    def begin(self, conn: sqlite3.Connection) -> None:
        """At the start of a batch: drop everything if another connection committed since the last batch."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._data_version = version
            self.reset()

    def reset(self) -> None:
        """Forget all cached and queued state (after a rollback, or when it may be stale)."""
        self.pairs.clear()
        self.pairs_dirty.clear()
        self.touched.clear()
        self.messages.clear()
        self.touches.clear()

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the queued rows (inside the open transaction)."""
        if self.messages:
            _insert_messages(conn, self.messages)
            self.messages.clear()
        if self.pairs_dirty:
            conn.executemany(_UPDATE_PAIRS, [(e[1], pid) for pid, e in self.pairs_dirty.items()])
            self.pairs_dirty.clear()
        if self.touches:
            conn.executemany(_TOUCH_BOTH, self.touches)
            self.touches.clear()


def _insert_messages(conn: sqlite3.Connection, rows: list[MessageRow]) -> None:
    """Insert the rows in order, in as few multi-row statements as the fixed chunk sizes allow."""
    start, left = 0, len(rows)
    for size, sql in _INSERT_CHUNKS:
        while left >= size:
            conn.execute(sql, list(chain.from_iterable(rows[start : start + size])))
            start += size
            left -= size
