"""Runtime services layer: answering a request the input stage refused (`on_invalid: reject`, or a rate limit
with `on_rate_exceeded: reject`) with the command's own reply carrying an error, so a client learns why
instead of waiting for an answer that never comes.

The reply is the command's reply message with `result_code` set (VALUE_TOO_LARGE for size and count limits,
RATE_LIMITED for a rate limit, INVALID_ARGUMENT otherwise), the caller's user id, the request's same-named
scalar fields that identify what was refused (session, group, msg ids) and zero values in the other required
fields. A chat message (IMMsgData, whose ack has no result code) gets its IMMsgDataAck with msg id 0, the
refusal TeamTalk clients already understand. For a command without a reply, or whose reply has no result
code, the dispatcher closes the connection with a logged reason.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from runtime.dispatch import Context
from runtime.errors import StageError
from runtime.refusal import echo_fields, fill_required, value_named
from runtime.services.links import ResultCode
from runtime.services.protocol import enums_of

log = logging.getLogger("ttgen.refusals")

CHAT_COMMANDS = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")
_TOO_LARGE_RULES = frozenset({"max_len", "max_items", "max_bytes", "max"})
# Request fields that say *what* was refused; echoed when the reply has a field of the same name and type.
_ECHO = frozenset(
    {
        "session_id",
        "session_type",
        "group_id",
        "msg_id",
        "to_session_id",
        "file_name",
        "task_id",
        "peer_user_id",
    }
)


def result_code_for(exc: StageError) -> int:
    """The result code that tells a client why its request was refused."""
    if exc.rule == "rate":
        return int(ResultCode.RATE_LIMITED)
    if exc.rule in _TOO_LARGE_RULES:
        return int(ResultCode.VALUE_TOO_LARGE)
    return int(ResultCode.INVALID_ARGUMENT)


def error_reply(ctx: Context, request: Message | None, exc: StageError) -> Message | None:
    """The reply to send for a refused request, or None when the command cannot carry an error."""
    info = ctx.info
    if info.reply is None:
        return None
    reply_info = ctx.dispatcher.registry.by_name(info.reply)
    cls = reply_info.message_class
    if info.name in CHAT_COMMANDS and request is not None:
        ack: Any = cls()
        ack.user_id = ctx.user_id
        ack.session_id = getattr(request, "to_session_id", 0)
        ack.msg_id = 0  # TeamTalk's "not stored"
        enums = enums_of(ctx.dispatcher.registry)
        group = getattr(request, "msg_type", 0) & enums.MsgTypeBits.GROUP
        ack.session_type = (
            enums.SessionType.SESSION_TYPE_GROUP if group else enums.SessionType.SESSION_TYPE_SINGLE
        )
        refused: Message = ack
        return refused
    fields = cls.DESCRIPTOR.fields_by_name
    code = fields.get("result_code")
    if code is None or code.is_repeated:
        return None
    reply: Any = cls()
    wanted = result_code_for(exc)
    enum = code.enum_type if code.type == FieldDescriptor.TYPE_ENUM else None
    if enum is not None and enum.values_by_number.get(wanted) is None:
        wanted = _closest_enum_value(enum)
    reply.result_code = wanted
    text = fields.get("result_string")
    if text is not None and text.type == FieldDescriptor.TYPE_STRING and not text.is_repeated:
        reply.result_string = f"{info.name} refused ({exc.rule}): {exc}"
    if "user_id" in fields and not fields["user_id"].is_repeated:
        reply.user_id = ctx.user_id
    if "server_time" in fields and not fields["server_time"].is_repeated:
        reply.server_time = int(time.time())
    if request is not None:
        echo_fields(reply, request, sorted(_ECHO))
    fill_required(reply)
    built: Message = reply
    return built if built.IsInitialized() else None


def _closest_enum_value(enum: Any) -> int:
    """For a result field typed by an enum without our codes (e.g. TeamTalk's login ResultType): the value
    whose name says the request was invalid, else the first non-zero value (0 means success)."""
    value = value_named(enum, ("INVALID", "VALIDATE", "ERROR", "FAIL"))
    return 1 if value is None else value


def answer_refusal(ctx: Context, msg: Message | None, exc: StageError) -> bool:
    """Answer a refused request with its reply carrying the error (see the module docstring). False when there
    is no such reply: the dispatcher then closes the connection with a logged reason."""
    try:
        reply = error_reply(ctx, msg, exc)
    except Exception:  # a reply that cannot be built must not take the connection down
        log.exception("building the refusal reply of %s failed", ctx.info.name)
        return False
    if reply is None:
        return False
    ctx.reply(reply)
    return True


class RejectingHandlers:
    """Mixin for a service's handler object: the dispatcher calls `on_rejected` for `reject` refusals."""

    def on_rejected(self, ctx: Context, msg: Message | None, exc: StageError) -> bool:
        """`answer_refusal`."""
        return answer_refusal(ctx, msg, exc)
