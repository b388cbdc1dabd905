"""`Route`: everything the hot path needs for one command, computed once when the dispatcher is built."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from runtime.connection import Kind
from runtime.registry import CommandInfo
from runtime.stages import CommandStages
from runtime.stages.transport import DedupWindow
from runtime.stages.unpack import text_check
from runtime.transport import Link

if TYPE_CHECKING:
    from runtime.dispatch.context import Context

Handler = Callable[["Context", Any], Awaitable[Message | None] | Message | None]

EXTENSION_SERVICE = "EXT"  # the registry service whose commands only opted-in clients receive
EXT_OPT_IN = "ext"  # link data key: the client sent an extension command


def extension_capable(link: Link) -> bool:
    """Whether `link` may receive extension commands: every server link does; a client connection once the
    client sent one itself (an original TeamTalk client never does, and must never receive one)."""
    if link.kind is not Kind.CLIENT_SESSION:
        return True
    data = link.data
    return bool(data and data.get(EXT_OPT_IN))


class Route:
    """Everything the hot path needs for one command, computed once."""

    __slots__ = (
        "check_text",
        "client_ok",
        "dedup",
        "dedup_per_connection",
        "fast_in",
        "fast_reply",
        "handler",
        "info",
        "is_async",
        "max_body",
        "name",
        "parse",
        "reply",
        "reply_sealed",
        "stages",
        "verify",
    )

    def __init__(
        self,
        info: CommandInfo,
        handler: Handler,
        stages: CommandStages,
        reply: tuple[CommandInfo, CommandStages] | None,
    ) -> None:
        self.info = info
        self.name = info.name
        self.handler = handler
        # Handlers are `async def` as the generated bases declare them; a service may implement a hot command
        # with a plain function (it must not block), which the dispatcher then calls without a coroutine.
        self.is_async = inspect.iscoroutinefunction(handler)
        self.stages = stages
        self.reply = reply
        # No input checks, no decryption: parse the body directly.
        self.fast_in = not stages.input.active and not stages.unpack.require_encryption
        # Required fields are checked at parse time unless the unpack policy turns `verify` off (then the
        # input stage checks them, and refuses by its own rules).
        self.verify = self.fast_in or stages.unpack.verify
        self.max_body = stages.input.max_bytes if stages.input.max_bytes is not None else 1 << 62
        self.dedup = DedupWindow(stages.transport.dedup_window) if stages.transport.dedup else None
        self.dedup_per_connection = stages.transport.dedup_per_connection
        self.client_ok = info.from_client
        self.parse = info.message_class.FromString
        self.check_text = text_check(info.message_class.DESCRIPTOR)
        # (message class, service id, command id) of a plain-protobuf reply: sent without the pack stage.
        # `session_aead` replies take it too while a connection has no session keys (checked per reply).
        self.fast_reply: tuple[type[Message], int, int] | None = None
        self.reply_sealed = False
        if reply is not None and not reply[1].pack.compress and reply[1].pack.codec is None:
            self.fast_reply = (reply[0].message_class, reply[0].service_id, reply[0].command_id)
            self.reply_sealed = reply[1].pack.encrypt
