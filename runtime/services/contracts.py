"""Runtime services layer: the contracts between services: result codes, the store envelope, request tokens,
and the store attempt.

A message is stored through biz: msg (and the gateway) send biz the client's IMMsgData in a relay envelope
naming the sender. Its `attach_data` carries the store request (`pack_store_request`: the group version the
sender has cached, and a request token when the client gave no msg id, flagged when sent again); biz answers
with the stored IMMsgData, whose `attach_data` is the store reply (`pack_store_reply`: result code, group
version, duplicate flag, and the members when the sender's cache is stale).

`StoreAttempt` is that exchange without I/O: the request to send, the delays before sending it again when the
link to biz is lost before an answer (biz answers a copy it already stored with that message, by the client
msg id or by the token, so the message is stored once), and what an answer means (`StoreResult`). msg drives
one from link callbacks (runtime.services.msg.chat); the gateway awaits one (runtime.services.gateway.
client_api). When msg's biz shares its process (the sharded layout, runtime.inprocess) msg calls biz's
`DirectStore.store` instead: the same request object, answered by a callback with the same reply object
(`StoreAttempt.answer_message`), with no frame encoded, decoded or sent.
"""

from __future__ import annotations

import enum
import itertools
import os
import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol

_REPLY = struct.Struct(">IIB")  # biz -> msg IMMsgData reply envelope: result, group version, duplicate
_VERSION = struct.Struct(">I")
_TOKEN = struct.Struct(">q")  # a store request token as biz keeps and stores it: a signed 64-bit int
_RESEND = b"\x01"  # the flags byte of a store request sent again (bit 0: resend)
_TOKEN_PARTS = struct.Struct(">4sI")  # how a sender makes a token: per-process random prefix, counter
# Seconds before each resend of a store request whose answer was lost with the link to biz (msg, gateway).
STORE_RETRY_DELAYS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)


class ResultCode(enum.IntEnum):
    """Result codes services put in `result_code` fields (and in the biz reply envelope of IMMsgData).

    0-7 keep TeamTalk's login ResultType numbering where they overlap; the rest are ttgen's own, so a client
    can tell "not a member" from "no such group" from "bad value".
    """

    OK = 0
    NO_MSG_SERVER = 1
    MSG_SERVER_FULL = 2
    NO_DB_SERVER = 3
    NO_LOGIN_SERVER = 4
    NO_ROUTE_SERVER = 5
    DB_VALIDATE_FAILED = 6
    VERSION_TOO_OLD = 7
    INVALID_ARGUMENT = 20
    NOT_FOUND = 21
    ACCESS_DENIED = 22
    CONFLICT = 23
    VALUE_TOO_LARGE = 24
    LOCKED_OUT = 25
    UNKNOWN_USER = 26
    RATE_LIMITED = 27
    RECALL_WINDOW_EXPIRED = 28
    NOT_LOGGED_IN = 29
    INTERNAL = 99


class StoreTokens:
    """Request tokens of one sending process (a msg server, a gateway): a random 4-byte prefix, never zero,
    then a counter, so tokens of different processes do not collide and no token is all zero (0 means "no
    token" to storage)."""

    def __init__(self) -> None:
        self._prefix = os.urandom(4)
        while not any(self._prefix):
            self._prefix = os.urandom(4)
        self._count = itertools.count(1)

    def next(self) -> bytes:
        """A fresh 8-byte token."""
        return _TOKEN_PARTS.pack(self._prefix, next(self._count) & 0xFFFFFFFF)


# -- the store envelope --------------------------------------------------------------------------------------
def pack_store_reply(
    result: int, version: int = 0, duplicate: bool = False, members: Sequence[int] | None = None
) -> bytes:
    """The attach_data biz puts on its IMMsgData reply; members follow if msg's cache is stale."""
    out = _REPLY.pack(result, version, 1 if duplicate else 0)
    if members:
        out += struct.pack(f">{len(members)}I", *members)
    return out


def unpack_store_reply(data: bytes) -> tuple[int, int, bool, list[int] | None]:
    """(result, group version, duplicate, members or None) from a biz IMMsgData reply's attach_data."""
    if len(data) < _REPLY.size:
        return int(ResultCode.INTERNAL), 0, False, None
    result, version, dup = _REPLY.unpack_from(data, 0)
    rest = data[_REPLY.size :]
    members = list(struct.unpack(f">{len(rest) // 4}I", rest)) if rest else None
    return result, version, bool(dup), members


def pack_version(version: int) -> bytes:
    """The attach_data msg puts on IMMsgData to biz: the group version it has cached (0 = none)."""
    return _VERSION.pack(version)


def pack_store_request(version: int, token: bytes, resend: bool = False) -> bytes:
    """The attach_data msg puts on IMMsgData to biz when the client gave no msg id: the cached group version,
    then an 8-byte request token (never all zero), then for a resend a flags byte with bit 0 set
    (`u32 version | token:8 [| flags:u8]`). A store retried after the link to biz dropped carries the same
    token, so biz answers it with the id it already stored (see `request_token`); the resend flag tells biz
    to look for that id in storage when its memory of tokens does not know it (biz may have restarted)."""
    out = _VERSION.pack(version) + token
    return out + _RESEND if resend else out


