"""Runtime services layer (msg): frames a router sends this msg server: relays, kicks, presence notices."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from runtime.dispatch import Context
from runtime.link_dispatch import LinkContext
from runtime.services.deliveries import router_deliveries
from runtime.services.msg.delivery import same_class
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from runtime.services.msg.service import MsgService

log = logging.getLogger("ttgen.msg.inbound")

CHAT = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")


class InboundRelays:
    """The handler object of the links to routers (a `Dispatcher` routes their frames here): relays become
    local pushes, chat messages tracked for retransmit like local ones. Every command a router may relay
    is routed to `on_relay`, which a Dispatcher answers (confirms) once it returns: the relay is then queued
    to the local clients."""

    def __init__(self, svc: MsgService) -> None:
        self.svc = svc
        self.proto = svc.proto
        reg = svc.ctx.registry
        # What a router delivers (runtime.services.deliveries, shared with the gateway).
        self.__mapping__ = {info.command_id: "on_relay" for info in router_deliveries(reg)}
        enums = enums_of(reg)
        kicks = enums.KickReasonType
        self.kick_mobile = kicks.KICK_REASON_MOBILE_KICK
        self.kick_account = enums.ServerKickReason.SERVER_KICK_ACCOUNT
        self.kick_duplicate = kicks.KICK_REASON_DUPLICATE_USER
        self.online, self.offline = (
            enums.UserStatType.USER_STATUS_ONLINE,
            enums.UserStatType.USER_STATUS_OFFLINE,
        )
        self.m_inbound = svc.metrics.counter("msg_relays_in_total", "relayed frames received from routers")

    def on_relay(self, ctx: Context, msg: Any) -> None:
        """One relayed frame from a router."""
        self.m_inbound.inc()
        targets = ctx.targets if isinstance(ctx, LinkContext) else None
        body = ctx.body if isinstance(ctx, LinkContext) else b""
        self._handle(ctx.info.name, msg, targets, body)

    def _handle(
        self, name: str, msg: Any, targets: tuple[int, ...] | None, body: bytes | memoryview = b""
    ) -> None:
        svc = self.svc
        handlers = svc.handlers
        plugins = svc.plugins
        if plugins.plugins and plugins.on_relay(name, msg, targets):
            return
        if svc.presence.on_relay(name, msg):
            return
        if name in CHAT:
            handlers.deliver_chat(name, msg, targets or (), body=bytes(body) if body else None)
        elif name == "CID_OTHER_SERVER_KICK_USER":
            for st in list(svc.states_of(msg.user_id)):
                if msg.reason == self.kick_account:  # disabled or deleted by an admin: every session goes
                    handlers.kick(st, self.kick_duplicate)
                elif msg.reason == self.kick_mobile:
                    if not st.mobile:
                        handlers.kick(st, msg.reason)
                elif same_class(st.client_type, msg.client_type):
                    handlers.kick(st, msg.reason)
        elif name == "CID_OTHER_LOGIN_STATUS_NOTIFY":
            note = self.proto.new(
                "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY",
                user_id=msg.user_id,
                login_stat=self.online if msg.login_status else self.offline,
            )
            handlers.fan_out("CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", note, [msg.user_id], mobile_only=True)
        elif name == "CID_GROUP_CHANGE_MEMBER_NOTIFY":
            svc.group_members.pop(msg.group_id, None)
            handlers.fan_out(name, msg, targets if targets is not None else list(svc.sessions))
        else:
            handlers.fan_out(name, msg, targets if targets is not None else list(svc.sessions))
