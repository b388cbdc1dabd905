"""Storage layer (SQLite): storing, reading, read-acking, burning and recalling messages (sync operations).

Kinds: "s" rows live in `messages` keyed by (pair id, msg_id); "g" rows in `group_messages` keyed by
(group id, msg_id). Message content is stored only there: previews are read from these rows, never copied.

A row may carry msg's request token (`token`, 0 for none): a send flagged as a resend first looks for a row of
the same sender with that token (`find_token`) and answers with it, so a store whose answer was lost (even
with the biz process that stored it) is not stored twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from runtime.storage.errors import (
    AccessDenied,
    EditWindowExpired,
    InvalidArgument,
    NotFound,
    RecallWindowExpired,
)
from runtime.storage.models import Message, ReadResult, SendResult, SessionType, Tombstone
from runtime.storage.sqlite.context import (
    MAX_INT,
    OpContext,
    check_bytes,
    check_ids,
    check_int,
    message_from_row,
    placeholders,
    require_users,
)

_SINGLE = int(SessionType.SINGLE)
TOKEN_MIN, TOKEN_MAX = -(2**63), 2**63 - 1  # a request token is a signed 64-bit int (0: none)
TOKEN_SCAN_ROWS = 1024  # newest rows of a conversation searched for a resend's token
_SINGLE_COLS = "msg_id, from_id, created, msg_type, content, encrypted, burn"
_GROUP_COLS = "msg_id, from_id, created, msg_type, content, encrypted"


def pair_id(conn: sqlite3.Connection, a: int, b: int) -> tuple[int, int] | None:
    """(pair id, last msg_id) of two users, or None if they never exchanged a message."""
    row = conn.execute(
        "SELECT id, last_msg_id FROM pairs WHERE small_id = ? AND big_id = ?", (min(a, b), max(a, b))
    ).fetchone()
    return (row[0], row[1]) if row else None


def _dedup_hit(
    conn: sqlite3.Connection, ctx: OpContext, sender: int, stype: int, sid: int, key: bytes | None
) -> SendResult | None:
    if key is None:
        return None
    row = conn.execute(
        "SELECT msg_id, created FROM dedup WHERE sender_id = ? AND session_type = ? AND session_id = ? "
        "AND dedup_key = ? AND created >= ?",
        (sender, stype, sid, key, ctx.now() - ctx.dedup_window),
    ).fetchone()
    return SendResult(row[0], row[1], duplicate=True) if row else None


def _dedup_record(
    conn: sqlite3.Connection, sender: int, stype: int, sid: int, key: bytes | None, msg_id: int, now: int
) -> None:
    if key is not None:
        conn.execute(
            "INSERT INTO dedup (sender_id, session_type, session_id, dedup_key, msg_id, created) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO UPDATE SET msg_id = excluded.msg_id, created = excluded.created",
            (sender, stype, sid, key, msg_id, now),
        )


_FIND_TOKEN = {
    kind: f"SELECT msg_id, created FROM (SELECT msg_id, created, from_id, token FROM {table} "
    f"WHERE {column} = ? ORDER BY msg_id DESC LIMIT ?) "
    "WHERE from_id = ? AND token = ? AND created >= ? LIMIT 1"
    for kind, table, column in (("s", "messages", "pair_id"), ("g", "group_messages", "group_id"))
}


def find_token(
    conn: sqlite3.Connection, ctx: OpContext, kind: str, scope: int, from_id: int, token: int
) -> SendResult | None:
    """The message `from_id` stored with this request token in a conversation (kind "s": pair id, "g": group
    id) within the dedup window, as a duplicate SendResult; None if there is none. Only the conversation's
    newest TOKEN_SCAN_ROWS rows are searched, newest first, down the (scope, msg_id) index: the token has no
    index of its own (it would cost every insert), and a resend follows its first copy within seconds."""
    if not token:
        return None
    row = conn.execute(
        _FIND_TOKEN[kind], (scope, TOKEN_SCAN_ROWS, from_id, token, ctx.now() - ctx.dedup_window)
    ).fetchone()
    return SendResult(row[0], row[1], duplicate=True) if row else None


def check_token(token: int) -> int:
    """A request token: a signed 64-bit int (0: none)."""
    return check_int("token", token, TOKEN_MIN, TOKEN_MAX)


def prune_dedup(conn: sqlite3.Connection, ctx: OpContext) -> int:
    """Forget dedup keys older than the window; returns how many were dropped."""
    return conn.execute("DELETE FROM dedup WHERE created < ?", (ctx.now() - ctx.dedup_window,)).rowcount


def _touch_session(conn: sqlite3.Connection, user: int, stype: int, peer: int, now: int) -> None:
    conn.execute(
        "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES (?, ?, ?, 0, 0, ?, ?) ON CONFLICT DO UPDATE SET status = 0, updated = excluded.updated",
        (user, stype, peer, now, now),
    )


def _touch_both(conn: sqlite3.Connection, a: int, b: int, now: int) -> None:
    """Touch both sides' 1:1 sessions in one statement (TeamTalk overwrote the sender's, never the peer's)."""
    conn.execute(
        "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES (?, 1, ?, 0, 0, ?, ?), (?, 1, ?, 0, 0, ?, ?) "
        "ON CONFLICT DO UPDATE SET status = 0, updated = excluded.updated "
        "WHERE sessions.status != 0 OR sessions.updated != excluded.updated",  # skip rows already current
        (a, b, now, now, b, a, now, now),
    )


