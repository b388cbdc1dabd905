"""Runtime services layer (msg): chat handlers: send (1:1, group, burn), acks, read acks, recall, relays."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from runtime.dispatch import Context
from runtime.framing import Frame
from runtime.services.biz.convert import (
    STORE_RETRY_DELAYS,
    StoreTokens,
    pack_store_request,
    pack_version,
    resend_request,
    unpack_store_reply,
)
from runtime.services.links import FLAG_RELAY, relay_head
from runtime.services.msg.common import HandlerBase
from runtime.services.msg.delivery import GROUP_MSG_BIT, delivery_key

SINGLE, GROUP = 1, 2


class ChatHandlers(HandlerBase):
    """IMMsgData and everything that follows a message's life."""

    def __init__(self, svc: Any) -> None:
        super().__init__(svc)
        self._ack_class = self.proto.info("CID_MSG_DATA_ACK").message_class
        self._data_class = self.proto.info("CID_MSG_DATA").message_class
        self._tokens = StoreTokens()
        self._cids = {
            name: self.proto.cid(name)
            for name in ("CID_MSG_DATA", "CID_EXT_MSG_BURN")
            if self.proto.has(name)
        }

    def on_cid_msg_data(self, ctx: Context, msg: Any) -> Any:
        """Store through biz, ack the sender with the durable id, deliver to every device of every party.
        A plain function (the hot path never suspends), which the dispatcher calls without a coroutine."""
        return self._send_chat(ctx, msg, "CID_MSG_DATA")

    def on_cid_ext_msg_burn(self, ctx: Context, msg: Any) -> Any:
        """A burn-after-reading 1:1 message: stored flagged, destroyed when the recipient reads it."""
        return self._send_chat(ctx, msg, "CID_EXT_MSG_BURN")

    def _send_chat(self, ctx: Context, msg: Any, command: str) -> Any:
        """The hot path. It never suspends: biz's answer arrives in a callback that acks and fans out, so no
        task, future or timer is made per message (the dispatcher runs non-suspending handlers inline).
        Returns the ack only for a refusal decided here."""
        svc = self.svc
        svc.m_msgs_in.inc()
        st = self.state(ctx)
        user = st.user_id
        is_group = bool(msg.msg_type & GROUP_MSG_BIT)
        to = msg.to_session_id
        if not msg.msg_data or (not is_group and to == user) or to == 0:
            return self._ack(user, to, is_group)  # msg_id 0: refused (the input stage normally drops these)
        if svc.legacy is not None:  # an original TeamTalk client's text: stored as the text itself
            svc.legacy.inbound(ctx.link, msg)
        link = svc.biz_link(user)
        if link is None:
            # Not stored: a retransmit is processed again, not answered with 0.
            ctx.reply(self._ack(user, to, is_group), remember=False)
            return None
        msg.from_user_id = user
        version = 0
        if is_group:
            cached = svc.group_members.get(to)
            version = cached[0] if cached else 0
        if msg.msg_id == 0:
            # No client msg id for biz to deduplicate by: a token of ours, so a store sent again after the
            # link to biz dropped is answered with the id already stored (runtime.services.biz.handlers_msg).
            token = self._tokens.next()
            msg.attach_data = pack_store_request(version, token)
        elif is_group:
            msg.attach_data = pack_version(version)
        elif msg.HasField("attach_data"):
            msg.ClearField("attach_data")
        cid = self._cids[command]
        request = msg.SerializeToString()
        pending = _PendingStore(self, ctx, st, command, cid, msg, is_group, request)
        link.request(cid, request, pending.stored, flag=FLAG_RELAY, head=relay_head((user,)))
        return None

    def _ack(self, user: int, to: int, is_group: bool, msg_id: int = 0) -> Any:
        ack: Any = self._ack_class()
        ack.user_id = user
        ack.session_id = to
        ack.msg_id = msg_id
        ack.session_type = GROUP if is_group else SINGLE
        return ack

    def _stored(
        self,
        ctx: Context,
        st: Any,
        command: str,
        cid: int,
        stored: Any,
        body: bytes | memoryview,
        is_group: bool,
    ) -> None:
        """Biz answered: `stored` is the sent message; the reply carries its durable id and time only."""
        reply: Any = self._data_class.FromString(bytes(body))
        user, to = st.user_id, stored.to_session_id
        msg_id = reply.msg_id
        if msg_id == 0:
            ctx.reply(self._ack(user, to, is_group))
            return
        stored.msg_id, stored.create_time = msg_id, reply.create_time
        stored.ClearField("attach_data")
        ctx.reply(self._ack(user, to, is_group, msg_id))  # stored and committed: now the sender hears of it
        if is_group:
            _result, version, _dup, members = unpack_store_reply(reply.attach_data)
            if members is not None:
                self.svc.group_members[to] = (version, members)
            targets: Any = self.svc.group_members.get(to, (0, [user]))[1]
        else:
            targets = (user, to)
        wire = stored.SerializeToString()
        self.deliver_chat(command, stored, targets, skip=st, body=wire)
        self.svc.routers.relay(cid, wire, targets)

    def deliver_chat(
        self, command: str, msg: Any, targets: Any, skip: Any = None, body: bytes | None = None
    ) -> None:
        """Local delivery with retransmit tracking (every connection of every target but `skip`, the sending
        connection: routers never relay a message back to the server it came from)."""
        tracker = self.svc.tracker
        sessions = self.svc.sessions
        for uid in targets:
            states = sessions.get(uid)
            if not states or (len(states) == 1 and states[0] is skip):
                continue
            key = delivery_key(uid, msg)
            for st in states:
                if st is not skip:
                    tracker.deliver(st, command, msg, key, body)

    def on_cid_msg_data_ack(self, ctx: Context, msg: Any) -> None:
        """The client received a delivered message: stop retransmitting it."""
        st = self.state(ctx)
        self.svc.tracker.ack(st, (msg.session_type, msg.session_id, msg.msg_id))

    async def on_cid_msg_read_ack(self, ctx: Context, msg: Any) -> None:
        """Clear unread through biz; tell the user's other devices; erase burned messages everywhere."""
        await self._read(ctx, msg, "CID_MSG_READ_ACK")

    async def on_cid_ext_msg_burn_read(self, ctx: Context, msg: Any) -> None:
        """The recipient opened a burn-after-reading message."""
        await self._read(ctx, msg, "CID_EXT_MSG_BURN_READ")

    async def _read(self, ctx: Context, msg: Any, command: str) -> None:
        st = self.state(ctx)
        user = st.user_id
        msg.user_id = user
        rsp = await self.biz_call(command, user, msg)
        # biz answers a refused read (not a member, no such session) with the read ack itself, msg id 0; an
        # accepted one with the list of burned ids. Only an accepted read is synced to the other devices.
        if rsp is None or not isinstance(rsp, self.proto.info("CID_MSG_GET_BY_MSG_ID_RES").message_class):
            return
        notify: Any = self.proto.new(
            "CID_MSG_READ_NOTIFY",
            user_id=user,
            session_id=msg.session_id,
            msg_id=msg.msg_id,
            session_type=msg.session_type,
        )
        self.notify("CID_MSG_READ_NOTIFY", notify, [user], skip=st)
        burned = [m.msg_id for m in cast(Any, rsp).msg_list]
        if burned and msg.session_type == SINGLE:
            now = self.now()
            for mid in burned:
                note: Any = self.proto.new(
                    "CID_EXT_MSG_BURNED_NOTIFY",
                    from_user_id=msg.session_id,
                    to_session_id=user,
                    session_type=SINGLE,
                    msg_id=mid,
                    reader_id=user,
                    burn_time=now,
                )
                self.notify("CID_EXT_MSG_BURNED_NOTIFY", note, [user, msg.session_id])

    async def on_cid_ext_msg_recall_req(self, ctx: Context, msg: Any) -> Any:
        """The sender withdraws a message; every device of every party is told to remove it."""
        st = self.state(ctx)
        user = st.user_id
        msg.user_id = user
        rsp = await self.biz_call("CID_EXT_MSG_RECALL_REQ", user, msg)
        if rsp is None:
            return self.proto.new(
                "CID_EXT_MSG_RECALL_RSP",
                user_id=user,
                session_type=msg.session_type,
                session_id=msg.session_id,
                msg_id=msg.msg_id,
                result_code=1,
            )
        rsp.ClearField("attach_data")
        if rsp.result_code == 0:
            if msg.session_type == GROUP:
                targets = await self.group_members(user, msg.session_id)
            else:
                targets = [user, msg.session_id]
            note: Any = self.proto.new(
                "CID_EXT_MSG_RECALL_NOTIFY",
                from_user_id=user,
                to_session_id=msg.session_id,
                session_type=msg.session_type,
                msg_id=msg.msg_id,
                recall_time=self.now(),
            )
            self.notify("CID_EXT_MSG_RECALL_NOTIFY", note, targets, skip=st)
        return rsp

    async def on_cid_ext_msg_edit_req(self, ctx: Context, msg: Any) -> Any:
        """The sender replaces a message's text; every device of every party gets the new text."""
        st = self.state(ctx)
        user = st.user_id
        msg.user_id = user
        rsp = await self.biz_call("CID_EXT_MSG_EDIT_REQ", user, msg)
        if rsp is None:
            return self.proto.new(
                "CID_EXT_MSG_EDIT_RSP",
                user_id=user,
                session_type=msg.session_type,
                session_id=msg.session_id,
                msg_id=msg.msg_id,
                result_code=1,
                edit_time=0,
            )
        rsp.ClearField("attach_data")
        if rsp.result_code == 0:
            if msg.session_type == GROUP:
                targets = await self.group_members(user, msg.session_id)
            else:
                targets = [user, msg.session_id]
            note: Any = self.proto.new(
                "CID_EXT_MSG_EDIT_NOTIFY",
                from_user_id=user,
                to_session_id=msg.session_id,
                session_type=msg.session_type,
                msg_id=msg.msg_id,
                msg_data=msg.msg_data,
                edit_time=rsp.edit_time,
            )
            self.notify("CID_EXT_MSG_EDIT_NOTIFY", note, targets, skip=st)
        return rsp

    async def on_cid_switch_p2p_cmd(self, ctx: Context, msg: Any) -> None:
        """Opaque user-to-user command: relayed to both users' devices, never stored."""
        st = self.state(ctx)
        msg.from_user_id = st.user_id
        self.notify("CID_SWITCH_P2P_CMD", msg, [st.user_id, msg.to_user_id], skip=st)

    async def on_cid_ext_typing(self, ctx: Context, msg: Any) -> None:
        """Typing indicator: to the peer's devices or the group's online members; ephemeral."""
        await self._ephemeral(ctx, msg, "CID_EXT_TYPING")

    async def on_cid_ext_signal(self, ctx: Context, msg: Any) -> None:
        """Other ephemeral signals, relayed like typing."""
        await self._ephemeral(ctx, msg, "CID_EXT_SIGNAL")

    async def _ephemeral(self, ctx: Context, msg: Any, command: str) -> None:
        st = self.state(ctx)
        msg.from_user_id = st.user_id
        if msg.session_type == GROUP:
            targets = await self.group_members(st.user_id, msg.to_session_id)
            if st.user_id not in targets:
                return
        else:
            targets = [msg.to_session_id]
        self.notify(command, msg, targets, skip=st)


