"""Runtime services layer (msg): what routers deliver to this msg server: relays, kicks, presence
pushes, PC login status.

The spec lists these commands in the cluster file's msg `receives` (runtime.services.deliveries derives the
same set), and the generator makes them `MsgDeliveriesBase`: one abstract method per delivered command.
`InboundRelays` implements it; `relay_handlers` binds the two, so the ABC proves every delivered command has a
method and the base's `__mapping__` routes the router links' frames to them. A `Dispatcher` calls a method per
relayed frame and confirms the relay once it returns (the relay is then queued to the local clients). Every
method first offers the frame to the enabled plugins (`Plugins.on_relay`) and counts it
(`msg_relays_in_total`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.dispatch import Context
from runtime.link_dispatch import LinkContext
from runtime.plugins import plugin_commands
from runtime.services.base import generated_handlers
from runtime.services.deliveries import delivery_mapping, delivery_targets
from runtime.services.msg.delivery import same_class
from runtime.services.protocol import enums_of

if TYPE_CHECKING:
    from runtime.services.msg.service import MsgService

log = logging.getLogger("ttgen.msg.inbound")

Delivery = Callable[["InboundRelays", Context, Any], None]
FALLBACK = "on_other_relay"  # the method of a delivered command without its own (a plugin's, a spec's extra)


def delivery(method: Delivery) -> Delivery:
    """A delivery method: the frame is counted and offered to the enabled plugins first (one that takes it
    ends the delivery), then handled by `method`."""

    @functools.wraps(method)
    def deliver(self: InboundRelays, ctx: Context, msg: Any) -> None:
        self.m_inbound.inc()
        plugins = self.svc.plugins
        if plugins.plugins and plugins.on_relay(ctx.info.name, msg, delivery_targets(ctx)):
            return
        method(self, ctx, msg)

    return deliver


class InboundRelays:
    """The handler object of the links to routers: one method per delivered command (the spec's msg
    `receives`). Chat messages become local deliveries tracked for retransmit like local ones; the rest are
    pushed to the targets' local sessions (every session for a relay to everyone)."""

    def __init__(self, svc: MsgService) -> None:
        self.svc = svc
        self.proto = svc.proto
        reg = svc.ctx.registry
        self.__mapping__ = delivery_mapping(self, reg, FALLBACK)
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

    # chat ------------------------------------------------------------------------------------------------
    @delivery
    def on_cid_msg_data(self, ctx: Context, msg: Any) -> None:
        """A stored chat message for the targets' local sessions, tracked for retransmit until acked."""
        self._chat(ctx, msg)

    @delivery
    def on_cid_ext_msg_burn(self, ctx: Context, msg: Any) -> None:
        """A stored burn-after-reading message, delivered as a chat message."""
        self._chat(ctx, msg)

    # presence --------------------------------------------------------------------------------------------
    @delivery
    def on_cid_buddy_list_status_notify(self, ctx: Context, msg: Any) -> None:
        """One user's presence changed: coalesced again for the local sessions
        (runtime.services.msg.presence)."""
        self._presence(ctx, msg)

    @delivery
    def on_cid_buddy_list_users_status_response(self, ctx: Context, msg: Any) -> None:
        """Several users' presence changes (the presence policy's batch push)."""
        self._presence(ctx, msg)

    # sessions --------------------------------------------------------------------------------------------
    @delivery
    def on_cid_other_server_kick_user(self, ctx: Context, msg: Any) -> None:
        """A cluster-wide kick: the user's local sessions of the kicked class end (every session for an
        account disabled or deleted by an admin; the PC sessions for a mobile's kick)."""
        svc = self.svc
        handlers = svc.handlers
        for st in list(svc.states_of(msg.user_id)):
            if msg.reason == self.kick_account:
                handlers.kick(st, self.kick_duplicate)
            elif msg.reason == self.kick_mobile:
                if not st.mobile:
                    handlers.kick(st, msg.reason)
            elif same_class(st.client_type, msg.client_type):
                handlers.kick(st, msg.reason)

    @delivery
    def on_cid_other_login_status_notify(self, ctx: Context, msg: Any) -> None:
        """The user's PC came or went: the user's local mobile sessions are told ("your PC is online")."""
        note = self.proto.new(
            "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY",
            user_id=msg.user_id,
            login_stat=self.online if msg.login_status else self.offline,
        )
        self.svc.handlers.fan_out(
            "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY", note, [msg.user_id], mobile_only=True
        )

    # groups ----------------------------------------------------------------------------------------------
    @delivery
    def on_cid_group_change_member_notify(self, ctx: Context, msg: Any) -> None:
        """A group's members changed: the cached member list is stale; the notice goes to the targets."""
        self.svc.group_members.pop(msg.group_id, None)
        self._fan_out(ctx, msg)

    # pushed to the targets as they came --------------------------------------------------------------------
    @delivery
    def on_cid_buddy_list_remove_session_notify(self, ctx: Context, msg: Any) -> None:
        """A session was deleted on another device."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_buddy_list_sign_info_changed_notify(self, ctx: Context, msg: Any) -> None:
        """A signature changed."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_msg_read_notify(self, ctx: Context, msg: Any) -> None:
        """A session was read on another device."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_file_notify(self, ctx: Context, msg: Any) -> None:
        """A file offer or a ready offline file."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_switch_p2p_cmd(self, ctx: Context, msg: Any) -> None:
        """An opaque user-to-user command."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_ext_msg_burned_notify(self, ctx: Context, msg: Any) -> None:
        """A burn-after-reading message was read and destroyed."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_ext_msg_recall_notify(self, ctx: Context, msg: Any) -> None:
        """A message was recalled."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_ext_msg_edit_notify(self, ctx: Context, msg: Any) -> None:
        """A message's text was replaced."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_ext_typing(self, ctx: Context, msg: Any) -> None:
        """A typing indicator."""
        self._fan_out(ctx, msg)

    @delivery
    def on_cid_ext_signal(self, ctx: Context, msg: Any) -> None:
        """Another ephemeral signal."""
        self._fan_out(ctx, msg)

    # any other delivered command ---------------------------------------------------------------------------
    @delivery
    def on_other_relay(self, ctx: Context, msg: Any) -> None:
        """A delivered command without a method of its own: a plugin's frame no enabled plugin took, or a
        command of another spec (its presence pushes when the policy names other commands): pushed to the
        targets."""
        self._presence(ctx, msg)

    # ------------------------------------------------------------------------------------------------------
    def _chat(self, ctx: Context, msg: Any) -> None:
        body = ctx.body if isinstance(ctx, LinkContext) else b""
        self.svc.handlers.deliver_chat(
            ctx.info.name, msg, delivery_targets(ctx) or (), body=bytes(body) if body else None
        )

    def _presence(self, ctx: Context, msg: Any) -> None:
        """A presence push (runtime.services.msg.presence takes the policy's commands), else pushed as it
        came."""
        if not self.svc.presence.on_relay(ctx.info.name, msg):
            self._fan_out(ctx, msg)

    def _fan_out(self, ctx: Context, msg: Any) -> None:
        """The frame to the targets' local sessions (every local session for a relay to everyone)."""
        svc = self.svc
        targets = delivery_targets(ctx)
        svc.handlers.fan_out(ctx.info.name, msg, targets if targets is not None else list(svc.sessions))


def relay_handlers(svc: MsgService) -> InboundRelays:
    """The delivery handler object, bound to the stack's generated `MsgDeliveriesBase` when it has one (the
    ABC then proves every delivered command has a method). A delivered command some plugin module declares
    (e.g. the shake plugin's CID_SHAKE_SHARE) is the plugins' to take: it gets the fallback method."""
    base = getattr(svc.ctx.servers, "MsgDeliveriesBase", None) if svc.ctx.servers is not None else None
    namespace: dict[str, Any] = {}
    if base is not None:
        owned = {"on_" + name.lower() for name in plugin_commands()}
        fallback = InboundRelays.on_other_relay
        namespace = {
            name: fallback
            for name in getattr(base, "__abstractmethods__", ())
            if name in owned and not hasattr(InboundRelays, name)
        }
    return generated_handlers(svc.ctx, InboundRelays, "MsgDeliveriesBase", namespace)(svc)

