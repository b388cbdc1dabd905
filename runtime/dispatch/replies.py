"""Packing and sending: a reply or push goes through its command's pack stage, except where that stage
would write exactly the bytes already at hand (a plain-protobuf reply, a remembered or relayed body)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from runtime.registry import CommandInfo
from runtime.stages import CommandStages
from runtime.transport import Link

if TYPE_CHECKING:
    from runtime.dispatch.context import Context
    from runtime.dispatch.routes import Route

log = logging.getLogger("runtime.dispatch")


def body_as_is(link: Link, stages: CommandStages) -> bool:
    """Whether the pack stage sends a serialized body unchanged on `link` (it neither transforms every body
    nor seals this one: the command is `session_aead` only once the connection has session keys)."""
    pack = stages.pack
    return pack.trivial or (pack.plain_unless_sealed and not (link.data and link.data.get("cipher")))


def send_packed(link: Link, info: CommandInfo, stages: CommandStages, msg: Message, seq: int) -> bool:
    """Pack `msg` as `info`'s frame on `link` and queue it (False: the connection is closing)."""
    if stages.pack.trivial:
        return link.send_frame(info.service_id, info.command_id, seq, msg.SerializeToString())
    cipher = link.data.get("cipher") if link.data else None
    flag, body = stages.pack.pack(msg, info.service_id, info.command_id, seq, cipher)
    return link.send_frame(info.service_id, info.command_id, seq, body, flag=flag)


def send_reply_body(ctx: Context, route: Route, body: bytes) -> None:
    """Send a remembered (serialized) reply again, through the pack stage where it transforms it."""
    if route.reply is None:
        return
    info, stages = route.reply
    link = ctx.link
    if body_as_is(link, stages):
        link.send_frame(info.service_id, info.command_id, ctx.seq, body)
    else:
        send_packed(link, info, stages, info.message_class.FromString(body), ctx.seq)


def send_reply(ctx: Context, route: Route, result: Any) -> None:
    """Send a handler's `result` as its command's reply; a result of the wrong type is logged, not sent."""
    if route.reply is None:
        log.error("%s returned a %s but the command has no reply", route.name, type(result).__name__)
        return
    info, stages = route.reply
    if type(result) is not info.message_class:
        log.error(
            "%s returned a %s; its reply %s carries %s",
            route.name,
            type(result).__name__,
            info.name,
            info.message_class.__name__,
        )
        return
    send_packed(ctx.link, info, stages, result, ctx.seq)