def _next_in_pair(
    conn: sqlite3.Connection, from_id: int, to_id: int, small: int, big: int, now: int
) -> tuple[int, int]:
    """(pair id, next msg_id): creates the pair on its first message, else increments its counter."""
    try:
        row = conn.execute(
            "INSERT INTO pairs (small_id, big_id, last_msg_id, created) VALUES (?, ?, 1, ?) "
            "ON CONFLICT (small_id, big_id) DO UPDATE SET last_msg_id = last_msg_id + 1 "
            "RETURNING id, last_msg_id",
            (small, big, now),
        ).fetchone()
    except sqlite3.IntegrityError:  # the pair's foreign keys: one of the users does not exist
        require_users(conn, [from_id, to_id])
        raise
    return int(row[0]), int(row[1])


def resend_single_op(
    ctx: OpContext,
    from_id: int,
    to_id: int,
    msg_type: int,
    content: bytes,
    dedup_key: bytes | None,
    burn: bool,
    token: int,
    conn: sqlite3.Connection,
) -> SendResult:
    """`send_single_op` for a request msg sent again after its link to biz dropped: if its first copy was
    stored (a row of this sender with this token: still queued in the write cache, or in the table), answer
    with that message, flagged duplicate, instead of storing it twice. It runs on the writer, after every
    operation queued before it, so a first copy still waiting for its commit is found too."""
    if token and from_id != to_id:
        check_token(token)
        cache = ctx.cache
        if cache is not None and cache.enabled:
            for row in reversed(cache.messages):
                if row[9] == token and row[2] == from_id and row[3] == to_id:
                    return SendResult(row[1], row[8], duplicate=True)
        pair = pair_id(conn, from_id, to_id)
        hit = None if pair is None else find_token(conn, ctx, "s", pair[0], from_id, token)
        if hit is not None:
            return hit
    return send_single_op(ctx, from_id, to_id, msg_type, content, dedup_key, burn, token, conn)


