"""Runtime services layer (msg): frames a router sends this msg server: relays, kicks, presence notices."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from runtime.admin.kick import KICK_ACCOUNT, KICK_DUPLICATE, KICK_MOBILE
from runtime.framing import Frame
from runtime.services.links import FLAG_RELAY, Link, unpack_relay
from runtime.services.msg.delivery import same_class

if TYPE_CHECKING:
    from runtime.services.msg.service import MsgService

log = logging.getLogger("ttgen.msg.inbound")

CHAT = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")


class InboundRelays:
    """Turns router frames into local pushes. Chat messages are tracked for retransmit like local ones."""

    def __init__(self, svc: MsgService) -> None:
        self.svc = svc
        self.proto = svc.proto
        reg = svc.ctx.registry
        self._names = {info.command_id: info.name for info in reg}
        self._parsers = {info.command_id: info.message_class.FromString for info in reg}
        self.m_inbound = svc.metrics.counter("msg_relays_in_total", "relayed frames received from routers")

    def on_frame(self, link: Link, frame: Frame) -> None:
        """Handle one frame from a router; confirm relays once they are queued to local clients."""
        name = self._names.get(frame.command_id)
        if name is None:
            link.confirm(frame)
            return
        targets: tuple[int, ...] | None = None
        body: bytes | memoryview = frame.body
        try:
            if frame.flag & FLAG_RELAY:
                targets, body = unpack_relay(body)
            msg: Any = self._parsers[frame.command_id](bytes(body))
        except Exception as exc:
            log.warning("bad frame 0x%04x from %s: %s", frame.command_id, link.name, exc)
            link.confirm(frame)
            return
        self.m_inbound.inc()
        try:
            self._handle(name, msg, targets, body)
        finally:
            link.confirm(frame)

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
                if msg.reason == KICK_ACCOUNT:  # disabled or deleted by an admin: every session goes
                    handlers.kick(st, KICK_DUPLICATE)
                elif msg.reason == KICK_MOBILE:
                    if not st.mobile:
                        handlers.kick(st, msg.reason)
                elif same_class(st.client_type, msg.client_type):
                    handlers.kick(st, msg.reason)
        elif name == "CID_OTHER_LOGIN_STATUS_NOTIFY":
            note = self.proto.new(
                "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY",
                user_id=msg.user_id,
                login_stat=1 if msg.login_status else 2,
            )
            handlers.fan_out("CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", note, [msg.user_id], mobile_only=True)
        elif name == "CID_GROUP_CHANGE_MEMBER_NOTIFY":
            svc.group_members.pop(msg.group_id, None)
            handlers.fan_out(name, msg, targets if targets is not None else list(svc.sessions))
        else:
            handlers.fan_out(name, msg, targets if targets is not None else list(svc.sessions))
