"""Storage layer (SQLite): the settings every operation sees, and input checks applied before any write."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from runtime.storage.at_rest import ContentCipher, message_aad
from runtime.storage.errors import InvalidArgument, KeyMismatch, NotFound, ValueTooLarge
from runtime.storage.models import Limits, Message
from runtime.storage.sqlite.write_cache import WriteCache

MAX_INT = 2**32 - 1  # ids, types and counters travel as uint32 on the wire


@dataclass
class OpContext:
    """Limits, cipher, clock and windows shared by the operation functions."""

    limits: Limits
    cipher: ContentCipher | None
    clock: Callable[[], float]
    dedup_window: int
    recall_window: int
    checkpoint_wanted: bool = False  # set by burn/recall so the writer truncates the WAL after commit
    cache: WriteCache | None = None  # the writer's write-behind state (None: every send hits the tables)
    edit_window: int = 900  # seconds during which a sender may edit a text message

    def now(self) -> int:
        """Server time in unix seconds."""
        return int(self.clock())

    def seal(self, kind: str, scope_id: int, msg_id: int, content: bytes) -> tuple[bytes, int]:
        """Content as stored, and the `encrypted` column: the sealing key's version (0: clear)."""
        if self.cipher is None:
            return content, 0
        return self.cipher.seal_versioned(content, message_aad(kind, scope_id, msg_id))

    def seal_token(self, token: str) -> tuple[str, bytes | None]:
        """A push token as stored: (the `token` column, the `sealed` column). With an at-rest key the column
        holds a keyed digest (`k:<hex>`, for uniqueness) and the token itself is sealed (spec: `at_rest:
        encrypted` on CID_LOGIN_REQ_DEVICETOKEN); without one, the token as is."""
        if self.cipher is None:
            return token, None
        index = "k:" + self.cipher.index(token)
        return index, self.cipher.seal(token.encode(), b"device_token:" + index.encode())

    def unseal_token(self, column: str, sealed: bytes | None) -> str:
        """The push token of a stored row."""
        if sealed is None:
            return column
        if self.cipher is None:
            raise KeyMismatch("the database holds sealed push tokens but no at-rest key was given")
        return self.cipher.open(bytes(sealed), b"device_token:" + column.encode()).decode()

    def unseal(self, kind: str, scope_id: int, msg_id: int, stored: bytes, encrypted: int) -> bytes:
        """Plain content of a stored row."""
        if not encrypted:
            return bytes(stored)
        if self.cipher is None:
            raise KeyMismatch("the database holds encrypted messages but no at-rest key was given")
        return self.cipher.open(bytes(stored), message_aad(kind, scope_id, msg_id), encrypted)


def check_text(field: str, value: str, limit: int) -> str:
    """A string that fits its column: characters within the limit and encodable as UTF-8."""
    if not isinstance(value, str):
        raise InvalidArgument(f"{field}: expected a string")
    if len(value) > limit:
        raise ValueTooLarge(field, len(value), limit)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"{field}: not valid Unicode text ({exc.reason})") from None
    return value


def check_bytes(field: str, value: bytes, limit: int, *, non_empty: bool = False) -> bytes:
    """Bytes within the limit (and non-empty where required)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"{field}: expected bytes")
    data = bytes(value)
    if len(data) > limit:
        raise ValueTooLarge(field, len(data), limit)
    if non_empty and not data:
        raise InvalidArgument(f"{field}: must not be empty")
    return data


def check_int(field: str, value: int, low: int = 0, high: int = MAX_INT) -> int:
    """An integer within [low, high] (uint32 by default)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"{field}: {value!r} is not an integer in [{low}, {high}]")
    return value


def check_ids(field: str, values: Sequence[int], limit: int) -> list[int]:
    """A list of positive ids within the length limit, duplicates removed, order kept."""
    if len(values) > limit:
        raise ValueTooLarge(field, len(values), limit)
    seen: dict[int, None] = {}
    for v in values:
        seen[check_int(field, v, 1)] = None
    return list(seen)


def require_users(conn: sqlite3.Connection, user_ids: Sequence[int]) -> None:
    """NotFound unless every id names an existing user."""
    wanted = set(user_ids)
    if not wanted:
        return
    marks = ",".join("?" * len(wanted))  # placeholders only; values are bound
    found = {r[0] for r in conn.execute(f"SELECT id FROM users WHERE id IN ({marks})", tuple(wanted))}
    missing = sorted(wanted - found)
    if missing:
        raise NotFound(f"unknown user ids {missing}")


def placeholders(n: int) -> str:
    """`?,?,...` for an IN list of n bound values."""
    return ",".join("?" * n)


def message_from_row(ctx: OpContext, kind: str, scope_id: int, row: sqlite3.Row) -> Message:
    """Build a Message from a row with msg_id, from_id, created, msg_type, content, encrypted[, burn]."""
    keys = row.keys()
    return Message(
        msg_id=row["msg_id"],
        from_user_id=row["from_id"],
        created=row["created"],
        msg_type=row["msg_type"],
        content=ctx.unseal(kind, scope_id, row["msg_id"], row["content"], row["encrypted"]),
        burn=bool(row["burn"]) if "burn" in keys else False,
    )