def send_single_op(
    ctx: OpContext,
    from_id: int,
    to_id: int,
    msg_type: int,
    content: bytes,
    dedup_key: bytes | None,
    burn: bool,
    token: int,
    conn: sqlite3.Connection,
) -> SendResult:
    """Store a 1:1 message; its msg_id comes from the pair counter in the same transaction. The connection
    comes last: `functools.partial(send_single_op, ctx, ...)` is a writer operation, cheaper to make and to
    call than a closure (this runs once per stored 1:1 message).

    The common input (exact bytes and ints within their limits) is accepted inline; anything else goes
    through the same checks (and errors) as every other operation."""
    if not (type(msg_type) is int and 0 <= msg_type <= MAX_INT):
        check_int("msg_type", msg_type)
    if not (type(token) is int and -0x8000_0000_0000_0000 <= token <= 0x7FFF_FFFF_FFFF_FFFF):  # TOKEN_MIN/MAX
        check_token(token)
    limits = ctx.limits
    if type(content) is bytes and 0 < len(content) <= limits.max_content:
        data = content
    else:
        data = check_bytes("content", content, limits.max_content, non_empty=True)
    key = dedup_key
    if key is not None:
        if not (type(key) is bytes and len(key) <= limits.max_dedup_key):
            key = check_bytes("dedup_key", key, limits.max_dedup_key)
        if from_id == to_id:
            raise InvalidArgument("a single-chat message to oneself is refused")
        hit = _dedup_hit(conn, ctx, from_id, _SINGLE, to_id, key)
        if hit:
            return hit
    elif from_id == to_id:
        raise InvalidArgument("a single-chat message to oneself is refused")
    now = int(ctx.clock())
    small, big = (from_id, to_id) if from_id < to_id else (to_id, from_id)
    cache = ctx.cache
    cipher = ctx.cipher
    if cache is not None and cache.enabled:
        # Write-behind (runtime.storage.sqlite.write_cache): the counter is taken in memory and the rows are
        # written by the writer's flush, in this same transaction, before COMMIT.
        pair = (small, big)
        entry = cache.pairs.get(pair)
        if entry is None:
            pid, msg_id = _next_in_pair(conn, from_id, to_id, small, big, now)
            cache.pairs[pair] = [pid, msg_id]
        else:
            entry[1] += 1
            pid, msg_id = entry
            cache.pairs_dirty[pid] = entry
        # The content is queued as a bytearray: sqlite3 binds one as a BLOB at once, while a bytes parameter
        # first goes through the adapter protocol (a failing attribute lookup, about 1 us per row on
        # CPython 3.11). The stored value is the same BLOB.
        if cipher is None:
            row = (pid, msg_id, from_id, to_id, msg_type, bytearray(data), 0, int(burn), now, token)
        else:  # sealed as ctx.seal("s", pid, msg_id, data) would, straight into a bytearray
            sealed, version = cipher.seal_row(b"s", pid, msg_id, data)
            row = (pid, msg_id, from_id, to_id, msg_type, sealed, version, int(burn), now, token)
        cache.messages.append(row)
        if cache.touched.get(pair) != now:
            cache.touched[pair] = now
            cache.touches.append((from_id, to_id, now, now, to_id, from_id, now, now))
        if key is not None:
            _dedup_record(conn, from_id, _SINGLE, to_id, key, msg_id, now)
        return SendResult(msg_id, now)
    pid, msg_id = _next_in_pair(conn, from_id, to_id, small, big, now)
    stored, encrypted = ctx.seal("s", pid, msg_id, data)
    conn.execute(
        "INSERT INTO messages "
        "(pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, token) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (pid, msg_id, from_id, to_id, msg_type, stored, encrypted, int(burn), now, token),
    )
    _touch_both(conn, from_id, to_id, now)
    _dedup_record(conn, from_id, _SINGLE, to_id, key, msg_id, now)
    return SendResult(msg_id, now)


def member_floor(conn: sqlite3.Connection, user_id: int, group_id: int) -> tuple[int, int]:
    """(visible_from, read_msg_id) of an active member; AccessDenied if not one, NotFound if no group."""
    row = conn.execute(
        "SELECT m.visible_from, m.read_msg_id, m.status FROM groups g LEFT JOIN group_members m "
        "ON m.group_id = g.id AND m.user_id = ? WHERE g.id = ? AND g.status = 0",
        (user_id, group_id),
    ).fetchone()
    if row is None:
        raise NotFound(f"group {group_id}")
    if row[2] is None or row[2] != 0:
        raise AccessDenied(f"user {user_id} is not a member of group {group_id}")
    return row[0], row[1]


