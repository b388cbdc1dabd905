"""Storage layer (PostgreSQL): storing, reading, read-acking, burning and recalling messages (async ops).

Msg ids come from per-conversation counters (`pairs.last_msg_id`, `groups.last_msg_id`) incremented in the
transaction that stores the message: the counter's row lock is the only lock a send takes, so conversations
never wait for each other, and several biz processes can write one database at once. First 1:1 sends (the hot
path) are stored in bulk, a whole group commit in two statements: the counters of every pair in the batch
in one upsert (in pair order, so two writers never deadlock on them), then the rows in one insert with the
session touches (in user order) in the same statement. Sends that must look before they store (a client msg
id dedup key, a resend's token) lock their conversation's counter row first, so what another writer
committed in that conversation is visible to the look (READ COMMITTED takes a new snapshot per statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.storage.errors import (
    AccessDenied,
    InvalidArgument,
    NotFound,
    RecallWindowExpired,
)
from runtime.storage.models import Message, ReadResult, SendResult, SessionType, Tombstone
from runtime.storage.postgres.common import Conn, message_from_record, require_users
from runtime.storage.sqlite.context import MAX_INT, OpContext, check_bytes, check_ids, check_int
from runtime.storage.sqlite.messages import check_editable, check_token

_SINGLE = int(SessionType.SINGLE)
_GROUP = int(SessionType.GROUP)
_SINGLE_COLS = "msg_id, from_id, created, msg_type, content, encrypted, burn"
_GROUP_COLS = "msg_id, from_id, created, msg_type, content, encrypted"


@dataclass(slots=True)
class SingleSend:
    """A checked 1:1 send waiting for the writer."""

    from_id: int
    to_id: int
    msg_type: int
    content: bytes
    burn: bool
    token: int
    dedup_key: bytes | None = None
    resend: bool = False

    @property
    def bulk(self) -> bool:
        """Whether it can be stored in bulk (nothing to look up first)."""
        return self.dedup_key is None and not self.resend


def check_single(
    ctx: OpContext,
    from_id: int,
    to_id: int,
    msg_type: int,
    content: bytes,
    dedup_key: bytes | None,
    burn: bool,
    token: int,
    resend: bool,
) -> SingleSend:
    """The same checks, in the same order and with the same errors, as the SQLite backend's send."""
    check_int("msg_type", msg_type)
    check_token(token)
    data = check_bytes("content", content, ctx.limits.max_content, non_empty=True)
    key = None if dedup_key is None else check_bytes("dedup_key", dedup_key, ctx.limits.max_dedup_key)
    if from_id == to_id:
        raise InvalidArgument("a single-chat message to oneself is refused")
    check_int("from_id", from_id, 1)
    check_int("to_id", to_id, 1)
    return SingleSend(from_id, to_id, msg_type, data, bool(burn), token, key, bool(resend and token))


