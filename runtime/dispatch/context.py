"""`Context`: what a handler sees of its request, and the helpers it answers or pushes with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf.message import Message

from runtime.registry import CommandInfo
from runtime.stages.crypto import SessionCipher, SessionKeys
from runtime.stages.unpack import ReplayWindow
from runtime.transport import Link

if TYPE_CHECKING:
    from runtime.dispatch.dispatcher import Dispatcher
    from runtime.dispatch.reply_cache import Waiting


class Context:
    """What a handler sees of the request: its connection, seq, command, and helpers to answer or push."""

    __slots__ = ("close_reason", "dedup_key", "dedup_slot", "dispatcher", "info", "link", "seq")

    def __init__(self, dispatcher: Dispatcher, link: Link, info: CommandInfo, seq: int) -> None:
        self.dispatcher = dispatcher
        self.link = link
        self.info = info
        self.seq = seq
        self.close_reason: str | None = None
        # The request's key in its command's dedup window (None: not deduplicated, or forgotten).
        self.dedup_key: tuple[int, ...] | None = None
        self.dedup_slot: Waiting | None = None

    @property
    def connection(self) -> Link:
        return self.link

    @property
    def peer(self) -> str:
        return self.link.peer

    @property
    def user_id(self) -> int:
        conn = self.link.conn
        return conn.user_id if conn is not None else 0

    @property
    def client_type(self) -> int:
        conn = self.link.conn
        return conn.client_type if conn is not None else 0

    @property
    def authenticated(self) -> bool:
        conn = self.link.conn
        return conn is not None and conn.user_id != 0 and conn.is_open

    def authenticate(self, user_id: int, client_type: int) -> None:
        """Complete login on this connection: binds the user and lifts the auth gate."""
        assert self.link.conn is not None
        self.link.conn.authenticate(user_id, client_type)
        if self.link.data:
            # The rate buckets of the login exchange: an idle logged-in connection need not keep them.
            self.link.data.pop("buckets", None)

    def enable_encryption(self, keys: SessionKeys, algorithm: str = "aes-256-gcm") -> None:
        """Install the session keys agreed at login; `session_aead` commands are sealed from now on."""
        data = self.link.extras()
        data["cipher"] = SessionCipher(keys, algorithm)
        data["replay"] = ReplayWindow()

    def reply(self, msg: Message, *, remember: bool = True) -> bool:
        """Send `msg` as this command's reply with the request's seq (same as returning it).

        For a deduplicated command the reply is remembered in the dedup window (a later retransmit of the
        request is answered with it, and one that arrived while this request was pending gets it now);
        `remember=False` sends a provisional answer instead (e.g. "not stored, try again") and forgets the
        request, so a retransmit is processed afresh."""
        body = None
        if self.dedup_key is not None:
            if remember:
                body = self.dispatcher.remember_reply(self, msg)
            else:
                self.dispatcher.forget_request(self, msg)
                self.dedup_key = None
        return self.dispatcher.send(self.link, self.info.reply or self.info.name, msg, self.seq, body)

    def forget(self) -> None:
        """Drop this request from its dedup window: a retransmit will be processed again, not answered from
        the window. Requests that joined it while it was pending are answered by the next reply sent."""
        if self.dedup_key is not None:
            self.dispatcher.forget_request(self)
            self.dedup_key = None

    def send(self, command: str, msg: Message, seq: int = 0) -> bool:
        """Send `command` on this connection."""
        return self.dispatcher.send(self.link, command, msg, seq)

    def push(self, link: Link, command: str, msg: Message) -> bool:
        """Send a server-initiated `command` (seq 0) on another connection, e.g. to fan out a message."""
        return self.dispatcher.send(link, command, msg, 0)

    def close(self, reason: str) -> None:
        """Close this connection once the handler has finished and its reply is written (e.g. a failed login
        or a logout: reply, then close)."""
        self.close_reason = reason