def send_group(
    conn: sqlite3.Connection,
    ctx: OpContext,
    from_id: int,
    group_id: int,
    msg_type: int,
    content: bytes,
    dedup_key: bytes | None,
    token: int = 0,
    resend: bool = False,
) -> SendResult:
    """Store a group message from a current member; the msg_id comes from the group counter. A `resend`
    whose token a row of this sender in the group carries is answered with that message (duplicate)."""
    check_int("msg_type", msg_type)
    check_token(token)
    data = check_bytes("content", content, ctx.limits.max_content, non_empty=True)
    key = None if dedup_key is None else check_bytes("dedup_key", dedup_key, ctx.limits.max_dedup_key)
    member_floor(conn, from_id, group_id)
    hit = _dedup_hit(conn, ctx, from_id, int(SessionType.GROUP), group_id, key)
    if hit:
        return hit
    if resend:
        hit = find_token(conn, ctx, "g", group_id, from_id, token)
        if hit:
            return hit
    now = ctx.now()
    (msg_id,) = conn.execute(
        "UPDATE groups SET last_msg_id = last_msg_id + 1, last_chated = ? WHERE id = ? RETURNING last_msg_id",
        (now, group_id),
    ).fetchone()
    stored, encrypted = ctx.seal("g", group_id, msg_id, data)
    conn.execute(
        "INSERT INTO group_messages "
        "(group_id, msg_id, from_id, msg_type, content, encrypted, created, token) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (group_id, msg_id, from_id, msg_type, stored, encrypted, now, token),
    )
    # Sending reads the group (TeamTalk copies the counter into the sender's snapshot).
    conn.execute(
        "UPDATE group_members SET read_msg_id = ? WHERE group_id = ? AND user_id = ?",
        (msg_id, group_id, from_id),
    )
    _touch_session(conn, from_id, int(SessionType.GROUP), group_id, now)
    _dedup_record(conn, from_id, int(SessionType.GROUP), group_id, key, msg_id, now)
    return SendResult(msg_id, now)


def _scope(conn: sqlite3.Connection, user_id: int, stype: SessionType, sid: int) -> tuple[str, int, int, int]:
    """(kind, scope id, visible floor, last msg_id) after the authorization check."""
    if stype == SessionType.SINGLE:
        pair = pair_id(conn, user_id, sid)
        if pair is None or user_id == sid:
            return "s", 0, 0, 0
        return "s", pair[0], 0, pair[1]
    if stype == SessionType.GROUP:
        floor, _ = member_floor(conn, user_id, sid)
        last = conn.execute("SELECT last_msg_id FROM groups WHERE id = ?", (sid,)).fetchone()[0]
        return "g", sid, floor, int(last)
    raise InvalidArgument(f"unknown session type {stype!r}")


def _select(kind: str) -> str:
    if kind == "s":
        return f"SELECT {_SINGLE_COLS} FROM messages WHERE pair_id = ?"
    return f"SELECT {_GROUP_COLS} FROM group_messages WHERE group_id = ?"


def get_history(
    conn: sqlite3.Connection,
    ctx: OpContext,
    user_id: int,
    stype: SessionType,
    sid: int,
    begin: int,
    count: int,
) -> list[Message]:
    """Newest-first page of messages with msg_id <= begin (0 = newest) the user may see."""
    check_int("msg_id_begin", begin)
    check_int("count", count)
    kind, scope, floor, _ = _scope(conn, user_id, stype, sid)
    if scope == 0:
        return []
    top = begin if begin else 2**63 - 1
    rows = conn.execute(
        _select(kind) + " AND msg_id <= ? AND msg_id > ? ORDER BY msg_id DESC LIMIT ?",
        (scope, top, floor, min(count, ctx.limits.max_page)),
    ).fetchall()
    return [message_from_row(ctx, kind, scope, r) for r in rows]


def get_by_ids(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, stype: SessionType, sid: int, ids: Sequence[int]
) -> list[Message]:
    """The visible messages among the ids, ascending."""
    wanted = check_ids("msg_ids", ids, ctx.limits.max_page)
    kind, scope, floor, _ = _scope(conn, user_id, stype, sid)
    if scope == 0 or not wanted:
        return []
    rows = conn.execute(
        _select(kind) + f" AND msg_id > ? AND msg_id IN ({placeholders(len(wanted))}) ORDER BY msg_id",
        (scope, floor, *wanted),
    ).fetchall()
    return [message_from_row(ctx, kind, scope, r) for r in rows]


def latest_msg_id(conn: sqlite3.Connection, user_id: int, stype: SessionType, sid: int) -> int:
    """The session's counter (0 if nothing was sent)."""
    return _scope(conn, user_id, stype, sid)[3]


