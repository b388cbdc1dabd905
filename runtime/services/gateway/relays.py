"""Runtime services layer (gateway): protocol messages as long-poll JSON events; frames from routers.

Chat messages become `{"type": "msg", ...}` with the text (when it is UTF-8), the raw bytes in base64 and
`burn` (true for a burn-after-reading message); read notifies `{"type": "read", ...}`; everything else a
router relays (presence, group changes, recalls, burned notices, file offers, typing) becomes
`{"type": <command name>, "data": <message as JSON>}`.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from runtime.dispatch import Context
from runtime.link_dispatch import LinkContext
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums
    from runtime.services.gateway.service import GatewayService

log = logging.getLogger("ttgen.gateway")

CHAT = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")


def chat_event(msg: Any, enums: type[Enums], burn: bool = False) -> dict[str, Any]:
    """A stored IMMsgData as a poll event; `burn` marks a burn-after-reading message (CID_EXT_MSG_BURN): the
    client shows it until it is read, then destroys it (storage destroys it when `/api/read` covers it)."""
    data = bytes(msg.msg_data)
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    group = bool(msg.msg_type & enums.MsgTypeBits.GROUP)
    sessions = enums.SessionType
    return {
        "type": "msg",
        "msg_id": msg.msg_id,
        "from": msg.from_user_id,
        "to": msg.to_session_id,
        "session_type": int(sessions.SESSION_TYPE_GROUP if group else sessions.SESSION_TYPE_SINGLE),
        "msg_type": msg.msg_type,
        "create_time": msg.create_time,
        "text": text,
        "data_b64": base64.b64encode(data).decode("ascii"),
        "burn": burn,
    }


def chat_key(receiver: int, msg: Any, enums: type[Enums]) -> tuple[int, int, int]:
    """(session type, session id as the receiver sees it, msg id): the duplicate-suppression key."""
    if msg.msg_type & enums.MsgTypeBits.GROUP:
        return (int(enums.SessionType.SESSION_TYPE_GROUP), msg.to_session_id, msg.msg_id)
    peer = msg.to_session_id if msg.from_user_id == receiver else msg.from_user_id
    return (int(enums.SessionType.SESSION_TYPE_SINGLE), peer, msg.msg_id)


def generic_event(name: str, msg: Any) -> dict[str, Any]:
    """Any other message as a poll event."""
    if name == "CID_MSG_READ_NOTIFY":
        return {
            "type": "read",
            "user_id": msg.user_id,
            "session_id": msg.session_id,
            "session_type": msg.session_type,
            "msg_id": msg.msg_id,
        }
    doc = MessageToDict(msg, preserving_proto_field_name=True)
    doc.pop("attach_data", None)
    return {"type": name, "data": doc}


class GatewayInbound:
    """The handler object of the gateway's links to routers (a `Dispatcher` routes their frames here):
    relays to its users, kicks, presence broadcasts. Every command is routed to `on_relay`; the Dispatcher
    confirms a relay once it returns (also when it failed), so the sender's router can finish it."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        self.enums = enums_of(svc.ctx.registry)
        # Server-to-server frames (e.g. a plugin's CID_SHAKE_SHARE) are for msg servers, not for users: not
        # routed, so answered empty.
        self.__mapping__ = {
            info.command_id: "on_relay" for info in svc.ctx.registry if info.direction != "s2s"
        }

    def on_relay(self, ctx: Context, msg: Any) -> None:
        """One frame from a router."""
        self._handle(ctx.info.name, msg, ctx.targets if isinstance(ctx, LinkContext) else None)

    def _handle(self, name: str, msg: Any, targets: tuple[int, ...] | None) -> None:
        svc = self.svc
        if svc.presence.on_relay(name, msg):
            return
        if name in CHAT:
            svc.deliver_chat(msg, targets or (), burn=name == "CID_EXT_MSG_BURN")
        elif name == "CID_OTHER_SERVER_KICK_USER":
            for session in list(svc.sessions.of(msg.user_id)):
                mobile = bool(session.client_type & self.enums.ClientTypeBits.MOBILE)
                kicks = self.enums.KickReasonType
                if msg.reason == self.enums.ServerKickReason.SERVER_KICK_ACCOUNT:  # disabled or deleted
                    svc.kick(session, kicks.KICK_REASON_DUPLICATE_USER)
                elif msg.reason == kicks.KICK_REASON_MOBILE_KICK:
                    if not mobile:
                        svc.kick(session, msg.reason)
                elif ((session.client_type ^ msg.client_type) >> 4) == 0:
                    svc.kick(session, msg.reason)
        else:
            if name == "CID_GROUP_CHANGE_MEMBER_NOTIFY":
                svc.group_members.pop(msg.group_id, None)
            users = list(svc.sessions.by_user) if targets is None else targets
            svc.push_event(users, generic_event(name, msg))