class _PendingStore:
    """A message sent to biz, waiting for its durable id. One small object per message: a closure over the
    same state cost a function, a tuple and a cell per variable (all garbage-collector tracked).

    If the link to biz drops before the answer, the same request is sent again (to the same biz once it is
    back, or the next live one) after STORE_RETRY_DELAYS: biz answers a request it already stored with that id
    (by client msg id, or by msg's token), so the message is stored once and the sender acked with its id.
    A resend with a token is flagged as one, so biz also asks storage for the token when its memory of tokens
    does not know it (a biz that crashed after its commit, before its answer); first sends never pay that."""

    __slots__ = ("attempts", "chat", "cid", "command", "ctx", "is_group", "msg", "request", "st")

    def __init__(
        self,
        chat: ChatHandlers,
        ctx: Context,
        st: Any,
        command: str,
        cid: int,
        msg: Any,
        is_group: bool,
        request: bytes,
    ) -> None:
        self.chat = chat
        self.ctx = ctx
        self.st = st
        self.command = command
        self.cid = cid
        self.msg = msg
        self.is_group = is_group
        self.request = request
        self.attempts = 0

    def stored(self, frame: Frame | None) -> None:
        """Biz answered (`frame`), or the link to it was lost (None)."""
        if frame is not None and frame.body:
            self.chat._stored(self.ctx, self.st, self.command, self.cid, self.msg, frame.body, self.is_group)
        elif frame is None and self.attempts < len(STORE_RETRY_DELAYS):
            delay = STORE_RETRY_DELAYS[self.attempts]
            self.attempts += 1
            self.chat.svc.m_store_retries.inc()
            asyncio.get_running_loop().call_later(delay, self.retry)
        else:
            # Biz refused without an answer, or stayed out of reach: msg_id 0, and the dedup window forgets
            # the request, so the client's retransmit is processed again rather than answered with 0.
            ack = self.chat._ack(self.st.user_id, self.msg.to_session_id, self.is_group)
            self.ctx.reply(ack, remember=False)

    def retry(self) -> None:
        """Send the same request again to the biz instance for this sender (flagged as a resend if it
        carries a token: the message is serialized again once, with the flag)."""
        msg = self.msg
        if not msg.msg_id and msg.HasField("attach_data"):
            flagged = resend_request(msg.attach_data)
            if flagged is not None:
                msg.attach_data = flagged
                self.request = msg.SerializeToString()
        user = self.st.user_id
        link = self.chat.svc.biz_link(user)
        if link is None or not link.request(
            self.cid, self.request, self.stored, flag=FLAG_RELAY, head=relay_head((user,))
        ):
            self.stored(None)