def latest_message(
    conn: sqlite3.Connection, ctx: OpContext, kind: str, scope: int, floor: int
) -> Message | None:
    """The newest visible message of a session, read from the message row itself."""
    row = conn.execute(
        _select(kind) + " AND msg_id > ? ORDER BY msg_id DESC LIMIT 1", (scope, floor)
    ).fetchone()
    return message_from_row(ctx, kind, scope, row) if row else None


def mark_read(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, stype: SessionType, sid: int, up_to: int
) -> ReadResult:
    """Advance the read position and destroy burn-after-reading messages the user has now read."""
    check_int("msg_id", up_to)
    kind, scope, _, last = _scope(conn, user_id, stype, sid)
    target = min(up_to, last) if up_to else last
    if kind == "g":
        conn.execute(
            "UPDATE group_members SET read_msg_id = max(read_msg_id, ?) WHERE group_id = ? AND user_id = ?",
            (target, sid, user_id),
        )
        return ReadResult(target)
    if scope == 0:
        return ReadResult(0)
    (read,) = conn.execute(
        "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES (?, 1, ?, 0, ?, ?, ?) "
        "ON CONFLICT DO UPDATE SET read_msg_id = max(read_msg_id, excluded.read_msg_id) "
        "RETURNING read_msg_id",
        (user_id, sid, target, ctx.now(), ctx.now()),
    ).fetchone()
    gone = conn.execute(
        "DELETE FROM messages WHERE pair_id = ? AND to_id = ? AND burn = 1 AND msg_id <= ? "
        "RETURNING msg_id, from_id, created",
        (scope, user_id, read),
    ).fetchall()
    burned = [r[0] for r in gone]
    if gone:
        # Tombstones (content-free, for audit): the reader burned them; the session as the reader sees it.
        conn.executemany(
            "INSERT INTO tombstones "
            "(session_type, session_id, msg_id, from_id, action, actor_id, sent, removed) "
            "VALUES (1, ?, ?, ?, 'burn', ?, ?, ?)",
            [(sid, mid, sender, user_id, sent, ctx.now()) for mid, sender, sent in gone],
        )
    if burned:
        _forget_dedup(conn, sid, int(SessionType.SINGLE), user_id, burned)
        ctx.checkpoint_wanted = True
    return ReadResult(read, sorted(burned))


def _forget_dedup(
    conn: sqlite3.Connection, sender: int, stype: int, sid: int, msg_ids: Sequence[int]
) -> None:
    conn.execute(
        f"DELETE FROM dedup WHERE sender_id = ? AND session_type = ? AND session_id = ? "
        f"AND msg_id IN ({placeholders(len(msg_ids))})",
        (sender, stype, sid, *msg_ids),
    )


def recall(
    conn: sqlite3.Connection, ctx: OpContext, user_id: int, stype: SessionType, sid: int, msg_id: int
) -> None:
    """Delete the sender's own message within the recall window."""
    check_int("msg_id", msg_id, 1)
    kind, scope, _, _ = _scope(conn, user_id, stype, sid)
    table, column = ("messages", "pair_id") if kind == "s" else ("group_messages", "group_id")
    row = conn.execute(
        f"SELECT from_id, created FROM {table} WHERE {column} = ? AND msg_id = ?", (scope, msg_id)
    ).fetchone()
    if row is None:
        raise NotFound(f"message {msg_id}")
    if row[0] != user_id:
        raise AccessDenied("only the sender may recall a message")
    if ctx.now() - row[1] > ctx.recall_window:
        raise RecallWindowExpired(f"message {msg_id} is older than the {ctx.recall_window} s recall window")
    conn.execute(f"DELETE FROM {table} WHERE {column} = ? AND msg_id = ?", (scope, msg_id))
    conn.execute(
        "INSERT INTO tombstones (session_type, session_id, msg_id, from_id, action, actor_id, sent, removed) "
        "VALUES (?, ?, ?, ?, 'recall', ?, ?, ?)",
        (int(stype), sid, msg_id, row[0], user_id, row[1], ctx.now()),
    )
    _forget_dedup(conn, user_id, int(stype), sid, [msg_id])
    ctx.checkpoint_wanted = True


TEXT_TYPES = (0x01, 0x11)  # MSG_TYPE_SINGLE_TEXT, MSG_TYPE_GROUP_TEXT


