"""The dedup/reply cache: a deduplicated command's window remembers each request's reply (serialized) under a
key of its seq and content, answers a retransmit with it, and holds the duplicates that arrive while the first
copy is still being processed until its reply is known."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from runtime.dispatch.replies import send_packed
from runtime.framing import Frame
from runtime.transport import Link

if TYPE_CHECKING:
    from runtime.dispatch.context import Context
    from runtime.dispatch.routes import Route

_epochs = itertools.count(1)
_EPOCH = "dedup_epoch"


class Waiting:
    """A dedup window entry: the request's reply once it is known (`result`), and until then the duplicates
    that arrived meanwhile (`waiters`, bounded), which get that reply when it is sent. The entry is stored
    once; the reply is filled in place."""

    __slots__ = ("result", "waiters")
    LIMIT = 8

    def __init__(self) -> None:
        self.result: Message | None = None
        self.waiters: list[tuple[Link, int]] | None = None

    def add(self, link: Link, seq: int) -> None:
        waiters = self.waiters
        if waiters is None:
            self.waiters = [(link, seq)]
        elif len(waiters) < self.LIMIT:
            waiters.append((link, seq))


def connection_epoch(link: Link) -> int:
    """A number that names this connection for as long as the process runs (an address, a port or an object
    id can be reused by a later connection; a retransmit never crosses connections)."""
    data = link.extras()
    epoch: int | None = data.get(_EPOCH)
    if epoch is None:
        epoch = data[_EPOCH] = next(_epochs)
    return epoch


def dedup_key(frame: Frame, msg: Message) -> tuple[int, ...]:
    """A request's key in its command's window: a retransmit repeats the seq and the content. Sealed bodies
    differ per attempt (fresh nonce), so for those the key hashes the plaintext."""
    if not frame.flag:
        return frame.command_id, frame.seq, hash(bytes(frame.body))
    return frame.command_id, frame.seq, hash(msg.SerializePartialToString())


def remember(route: Route | None, ctx: Context, result: Message, body: bytes | None) -> bytes | None:
    """Record `result` as the reply to `ctx`'s request in `route`'s window and answer the duplicates that
    arrived while it was pending; returns the serialized reply (`body`, made here if not given).

    The window keeps the reply serialized: bytes are not tracked by the cycle collector, where a message
    object and its slot would be, for the whole window."""
    slot = ctx.dedup_slot
    key = ctx.dedup_key
    if slot is None or key is None:
        return body
    slot.result = result
    if body is None:
        try:
            body = result.SerializeToString()
        except Exception:  # e.g. required fields missing: the send reports it; keep the message
            body = None
    if body is not None and route is not None and route.dedup is not None:
        route.dedup.replace(ctx.user_id, key, slot, body)
    if slot.waiters:
        answer_waiters(route, slot, result)
    return body


def forget(route: Route | None, ctx: Context, provisional: Message | None = None) -> None:
    """Drop `ctx`'s request from `route`'s window, so a retransmit is processed afresh. Duplicates that were
    waiting for its reply get `provisional` (the same answer the first copy got), if given."""
    key = ctx.dedup_key
    slot = ctx.dedup_slot
    if route is None or route.dedup is None or key is None:
        return
    route.dedup.forget(ctx.user_id, key)
    ctx.dedup_slot = None
    if provisional is not None and slot is not None and slot.waiters:
        answer_waiters(route, slot, provisional)


def answer_waiters(route: Route | None, slot: Waiting, result: Message) -> None:
    """Send `result` to the duplicates waiting in `slot` whose connections are still open."""
    waiters, slot.waiters = slot.waiters, None
    if not waiters or route is None or route.reply is None:
        return
    info, stages = route.reply
    if type(result) is not info.message_class:
        return
    for link, seq in waiters:
        conn = link.conn
        if conn is not None and conn.is_open:
            send_packed(link, info, stages, result, seq)