def resend_request(data: bytes) -> bytes | None:
    """A store request's attach_data with the resend flag set; None if it carries no token (or is flagged)."""
    return data + _RESEND if len(data) == 12 else None


def request_token(data: bytes) -> int:
    """The request token of a store request's attach_data as a signed 64-bit int (0 when it has none)."""
    return _TOKEN.unpack_from(data, 4)[0] if len(data) >= 12 else 0


def is_resend(data: bytes) -> bool:
    """Whether a store request's attach_data is flagged as a resend (a 12-byte one, the old form, is not)."""
    return len(data) > 12 and data[12] & 1 == 1


def unpack_version(data: bytes) -> int:
    """Inverse of pack_version (0 when absent)."""
    return _VERSION.unpack_from(data, 0)[0] if len(data) >= 4 else 0


# -- the store attempt ---------------------------------------------------------------------------------------
class StoreResult(NamedTuple):
    """What biz answered: the stored message (msg id 0 when not stored; its attach_data is the store reply,
    for no client's eyes), the result code, the group version and members (None: the sender's cache is
    current) and whether it was stored before."""

    message: Any
    result: int
    version: int
    duplicate: bool
    members: list[int] | None

    @property
    def stored(self) -> bool:
        """Whether the message is stored (its msg id is durable)."""
        return bool(self.message.msg_id)


class StoreAttempt:
    """One message on its way to storage through biz, without I/O (see the module docstring).

    Made from the sender's IMMsgData (its `from_user_id` already the authenticated sender): the store request
    goes in its attach_data (a fresh token when the client gave no msg id; the cached group version). Send
    `request`; on an answer call `answer(body)`; when the link was lost first (or no biz was reachable),
    `retry_delay()` says how long to wait before sending `resend()`, or None: give up (the client retries,
    and biz deduplicates by the client's msg id)."""

    __slots__ = ("_request", "attempts", "delays", "msg")

    def __init__(
        self,
        msg: Any,
        tokens: StoreTokens,
        *,
        group: bool,
        version: int = 0,
        delays: Sequence[float] | None = None,
    ) -> None:
        if msg.msg_id == 0:
            msg.attach_data = pack_store_request(version, tokens.next())
        elif group:
            msg.attach_data = pack_version(version)
        elif msg.HasField("attach_data"):
            msg.ClearField("attach_data")
        self.msg = msg
        self._request: bytes | None = None  # serialized when first asked for (a direct call never asks)
        self.delays = tuple(STORE_RETRY_DELAYS if delays is None else delays)
        self.attempts = 0

    @property
    def request(self) -> bytes:
        """The request to send: the message with the store request in its attach_data, serialized."""
        if self._request is None:
            self._request = self.msg.SerializeToString()
        return self._request

    def retry_delay(self) -> float | None:
        """The answer was lost with the link (or there was no link): seconds to wait before `resend()`, or
        None when every retry is used up."""
        if self.attempts >= len(self.delays):
            return None
        delay = self.delays[self.attempts]
        self.attempts += 1
        return delay

    def resend(self) -> bytes:
        """The request to send again: the same message, flagged as a resend when it carries a token (so biz
        also asks storage for the token when its memory does not know it); serialized again only once."""
        msg = self.msg
        if not msg.msg_id and msg.HasField("attach_data"):
            flagged = resend_request(msg.attach_data)
            if flagged is not None:
                msg.attach_data = flagged
                self._request = None
        return self.request

    def answer(self, body: bytes | memoryview) -> StoreResult | None:
        """Biz's answer (the body of its reply); None for an empty one (biz failed without an answer)."""
        if not body:
            return None
        return self.answer_message(type(self.msg).FromString(bytes(body)))

    def answer_message(self, reply: Any) -> StoreResult | None:
        """Biz's answer as a message object (a direct call, `DirectStore`; None: biz failed without one)."""
        if reply is None:
            return None
        result, version, duplicate, members = unpack_store_reply(reply.attach_data)
        return StoreResult(reply, result, version, duplicate, members)


class DirectStore(Protocol):
    """What biz offers a role of its own shard (runtime.inprocess): its one store path called as a function.

    `store(user_id, msg, burn, done)` stores the IMMsgData `msg` (its `attach_data` the store request, as
    `StoreAttempt` makes it) on behalf of the authenticated `user_id` and calls `done(reply)` once it is
    committed, with what the link would have answered: the message itself, its msg id, create time and the
    store reply in `attach_data` (None: storing failed without an answer). `msg` belongs to biz until then."""

    def store(self, user_id: int, msg: Any, burn: bool, done: Callable[[Any], None]) -> None: ...


class DirectRelay(Protocol):
    """What a router offers the msg server of its own shard (runtime.inprocess): a relay as a function call.

    `relay_from(origin, command_id, body, done)` forwards the relay `body` (the envelope, `relay_head`, then
    the message) as if it had arrived on `origin` (the router's end of the msg server's in-process link: it
    is never sent back there) and calls `done()` once every copy is confirmed by its msg server (or lost)."""

    def relay_from(self, origin: Any, command_id: int, body: bytes, done: Callable[[], object]) -> None: ...
