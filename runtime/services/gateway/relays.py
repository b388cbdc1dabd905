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

from runtime.admin.kick import KICK_ACCOUNT, KICK_DUPLICATE, KICK_MOBILE
from runtime.framing import Frame
from runtime.services.links import FLAG_RELAY, Link, unpack_relay

if TYPE_CHECKING:
    from runtime.services.gateway.service import GatewayService

log = logging.getLogger("ttgen.gateway")

GROUP_MSG_BIT = 0x10
CHAT = ("CID_MSG_DATA", "CID_EXT_MSG_BURN")


def chat_event(msg: Any, burn: bool = False) -> dict[str, Any]:
    """A stored IMMsgData as a poll event; `burn` marks a burn-after-reading message (CID_EXT_MSG_BURN): the
    client shows it until it is read, then destroys it (storage destroys it when `/api/read` covers it)."""
    data = bytes(msg.msg_data)
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    group = bool(msg.msg_type & GROUP_MSG_BIT)
    return {
        "type": "msg",
        "msg_id": msg.msg_id,
        "from": msg.from_user_id,
        "to": msg.to_session_id,
        "session_type": 2 if group else 1,
        "msg_type": msg.msg_type,
        "create_time": msg.create_time,
        "text": text,
        "data_b64": base64.b64encode(data).decode("ascii"),
        "burn": burn,
    }


def chat_key(receiver: int, msg: Any) -> tuple[int, int, int]:
    """(session type, session id as the receiver sees it, msg id): the duplicate-suppression key."""
    if msg.msg_type & GROUP_MSG_BIT:
        return (2, msg.to_session_id, msg.msg_id)
    peer = msg.to_session_id if msg.from_user_id == receiver else msg.from_user_id
    return (1, peer, msg.msg_id)


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
    """Frames routers send the gateway: relays to its users, kicks, presence broadcasts."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        self._names = {info.command_id: info.name for info in svc.ctx.registry}
        # Server-to-server broadcasts (e.g. a plugin's CID_SHAKE_SHARE) are for msg servers, not for users.
        self._internal = {info.command_id for info in svc.ctx.registry if info.direction == "s2s"}

    def on_frame(self, link: Link, frame: Frame) -> None:
        """Handle one router frame; always confirm a relay so the sender's router can finish it."""
        name = self._names.get(frame.command_id)
        try:
            if name is None or frame.command_id in self._internal:
                return
            targets: tuple[int, ...] | None = None
            body: bytes | memoryview = frame.body
            if frame.flag & FLAG_RELAY:
                targets, body = unpack_relay(body)
            msg: Any = self.svc.proto.parse(frame.command_id, body)
            self._handle(name, msg, targets)
        except Exception as exc:  # a bad relay is dropped, the link survives
            log.warning("gateway: bad frame 0x%04x from %s: %s", frame.command_id, link.name, exc)
        finally:
            link.confirm(frame)

    def _handle(self, name: str, msg: Any, targets: tuple[int, ...] | None) -> None:
        svc = self.svc
        if svc.presence.on_relay(name, msg):
            return
        if name in CHAT:
            svc.deliver_chat(msg, targets or (), burn=name == "CID_EXT_MSG_BURN")
        elif name == "CID_OTHER_SERVER_KICK_USER":
            for session in list(svc.sessions.of(msg.user_id)):
                mobile = bool(session.client_type & 0x10)
                if msg.reason == KICK_ACCOUNT:  # disabled or deleted by an admin: every session goes
                    svc.kick(session, KICK_DUPLICATE)
                elif msg.reason == KICK_MOBILE:
                    if not mobile:
                        svc.kick(session, msg.reason)
                elif ((session.client_type ^ msg.client_type) >> 4) == 0:
                    svc.kick(session, msg.reason)
        else:
            if name == "CID_GROUP_CHANGE_MEMBER_NOTIFY":
                svc.group_members.pop(msg.group_id, None)
            users = list(svc.sessions.by_user) if targets is None else targets
            svc.push_event(users, generic_event(name, msg))