def check_editable(ctx: OpContext, row: Sequence[Any] | None, user_id: int, msg_id: int) -> int:
    """The time of an edit of the message `row` (from_id, created, msg_type, burn; None: no such message),
    refused unless `user_id` sent it, it is plain text (not burn-after-reading) and younger than the edit
    window (both backends)."""
    if row is None:
        raise NotFound(f"message {msg_id}")
    if row[0] != user_id:
        raise AccessDenied("only the sender may edit a message")
    if row[2] not in TEXT_TYPES or row[3]:
        raise InvalidArgument("only a text message (not burn-after-reading) may be edited")
    now = ctx.now()
    if now - row[1] > ctx.edit_window:
        raise EditWindowExpired(f"message {msg_id} is older than the {ctx.edit_window} s edit window")
    return now


def edit(
    conn: sqlite3.Connection,
    ctx: OpContext,
    user_id: int,
    stype: SessionType,
    sid: int,
    msg_id: int,
    content: bytes,
) -> int:
    """Replace the text of the sender's own text message within the edit window; returns the edit time."""
    check_int("msg_id", msg_id, 1)
    data = check_bytes("content", content, ctx.limits.max_content)
    if not data:
        raise InvalidArgument("content: the new text must not be empty")
    kind, scope, _, _ = _scope(conn, user_id, stype, sid)
    table, column = ("messages", "pair_id") if kind == "s" else ("group_messages", "group_id")
    burn = ", burn" if kind == "s" else ", 0"
    row = conn.execute(
        f"SELECT from_id, created, msg_type{burn} FROM {table} WHERE {column} = ? AND msg_id = ?",
        (scope, msg_id),
    ).fetchone()
    now = check_editable(ctx, row, user_id, msg_id)
    stored, encrypted = ctx.seal(kind, scope, msg_id, data)
    conn.execute(
        f"UPDATE {table} SET content = ?, encrypted = ? WHERE {column} = ? AND msg_id = ?",
        (stored, encrypted, scope, msg_id),
    )
    ctx.checkpoint_wanted = True  # the old text must not linger in the WAL
    return now


def list_tombstones(conn: sqlite3.Connection, since: int, limit: int) -> list[Tombstone]:
    """Tombstones removed at or after `since` (unix seconds), oldest first."""
    rows = conn.execute(
        "SELECT session_type, session_id, msg_id, from_id, action, actor_id, sent, removed FROM tombstones "
        "WHERE removed >= ? ORDER BY id LIMIT ?",
        (since, limit),
    ).fetchall()
    return [Tombstone(*r) for r in rows]


_SEALED = (("messages", "s", "pair_id"), ("group_messages", "g", "group_id"))


def reseal(conn: sqlite3.Connection, ctx: OpContext, limit: int) -> int:
    """Re-seal up to `limit` rows sealed with an older key version under the current one; returns how many
    (0: none left). A row another writer changed meanwhile is skipped by its `encrypted` check."""
    cipher = ctx.cipher
    if cipher is None:
        return 0
    cipher.refresh()
    current = cipher.version
    done = 0
    for table, kind, scope in _SEALED:
        rows = conn.execute(
            f"SELECT {scope}, msg_id, content, encrypted FROM {table} "  # constant names, not values
            "WHERE encrypted NOT IN (0, ?) LIMIT ?",
            (current, limit - done),
        ).fetchall()
        for scope_id, msg_id, content, version in rows:
            plain = ctx.unseal(kind, scope_id, msg_id, content, version)
            sealed, now_version = ctx.seal(kind, scope_id, msg_id, plain)
            conn.execute(
                f"UPDATE {table} SET content = ?, encrypted = ? "
                f"WHERE {scope} = ? AND msg_id = ? AND encrypted = ?",
                (sealed, now_version, scope_id, msg_id, version),
            )
        done += len(rows)
        if done >= limit:
            break
    return done


def key_usage(conn: sqlite3.Connection) -> dict[int, int]:
    """Rows per `encrypted` value (0: clear, N: sealed with key version N), over both message tables."""
    usage: dict[int, int] = {}
    for table, _, _ in _SEALED:
        for version, count in conn.execute(f"SELECT encrypted, COUNT(*) FROM {table} GROUP BY encrypted"):
            usage[int(version)] = usage.get(int(version), 0) + int(count)
    return usage