_BUMP_PAIRS = (
    "INSERT INTO pairs AS p (small_id, big_id, last_msg_id, created) "
    "SELECT s, b, n, $4 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS t (s, b, n) ORDER BY s, b "
    "ON CONFLICT (small_id, big_id) DO UPDATE SET last_msg_id = p.last_msg_id + excluded.last_msg_id "
    "RETURNING id, small_id, big_id, last_msg_id"
)
# The rows and both sides' session touches in one statement (one round trip): a data-modifying CTE runs
# whether or not the outer query reads it. Touches go in user order, so two writers never deadlock on them.
_INSERT_SINGLES = (
    "WITH s AS (INSERT INTO sessions AS s (user_id, session_type, peer_id, status, read_msg_id, created, "
    "updated) SELECT u, 1, p, 0, 0, $9, $9 FROM unnest($11::bigint[], $12::bigint[]) AS t (u, p) "
    "ORDER BY u, p ON CONFLICT (user_id, session_type, peer_id) DO UPDATE SET status = 0, "
    "updated = excluded.updated WHERE s.status <> 0 OR s.updated <> excluded.updated) "
    "INSERT INTO messages "
    "(pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, token) "
    "SELECT p, m, f, t, y, c, e, b, $9, k FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], "
    "$4::bigint[], $5::bigint[], $6::bytea[], $7::int[], $8::int[], $10::bigint[]) "
    "AS r (p, m, f, t, y, c, e, b, k) "
    "ON CONFLICT (pair_id, from_id, token) WHERE token <> 0 DO NOTHING RETURNING pair_id, msg_id"
)
_INSERT_SINGLE = (
    "INSERT INTO messages "
    "(pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, token) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
_TOUCH_SINGLES = (
    "INSERT INTO sessions AS s (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
    "SELECT u, 1, p, 0, 0, $3, $3 FROM unnest($1::bigint[], $2::bigint[]) AS t (u, p) ORDER BY u, p "
    "ON CONFLICT (user_id, session_type, peer_id) DO UPDATE SET status = 0, updated = excluded.updated "
    "WHERE s.status <> 0 OR s.updated <> excluded.updated"
)
_FIND_TOKEN = {
    "s": "SELECT msg_id, created FROM messages WHERE pair_id = $1 AND from_id = $2 AND token = $3",
    "g": "SELECT msg_id, created FROM group_messages WHERE group_id = $1 AND from_id = $2 AND token = $3",
}


async def find_token(
    conn: Conn, ctx: OpContext, kind: str, scope: int, from_id: int, token: int
) -> tuple[SendResult | None, bool]:
    """(the message `from_id` stored with this token in the conversation within the dedup window, as a
    duplicate; whether a row with the token exists at all, in or out of the window). Down the token index."""
    if not token:
        return None, False
    row = await conn.fetchrow(_FIND_TOKEN[kind], scope, from_id, token)
    if row is None:
        return None, False
    if row[1] >= ctx.now() - ctx.dedup_window:
        return SendResult(row[0], row[1], duplicate=True), True
    return None, True


async def store_singles(conn: Conn, ctx: OpContext, sends: Sequence[SingleSend]) -> list[SendResult]:
    """Store checked first sends (no dedup key, no resend) in bulk; results in the order of `sends`."""
    now = ctx.now()
    counts: dict[tuple[int, int], int] = {}
    for s in sends:
        pair = (s.from_id, s.to_id) if s.from_id < s.to_id else (s.to_id, s.from_id)
        counts[pair] = counts.get(pair, 0) + 1
    rows = await conn.fetch(
        _BUMP_PAIRS, [p[0] for p in counts], [p[1] for p in counts], list(counts.values()), now
    )
    next_id: dict[tuple[int, int], list[int]] = {}  # pair -> [pair id, next msg id to hand out]
    for pid, small, big, last in rows:
        next_id[(small, big)] = [pid, last - counts[(small, big)] + 1]
    cipher = ctx.cipher
    cols: tuple[list[object], ...] = ([], [], [], [], [], [], [], [], [])
    pids, mids, froms, tos, types, contents, encs, burns, tokens = cols
    placed: list[tuple[int, int]] = []
    for s in sends:
        entry = next_id[(s.from_id, s.to_id) if s.from_id < s.to_id else (s.to_id, s.from_id)]
        pid, msg_id = entry
        entry[1] += 1
        placed.append((pid, msg_id))
        stored, encrypted = (s.content, 0) if cipher is None else ctx.seal("s", pid, msg_id, s.content)
        pids.append(pid)
        mids.append(msg_id)
        froms.append(s.from_id)
        tos.append(s.to_id)
        types.append(s.msg_type)
        contents.append(stored)
        encs.append(encrypted)
        burns.append(int(s.burn))
        tokens.append(s.token)
    users: set[tuple[int, int]] = set()
    for s in sends:
        users.add((s.from_id, s.to_id))
        users.add((s.to_id, s.from_id))
    touch = sorted(users)
    inserted = await conn.fetch(
        _INSERT_SINGLES, *cols[:8], now, tokens, [u for u, _ in touch], [p for _, p in touch]
    )
    results = [SendResult(msg_id, now) for _, msg_id in placed]
    if len(inserted) != len(sends):  # a token already stored in its conversation (another biz's resend)
        landed = {(r[0], r[1]) for r in inserted}
        for i, (s, where) in enumerate(zip(sends, placed, strict=True)):
            if where not in landed:
                results[i] = await _token_conflict(conn, ctx, s, where[0], where[1], now)
    return results


async def _token_conflict(
    conn: Conn, ctx: OpContext, s: SingleSend, pid: int, msg_id: int, now: int
) -> SendResult:
    """A send whose token its conversation already holds: within the dedup window it is that message (a
    copy stored by another writer); outside it the token is a coincidence, and the message is stored at the
    id it was given, without its token. (The id then handed out stays unused: a gap, as a recall leaves.)"""
    hit, _ = await find_token(conn, ctx, "s", pid, s.from_id, s.token)
    if hit is not None:
        return hit
    stored, encrypted = ctx.seal("s", pid, msg_id, s.content)
    await conn.execute(
        _INSERT_SINGLE, pid, msg_id, s.from_id, s.to_id, s.msg_type, stored, encrypted, int(s.burn), now, 0
    )
    return SendResult(msg_id, now)


async def _dedup_hit(
    conn: Conn, ctx: OpContext, sender: int, stype: int, sid: int, key: bytes | None
) -> SendResult | None:
    if key is None:
        return None
    row = await conn.fetchrow(
        "SELECT msg_id, created FROM dedup WHERE sender_id = $1 AND session_type = $2 AND session_id = $3 "
        "AND dedup_key = $4 AND created >= $5",
        sender,
        stype,
        sid,
        key,
        ctx.now() - ctx.dedup_window,
    )
    return SendResult(row[0], row[1], duplicate=True) if row else None


async def _dedup_record(
    conn: Conn, sender: int, stype: int, sid: int, key: bytes | None, msg_id: int, now: int
) -> None:
    if key is not None:
        await conn.execute(
            "INSERT INTO dedup (sender_id, session_type, session_id, dedup_key, msg_id, created) "
            "VALUES ($1, $2, $3, $4, $5, $6) "
            "ON CONFLICT (sender_id, session_type, session_id, dedup_key) "
            "DO UPDATE SET msg_id = excluded.msg_id, created = excluded.created",
            sender,
            stype,
            sid,
            key,
            msg_id,
            now,
        )


async def store_single_checked(conn: Conn, ctx: OpContext, s: SingleSend) -> SendResult:
    """Store a 1:1 send that looks first (dedup key, or a resend's token), under its pair's row lock."""
    now = ctx.now()
    small, big = (s.from_id, s.to_id) if s.from_id < s.to_id else (s.to_id, s.from_id)
    try:
        # Creates the pair, or takes its row lock without changing the counter: every other writer's send
        # in this conversation has committed (or waits for us) before we look.
        pid = await conn.fetchval(
            "INSERT INTO pairs AS p (small_id, big_id, last_msg_id, created) VALUES ($1, $2, 0, $3) "
            "ON CONFLICT (small_id, big_id) DO UPDATE SET last_msg_id = p.last_msg_id RETURNING id",
            small,
            big,
            now,
        )
    except Exception:
        await require_users(conn, [s.from_id, s.to_id])
        raise
    hit = await _dedup_hit(conn, ctx, s.from_id, _SINGLE, s.to_id, s.dedup_key)
    if hit:
        return hit
    token = s.token
    if s.resend:
        found, exists = await find_token(conn, ctx, "s", pid, s.from_id, token)
        if found is not None:
            return found
        if exists:  # an old row holds this token: store this one without it
            token = 0
    msg_id = await conn.fetchval(
        "UPDATE pairs SET last_msg_id = last_msg_id + 1 WHERE id = $1 RETURNING last_msg_id", pid
    )
    stored, encrypted = ctx.seal("s", pid, msg_id, s.content)
    inserted = await conn.fetchval(
        "INSERT INTO messages (pair_id, msg_id, from_id, to_id, msg_type, content, encrypted, burn, created, "
        "token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
        "ON CONFLICT (pair_id, from_id, token) WHERE token <> 0 DO NOTHING RETURNING 1",
        pid,
        msg_id,
        s.from_id,
        s.to_id,
        s.msg_type,
        stored,
        encrypted,
        int(s.burn),
        now,
        token,
    )
    result = SendResult(msg_id, now) if inserted else await _token_conflict(conn, ctx, s, pid, msg_id, now)
    touch = sorted([(s.from_id, s.to_id), (s.to_id, s.from_id)])
    await conn.execute(_TOUCH_SINGLES, [u for u, _ in touch], [p for _, p in touch], now)
    await _dedup_record(conn, s.from_id, _SINGLE, s.to_id, s.dedup_key, result.msg_id, now)
    return result


async def prune_dedup(conn: Conn, ctx: OpContext) -> int:
    """Forget dedup keys older than the window; returns how many were dropped."""
    status = await conn.execute("DELETE FROM dedup WHERE created < $1", ctx.now() - ctx.dedup_window)
    return int(status.split()[-1])


async def member_floor(conn: Conn, user_id: int, group_id: int, *, lock: bool = False) -> tuple[int, int]:
    """(visible_from, read_msg_id) of an active member; AccessDenied if not one, NotFound if no group.
    `lock` takes the group row's lock (the group's msg id counter) first."""
    if lock:
        found = await conn.fetchval("SELECT 1 FROM groups WHERE id = $1 AND status = 0 FOR UPDATE", group_id)
        if found is None:
            raise NotFound(f"group {group_id}")
    row = await conn.fetchrow(
        "SELECT m.visible_from, m.read_msg_id, m.status FROM groups g LEFT JOIN group_members m "
        "ON m.group_id = g.id AND m.user_id = $1 WHERE g.id = $2 AND g.status = 0",
        user_id,
        group_id,
    )
    if row is None:
        raise NotFound(f"group {group_id}")
    if row[2] is None or row[2] != 0:
        raise AccessDenied(f"user {user_id} is not a member of group {group_id}")
    return row[0], row[1]


async def send_group(
    conn: Conn,
    ctx: OpContext,
    from_id: int,
    group_id: int,
    msg_type: int,
    content: bytes,
    dedup_key: bytes | None,
    token: int = 0,
) -> SendResult:
    """Store a group message from a current member, under the group row's lock (its msg id counter). A
    first send and a resend are stored alike: the token is looked up either way (one index probe)."""
    check_int("msg_type", msg_type)
    check_token(token)
    data = check_bytes("content", content, ctx.limits.max_content, non_empty=True)
    key = None if dedup_key is None else check_bytes("dedup_key", dedup_key, ctx.limits.max_dedup_key)
    check_int("group_id", group_id)
    await member_floor(conn, from_id, group_id, lock=True)
    hit = await _dedup_hit(conn, ctx, from_id, _GROUP, group_id, key)
    if hit:
        return hit
    # Under the group's lock, a token found within the window is this request, stored by another writer
    # (its resend, or its first copy that committed late); found only outside it, a coincidence.
    found, exists = await find_token(conn, ctx, "g", group_id, from_id, token)
    if found is not None:
        return found
    if exists:
        token = 0
    now = ctx.now()
    msg_id = await conn.fetchval(
        "UPDATE groups SET last_msg_id = last_msg_id + 1, last_chated = $1 WHERE id = $2 "
        "RETURNING last_msg_id",
        now,
        group_id,
    )
    stored, encrypted = ctx.seal("g", group_id, msg_id, data)
    await conn.execute(
        "INSERT INTO group_messages "
        "(group_id, msg_id, from_id, msg_type, content, encrypted, created, token) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        group_id,
        msg_id,
        from_id,
        msg_type,
        stored,
        encrypted,
        now,
        token,
    )
    await conn.execute(
        "UPDATE group_members SET read_msg_id = $1 WHERE group_id = $2 AND user_id = $3",
        msg_id,
        group_id,
        from_id,
    )
    await conn.execute(
        "INSERT INTO sessions (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES ($1, 2, $2, 0, 0, $3, $3) ON CONFLICT (user_id, session_type, peer_id) "
        "DO UPDATE SET status = 0, updated = excluded.updated",
        from_id,
        group_id,
        now,
    )
    await _dedup_record(conn, from_id, _GROUP, group_id, key, msg_id, now)
    return SendResult(msg_id, now)


async def pair_of(conn: Conn, a: int, b: int) -> tuple[int, int] | None:
    """(pair id, last msg_id) of two users, or None if they never exchanged a message."""
    row = await conn.fetchrow(
        "SELECT id, last_msg_id FROM pairs WHERE small_id = $1 AND big_id = $2", min(a, b), max(a, b)
    )
    return (row[0], row[1]) if row else None


async def _scope(conn: Conn, user_id: int, stype: SessionType, sid: int) -> tuple[str, int, int, int]:
    """(kind, scope id, visible floor, last msg_id) after the authorization check."""
    check_int("session_id", sid, 0, 2**63 - 1)
    if stype == SessionType.SINGLE:
        pair = await pair_of(conn, user_id, sid)
        if pair is None or user_id == sid:
            return "s", 0, 0, 0
        return "s", pair[0], 0, pair[1]
    if stype == SessionType.GROUP:
        floor, _ = await member_floor(conn, user_id, sid)
        last = await conn.fetchval("SELECT last_msg_id FROM groups WHERE id = $1", sid)
        return "g", sid, floor, int(last)
    raise InvalidArgument(f"unknown session type {stype!r}")


def _select(kind: str) -> str:
    if kind == "s":
        return f"SELECT {_SINGLE_COLS} FROM messages WHERE pair_id = $1"
    return f"SELECT {_GROUP_COLS} FROM group_messages WHERE group_id = $1"


async def get_history(
    conn: Conn, ctx: OpContext, user_id: int, stype: SessionType, sid: int, begin: int, count: int
) -> list[Message]:
    """Newest-first page of messages with msg_id <= begin (0 = newest) the user may see."""
    check_int("msg_id_begin", begin)
    check_int("count", count)
    kind, scope, floor, _ = await _scope(conn, user_id, stype, sid)
    if scope == 0:
        return []
    top = begin if begin else 2**63 - 1
    rows = await conn.fetch(
        _select(kind) + " AND msg_id <= $2 AND msg_id > $3 ORDER BY msg_id DESC LIMIT $4",
        scope,
        top,
        floor,
        min(count, ctx.limits.max_page),
    )
    return [message_from_record(ctx, kind, scope, r) for r in rows]


async def get_by_ids(
    conn: Conn, ctx: OpContext, user_id: int, stype: SessionType, sid: int, ids: Sequence[int]
) -> list[Message]:
    """The visible messages among the ids, ascending."""
    wanted = check_ids("msg_ids", ids, ctx.limits.max_page)
    kind, scope, floor, _ = await _scope(conn, user_id, stype, sid)
    if scope == 0 or not wanted:
        return []
    rows = await conn.fetch(
        _select(kind) + " AND msg_id > $2 AND msg_id = ANY($3::bigint[]) ORDER BY msg_id",
        scope,
        floor,
        wanted,
    )
    return [message_from_record(ctx, kind, scope, r) for r in rows]


async def latest_msg_id(conn: Conn, user_id: int, stype: SessionType, sid: int) -> int:
    """The session's counter (0 if nothing was sent)."""
    return (await _scope(conn, user_id, stype, sid))[3]


async def latest_message(conn: Conn, ctx: OpContext, kind: str, scope: int, floor: int) -> Message | None:
    """The newest visible message of a session, read from the message row itself."""
    row = await conn.fetchrow(_select(kind) + " AND msg_id > $2 ORDER BY msg_id DESC LIMIT 1", scope, floor)
    return message_from_record(ctx, kind, scope, row) if row else None


async def mark_read(
    conn: Conn, ctx: OpContext, user_id: int, stype: SessionType, sid: int, up_to: int
) -> ReadResult:
    """Advance the read position and destroy burn-after-reading messages the user has now read."""
    check_int("msg_id", up_to)
    kind, scope, _, last = await _scope(conn, user_id, stype, sid)
    target = min(up_to, last) if up_to else last
    if kind == "g":
        await conn.execute(
            "UPDATE group_members SET read_msg_id = GREATEST(read_msg_id, $1) "
            "WHERE group_id = $2 AND user_id = $3",
            target,
            sid,
            user_id,
        )
        return ReadResult(target)
    if scope == 0:
        return ReadResult(0)
    now = ctx.now()
    read = await conn.fetchval(
        "INSERT INTO sessions AS s (user_id, session_type, peer_id, status, read_msg_id, created, updated) "
        "VALUES ($1, 1, $2, 0, $3, $4, $4) ON CONFLICT (user_id, session_type, peer_id) "
        "DO UPDATE SET read_msg_id = GREATEST(s.read_msg_id, excluded.read_msg_id) RETURNING read_msg_id",
        user_id,
        sid,
        target,
        now,
    )
    rows = await conn.fetch(
        "DELETE FROM messages WHERE pair_id = $1 AND to_id = $2 AND burn = 1 AND msg_id <= $3 "
        "RETURNING msg_id, from_id, created",
        scope,
        user_id,
        read,
    )
    burned = sorted(r[0] for r in rows)
    if rows:
        # Tombstones: the reader burned them (content-free, for audit).
        await conn.executemany(
            "INSERT INTO tombstones "
            "(session_type, session_id, msg_id, from_id, action, actor_id, sent, removed) "
            "VALUES (1, $1, $2, $3, 'burn', $4, $5, $6)",
            [(sid, r[0], r[1], user_id, r[2], now) for r in rows],
        )
    if burned:
        await _forget_dedup(conn, sid, _SINGLE, user_id, burned)
    return ReadResult(read, burned)


async def _forget_dedup(conn: Conn, sender: int, stype: int, sid: int, msg_ids: Sequence[int]) -> None:
    await conn.execute(
        "DELETE FROM dedup WHERE sender_id = $1 AND session_type = $2 AND session_id = $3 "
        "AND msg_id = ANY($4::bigint[])",
        sender,
        stype,
        sid,
        list(msg_ids),
    )


async def recall(conn: Conn, ctx: OpContext, user_id: int, stype: SessionType, sid: int, msg_id: int) -> None:
    """Delete the sender's own message within the recall window."""
    check_int("msg_id", msg_id, 1)
    kind, scope, _, _ = await _scope(conn, user_id, stype, sid)
    table, column = ("messages", "pair_id") if kind == "s" else ("group_messages", "group_id")
    row = await conn.fetchrow(
        f"SELECT from_id, created FROM {table} WHERE {column} = $1 AND msg_id = $2", scope, msg_id
    )
    if row is None:
        raise NotFound(f"message {msg_id}")
    if row[0] != user_id:
        raise AccessDenied("only the sender may recall a message")
    if ctx.now() - row[1] > ctx.recall_window:
        raise RecallWindowExpired(f"message {msg_id} is older than the {ctx.recall_window} s recall window")
    await conn.execute(f"DELETE FROM {table} WHERE {column} = $1 AND msg_id = $2", scope, msg_id)
    await conn.execute(
        "INSERT INTO tombstones (session_type, session_id, msg_id, from_id, action, actor_id, sent, removed) "
        "VALUES ($1, $2, $3, $4, 'recall', $5, $6, $7)",
        int(stype),
        sid,
        msg_id,
        row[0],
        user_id,
        row[1],
        ctx.now(),
    )
    await _forget_dedup(conn, user_id, int(stype), sid, [msg_id])




async def edit(
    conn: Conn, ctx: OpContext, user_id: int, stype: SessionType, sid: int, msg_id: int, content: bytes
) -> int:
    """Replace the text of the sender's own text message within the edit window; returns the edit time."""
    check_int("msg_id", msg_id, 1)
    data = check_bytes("content", content, ctx.limits.max_content)
    if not data:
        raise InvalidArgument("content: the new text must not be empty")
    kind, scope, _, _ = await _scope(conn, user_id, stype, sid)
    table, column = ("messages", "pair_id") if kind == "s" else ("group_messages", "group_id")
    burn = ", burn" if kind == "s" else ", 0"
    row = await conn.fetchrow(
        f"SELECT from_id, created, msg_type{burn} FROM {table} "
        f"WHERE {column} = $1 AND msg_id = $2 FOR UPDATE",
        scope,
        msg_id,
    )
    now = check_editable(ctx, row, user_id, msg_id)
    stored, encrypted = ctx.seal(kind, scope, msg_id, data)
    await conn.execute(
        f"UPDATE {table} SET content = $1, encrypted = $2 WHERE {column} = $3 AND msg_id = $4",
        stored,
        encrypted,
        scope,
        msg_id,
    )
    return now


async def list_tombstones(conn: Conn, since: int, limit: int) -> list[Tombstone]:
    """Tombstones removed at or after `since` (unix seconds), oldest first."""
    rows = await conn.fetch(
        "SELECT session_type, session_id, msg_id, from_id, action, actor_id, sent, removed FROM tombstones "
        "WHERE removed >= $1 ORDER BY id LIMIT $2",
        since,
        limit,
    )
    return [Tombstone(*r) for r in rows]


__all__ = ["MAX_INT", "SingleSend", "check_single", "send_group", "store_single_checked", "store_singles"]


_SEALED = (("messages", "s", "pair_id"), ("group_messages", "g", "group_id"))


async def reseal(conn: Conn, ctx: OpContext, limit: int) -> int:
    """Re-seal up to `limit` rows sealed with an older key version under the current one; returns how many
    (0: none left). A row another writer changed meanwhile is skipped by its `encrypted` check."""
    cipher = ctx.cipher
    if cipher is None:
        return 0
    cipher.refresh()
    current = cipher.version
    done = 0
    for table, kind, scope in _SEALED:
        rows = await conn.fetch(
            f"SELECT {scope}, msg_id, content, encrypted FROM {table} "  # constant names, not values
            "WHERE encrypted NOT IN (0, $1) LIMIT $2 FOR UPDATE SKIP LOCKED",
            current,
            limit - done,
        )
        for scope_id, msg_id, content, version in rows:
            plain = ctx.unseal(kind, scope_id, msg_id, content, version)
            sealed, now_version = ctx.seal(kind, scope_id, msg_id, plain)
            await conn.execute(
                f"UPDATE {table} SET content = $1, encrypted = $2 WHERE {scope} = $3 AND msg_id = $4 "
                "AND encrypted = $5",
                sealed,
                now_version,
                scope_id,
                msg_id,
                version,
            )
        done += len(rows)
        if done >= limit:
            break
    return done


async def key_usage(conn: Conn) -> dict[int, int]:
    """Rows per `encrypted` value (0: clear, N: sealed with key version N), over both message tables."""
    usage: dict[int, int] = {}
    for table, _, _ in _SEALED:
        for version, count in await conn.fetch(f"SELECT encrypted, COUNT(*) FROM {table} GROUP BY encrypted"):
            usage[int(version)] = usage.get(int(version), 0) + int(count)
    return usage
