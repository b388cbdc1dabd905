"""Runtime services layer (gateway): protocol messages as long-poll JSON events; frames from routers.

Chat messages become `{"type": "msg", ...}` with the text (when it is UTF-8), the raw bytes in base64 and
`burn` (true for a burn-after-reading message); edits `{"type": "edit", ...}`; read notifies
`{"type": "read", ...}`; everything else a router relays (presence, group changes, recalls, burned notices,
file offers, typing) becomes `{"type": <command name>, "data": <message as JSON>}`.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict

from runtime.dispatch import Context
from runtime.services.base import generated_handlers
from runtime.services.deliveries import delivery_mapping, delivery_targets
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums
    from runtime.services.gateway.service import GatewayService

log = logging.getLogger("ttgen.gateway")


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


def edit_event(msg: Any) -> dict[str, Any]:
    """An IMMsgEditNotify as an `edit` event: the message's new text (null when it is not UTF-8)."""
    data = bytes(msg.msg_data)
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "type": "edit",
        "msg_id": msg.msg_id,
        "from": msg.from_user_id,
        "to": msg.to_session_id,
        "session_type": msg.session_type,
        "text": text,
        "edit_time": msg.edit_time,
    }


def generic_event(name: str, msg: Any) -> dict[str, Any]:
    """Any other message as a poll event."""
    if name == "CID_EXT_MSG_EDIT_NOTIFY":
        return edit_event(msg)
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


class GatewayRelays:
    """What routers deliver to the gateway (runtime.services.deliveries; the cluster file's gateway
    `receives`): one method per command, bound to the generated `GatewayDeliveriesBase` by `relay_handlers`.
    A `Dispatcher` routes the frames of the router links here and confirms a relay once its method returns
    (also when it failed), so the sender's router can finish it."""

    def __init__(self, svc: GatewayService) -> None:
        self.svc = svc
        self.enums = enums_of(svc.ctx.registry)
        # A plugin's server-to-server frames (e.g. CID_SHAKE_SHARE) are for msg servers: dropped here.
        self.__mapping__ = delivery_mapping(self, svc.ctx.registry, "on_server_only")

    # chat ------------------------------------------------------------------------------------------------
    def on_cid_msg_data(self, ctx: Context, msg: Any) -> None:
        """A stored chat message for the targets' sessions."""
        self.svc.deliver_chat(msg, delivery_targets(ctx) or ())

    def on_cid_ext_msg_burn(self, ctx: Context, msg: Any) -> None:
        """A stored burn-after-reading message."""
        self.svc.deliver_chat(msg, delivery_targets(ctx) or (), burn=True)

    def on_cid_ext_msg_edit_notify(self, ctx: Context, msg: Any) -> None:
        """A message's text was replaced: an `edit` event."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_ext_msg_recall_notify(self, ctx: Context, msg: Any) -> None:
        """A message was recalled (the event the page shows as "message recalled")."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_ext_msg_burned_notify(self, ctx: Context, msg: Any) -> None:
        """A burn-after-reading message was read and destroyed."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_msg_read_notify(self, ctx: Context, msg: Any) -> None:
        """A session was read on another device: a `read` event."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    # presence --------------------------------------------------------------------------------------------
    def on_cid_buddy_list_status_notify(self, ctx: Context, msg: Any) -> None:
        """One user's presence changed (coalesced again for the sessions)."""
        self.svc.presence.on_relay(ctx.info.name, msg)

    def on_cid_buddy_list_users_status_response(self, ctx: Context, msg: Any) -> None:
        """Several presence changes."""
        self.svc.presence.on_relay(ctx.info.name, msg)

    def on_cid_other_login_status_notify(self, ctx: Context, msg: Any) -> None:
        """The user's PC came or went: the user's mobile-class sessions get a
        CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY event ("your PC is online"), as a msg server tells mobiles."""
        stat = self.enums.UserStatType
        note = self.svc.proto.new(
            "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY",
            user_id=msg.user_id,
            login_stat=stat.USER_STATUS_ONLINE if msg.login_status else stat.USER_STATUS_OFFLINE,
        )
        event = generic_event("CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", note)
        mobile = self.enums.ClientTypeBits.MOBILE
        n = 0
        for session in self.svc.sessions.of(msg.user_id):
            if session.client_type & mobile:
                session.push(event)
                n += 1
        self.svc.m_events.inc(n)

    # directory, groups, files, signals -------------------------------------------------------------------
    def on_cid_buddy_list_remove_session_notify(self, ctx: Context, msg: Any) -> None:
        """A session was deleted on another device."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_buddy_list_sign_info_changed_notify(self, ctx: Context, msg: Any) -> None:
        """A signature changed."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_group_change_member_notify(self, ctx: Context, msg: Any) -> None:
        """A group's members changed: the cached member list is stale."""
        self.svc.group_members.pop(msg.group_id, None)
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_file_notify(self, ctx: Context, msg: Any) -> None:
        """A file offer or a ready offline file."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_switch_p2p_cmd(self, ctx: Context, msg: Any) -> None:
        """An opaque user-to-user command."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_ext_typing(self, ctx: Context, msg: Any) -> None:
        """A typing indicator."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    def on_cid_ext_signal(self, ctx: Context, msg: Any) -> None:
        """Another ephemeral signal."""
        self._push(ctx, generic_event(ctx.info.name, msg))

    # sessions --------------------------------------------------------------------------------------------
    def on_cid_other_server_kick_user(self, ctx: Context, msg: Any) -> None:
        """A cluster-wide kick: the user's sessions of the kicked class end (every session for an account
        disabled or deleted by an admin)."""
        svc = self.svc
        kicks = self.enums.KickReasonType
        for session in list(svc.sessions.of(msg.user_id)):
            mobile = bool(session.client_type & self.enums.ClientTypeBits.MOBILE)
            if msg.reason == self.enums.ServerKickReason.SERVER_KICK_ACCOUNT:
                svc.kick(session, kicks.KICK_REASON_DUPLICATE_USER)
            elif msg.reason == kicks.KICK_REASON_MOBILE_KICK:
                if not mobile:
                    svc.kick(session, msg.reason)
            elif ((session.client_type ^ msg.client_type) >> 4) == 0:
                svc.kick(session, msg.reason)

    def on_server_only(self, ctx: Context, msg: Any) -> None:
        """A delivered server-to-server frame no gateway session has a use for (a plugin's broadcast)."""
        log.debug("%s from a router: for msg servers only", ctx.info.name)

    def _push(self, ctx: Context, event: dict[str, Any]) -> None:
        """An event to the targets' sessions (every session for a relay to everyone)."""
        targets = delivery_targets(ctx)
        svc = self.svc
        svc.push_event(list(svc.sessions.by_user) if targets is None else targets, event)


def relay_handlers(svc: GatewayService) -> GatewayRelays:
    """The relay handler object, bound to the stack's generated `GatewayDeliveriesBase` when it has one (the
    ABC then proves every delivered command has a method)."""
    return generated_handlers(svc.ctx, GatewayRelays, "GatewayDeliveriesBase")(svc)

