"""Runtime services layer (msg): chat handlers: send (1:1, group, burn), acks, read acks, recall, edit,
relays."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message

from runtime.codec_legacy import LegacyText
from runtime.dispatch import Context
from runtime.framing import Frame
from runtime.monitor.metrics import Counter
from runtime.services.contracts import StoreAttempt, StoreResult, StoreTokens
from runtime.services.links import FLAG_RELAY, Proto, relay_head
from runtime.services.msg.common import BizPool, Fanout, GroupCache, LocalSessions, client_state, now
from runtime.services.msg.delivery import ChatKinds, ClientState, DeliveryTracker, delivery_key
from runtime.services.msg.routing import RouterPool
from runtime.services.protocol import command_ids_of, enums_of

if TYPE_CHECKING:
    from generated.teamtalk import IM_Ext_pb2 as ext
    from generated.teamtalk import IM_Message_pb2 as message
    from generated.teamtalk import IM_SwitchService_pb2 as switch
    from runtime.services.contracts import DirectStore


class ChatHandlers:
    """IMMsgData and everything that follows a message's life."""

    def __init__(
        self,
        proto: Proto,
        *,
        sessions: LocalSessions,
        groups: GroupCache,
        biz: BizPool,
        routers: RouterPool,
        tracker: DeliveryTracker,
        fanout: Fanout,
        m_msgs_in: Counter,
        m_store_retries: Counter,
        m_store_unknown: Counter,
        legacy: LegacyText | None = None,
    ) -> None:
        self.proto = proto
        self.sessions = sessions
        self.groups = groups
        self.biz = biz
        self.routers = routers
        self.tracker = tracker
        self.fanout = fanout
        self.m_msgs_in = m_msgs_in
        self.m_store_retries = m_store_retries
        self.m_store_unknown = m_store_unknown
        self.legacy = legacy  # TeamTalk's text codec for original clients (services.msg.legacy_key), or None
        self.cmd = command_ids_of(proto.registry)
        enums = enums_of(proto.registry)
        # Plain ints on the hot path (an IntEnum member costs a lookup and a method call per operation).
        self._group_bit = enums.MsgTypeBits.GROUP
        self._single = int(enums.SessionType.SESSION_TYPE_SINGLE)
        self._group = int(enums.SessionType.SESSION_TYPE_GROUP)
        self._kinds = ChatKinds.of(enums)
        self._ack_class: Any = proto.info(self.cmd.CID_MSG_DATA_ACK).message_class
        self._tokens = StoreTokens()
        self._data_name = self.cmd.CID_MSG_DATA.name
        self._burn_name = self.cmd.CID_EXT_MSG_BURN.name
        self._cids = {name: proto.cid(name) for name in (self._data_name, self._burn_name) if proto.has(name)}

    def send_burn(self, ctx: Context, msg: message.IMMsgData) -> message.IMMsgDataAck | None:
        """A burn-after-reading 1:1 message: stored flagged, destroyed when the recipient reads it."""
        return self.send(ctx, msg, self._burn_name)

    def send(
        self, ctx: Context, msg: message.IMMsgData, command: str | None = None
    ) -> message.IMMsgDataAck | None:
        """IMMsgData (`command` None) or a burn message: store through biz, ack the sender with the durable
        id, deliver to every device of every party. The hot path. It never suspends: biz's answer arrives in
        a callback that acks and fans out, so no task, future or timer is made per message (the dispatcher
        runs non-suspending handlers inline). Returns the ack only for a refusal decided here."""
        if command is None:
            command = self._data_name
        self.m_msgs_in.value += 1  # in place, no call (once per message)
        st = client_state(ctx)
        user = st.user_id
        is_group = bool(msg.msg_type & self._group_bit)
        to = msg.to_session_id
        if not msg.msg_data or (not is_group and to == user) or to == 0:
            return self.ack(user, to, is_group)  # msg_id 0: refused (the input stage normally drops these)
        if self.legacy is not None:  # an original TeamTalk client's text: stored as the text itself
            self.legacy.inbound(ctx.link, msg)
        link = self.biz.link(user)
        msg.from_user_id = user
        version = self.groups.version(to) if is_group else 0
        # A message without a client msg id gets a token of ours, so a store sent again after the link to biz
        # dropped is answered with the id already stored (runtime.services.contracts).
        attempt = StoreAttempt(msg, self._tokens, group=is_group, version=version)
        cid = self._cids[command]
        pending = _PendingStore(self, ctx, st, command, cid, attempt, is_group)
        if link is None:  # no biz reachable (one restarting?): tried again after the attempt's delays
            pending.stored(None)
            return None
        pending.sent = True  # before the request: a link may answer (or fail) it at once
        direct = link.local_peer
        if direct is not None:  # biz shares this process (runtime.inprocess): a call, no frame
            cast("DirectStore", direct).store_direct(user, msg, command == self._burn_name, pending.answered)
            return None
        head = st.envelope or relay_head((user,))  # made at login (user is st.user_id)
        if not link.request(cid, attempt.request, pending.stored, flag=FLAG_RELAY, head=head):
            pending.sent = False  # it never left
            pending.stored(None)
        return None

    def ack(self, user: int, to: int, is_group: bool, msg_id: int = 0) -> message.IMMsgDataAck:
        """The sender's IMMsgDataAck (msg id 0: not stored)."""
        ack: message.IMMsgDataAck = self._ack_class()  # (no cast() call: once per message)
        ack.user_id = user
        ack.session_id = to
        ack.msg_id = msg_id
        ack.session_type = self._group if is_group else self._single  # type: ignore[assignment]
        return ack

    def stored(
        self,
        ctx: Context,
        st: ClientState,
        command: str,
        cid: int,
        stored: message.IMMsgData,
        result: StoreResult,
        is_group: bool,
    ) -> None:
        """Biz answered: `stored` is the sent message; the reply carries its durable id and time only."""
        user, to = st.user_id, stored.to_session_id
        msg_id = result.message.msg_id
        if msg_id == 0:
            ctx.reply(self.ack(user, to, is_group))
            return
        stored.msg_id, stored.create_time = msg_id, result.message.create_time
        stored.ClearField("attach_data")
        ctx.reply(self.ack(user, to, is_group, msg_id))  # stored and committed: now the sender hears of it
        targets: list[int] | tuple[int, int]
        if is_group:
            if result.members is not None:
                self.groups.store(to, result.version, result.members)
            targets = self.groups.cached(to, [user])
        else:
            targets = (user, to)
        wire = stored.SerializeToString()
        self.deliver(command, stored, targets, skip=st, body=wire)
        self.routers.relay(cid, wire, targets)

    def deliver(
        self,
        command: str,
        msg: message.IMMsgData,
        targets: Any,
        skip: ClientState | None = None,
        body: bytes | None = None,
    ) -> None:
        """Local delivery with retransmit tracking (every connection of every target but `skip`, the sending
        connection: routers never relay a message back to the server it came from)."""
        tracker = self.tracker
        by_user = self.sessions.by_user
        for uid in targets:
            states = by_user.get(uid)
            if not states or (len(states) == 1 and states[0] is skip):
                continue
            key = delivery_key(uid, msg, self._kinds)
            for st in states:
                if st is not skip:
                    tracker.deliver(st, command, msg, key, body)

    def data_ack(self, ctx: Context, msg: message.IMMsgDataAck) -> None:
        """The client received a delivered message: stop retransmitting it."""
        st = client_state(ctx)
        self.tracker.ack(st, (msg.session_type, msg.session_id, msg.msg_id))

    async def read_ack(self, ctx: Context, msg: message.IMMsgDataReadAck) -> None:
        """Clear unread through biz; tell the user's other devices; erase burned messages everywhere."""
        await self._read(ctx, msg, self.cmd.CID_MSG_READ_ACK.name)

    async def burn_read(self, ctx: Context, msg: ext.IMBurnReadReq) -> None:
        """The recipient opened a burn-after-reading message."""
        await self._read(ctx, msg, self.cmd.CID_EXT_MSG_BURN_READ.name)

    async def _read(
        self, ctx: Context, msg: message.IMMsgDataReadAck | ext.IMBurnReadReq, command: str
    ) -> None:
        st = client_state(ctx)
        user = st.user_id
        msg.user_id = user
        rsp = await self.biz.call(command, user, msg)
        # biz answers a refused read (not a member, no such session) with the read ack itself, msg id 0; an
        # accepted one with the list of burned ids. Only an accepted read is synced to the other devices.
        if rsp is None or not isinstance(
            rsp, self.proto.info(self.cmd.CID_MSG_GET_BY_MSG_ID_RES).message_class
        ):
            return
        cmd = self.cmd
        notify = self.proto.new(
            cmd.CID_MSG_READ_NOTIFY,
            user_id=user,
            session_id=msg.session_id,
            msg_id=msg.msg_id,
            session_type=msg.session_type,
        )
        self.fanout.notify(cmd.CID_MSG_READ_NOTIFY.name, notify, [user], skip=st)
        burned = [m.msg_id for m in cast("message.IMGetMsgByIdRsp", rsp).msg_list]
        if burned and msg.session_type == self._single:
            when = now()
            for mid in burned:
                note = self.proto.new(
                    cmd.CID_EXT_MSG_BURNED_NOTIFY,
                    from_user_id=msg.session_id,
                    to_session_id=user,
                    session_type=self._single,
                    msg_id=mid,
                    reader_id=user,
                    burn_time=when,
                )
                self.fanout.notify(cmd.CID_EXT_MSG_BURNED_NOTIFY.name, note, [user, msg.session_id])

    async def _parties(self, user: int, session_type: int, session_id: int) -> list[int]:
        """Whose devices hear of a change to a message of this session: a group's members, or both users."""
        if session_type == self._group:
            return await self.groups.members(user, session_id)
        return [user, session_id]

    async def recall(self, ctx: Context, msg: ext.IMMsgRecallReq) -> Message:
        """The sender withdraws a message; every device of every party is told to remove it."""
        st = client_state(ctx)
        user = st.user_id
        msg.user_id = user
        cmd = self.cmd
        rsp = cast(
            "ext.IMMsgRecallRsp | None", await self.biz.call(cmd.CID_EXT_MSG_RECALL_REQ.name, user, msg)
        )
        if rsp is None:
            return self.proto.new(
                cmd.CID_EXT_MSG_RECALL_RSP,
                user_id=user,
                session_type=msg.session_type,
                session_id=msg.session_id,
                msg_id=msg.msg_id,
                result_code=enums_of(self.proto.registry).RecallResult.RECALL_NOT_FOUND,
            )
        rsp.ClearField("attach_data")
        if rsp.result_code == 0:
            targets = await self._parties(user, msg.session_type, msg.session_id)
            note = self.proto.new(
                cmd.CID_EXT_MSG_RECALL_NOTIFY,
                from_user_id=user,
                to_session_id=msg.session_id,
                session_type=msg.session_type,
                msg_id=msg.msg_id,
                recall_time=now(),
            )
            self.fanout.notify(cmd.CID_EXT_MSG_RECALL_NOTIFY.name, note, targets, skip=st)
        return rsp

    async def edit(self, ctx: Context, msg: ext.IMMsgEditReq) -> Message:
        """The sender replaces a message's text; every device of every party gets the new text."""
        st = client_state(ctx)
        user = st.user_id
        msg.user_id = user
        cmd = self.cmd
        rsp = cast("ext.IMMsgEditRsp | None", await self.biz.call(cmd.CID_EXT_MSG_EDIT_REQ.name, user, msg))
        if rsp is None:
            return self.proto.new(
                cmd.CID_EXT_MSG_EDIT_RSP,
                user_id=user,
                session_type=msg.session_type,
                session_id=msg.session_id,
                msg_id=msg.msg_id,
                result_code=enums_of(self.proto.registry).EditResult.EDIT_NOT_FOUND,
                edit_time=0,
            )
        rsp.ClearField("attach_data")
        if rsp.result_code == 0:
            targets = await self._parties(user, msg.session_type, msg.session_id)
            note = self.proto.new(
                cmd.CID_EXT_MSG_EDIT_NOTIFY,
                from_user_id=user,
                to_session_id=msg.session_id,
                session_type=msg.session_type,
                msg_id=msg.msg_id,
                msg_data=msg.msg_data,
                edit_time=rsp.edit_time,
            )
            self.fanout.notify(cmd.CID_EXT_MSG_EDIT_NOTIFY.name, note, targets, skip=st)
        return rsp

    async def p2p(self, ctx: Context, msg: switch.IMP2PCmdMsg) -> None:
        """Opaque user-to-user command: relayed to both users' devices, never stored."""
        st = client_state(ctx)
        msg.from_user_id = st.user_id
        self.fanout.notify(self.cmd.CID_SWITCH_P2P_CMD.name, msg, [st.user_id, msg.to_user_id], skip=st)

    async def typing(self, ctx: Context, msg: ext.IMTypingNotify) -> None:
        """Typing indicator: to the peer's devices or the group's online members; ephemeral."""
        await self._ephemeral(ctx, msg, self.cmd.CID_EXT_TYPING.name)

    async def signal(self, ctx: Context, msg: ext.IMEphemeralSignal) -> None:
        """Other ephemeral signals, relayed like typing."""
        await self._ephemeral(ctx, msg, self.cmd.CID_EXT_SIGNAL.name)

    async def _ephemeral(
        self, ctx: Context, msg: ext.IMTypingNotify | ext.IMEphemeralSignal, command: str
    ) -> None:
        st = client_state(ctx)
        msg.from_user_id = st.user_id
        if msg.session_type == self._group:
            targets = await self.groups.members(st.user_id, msg.to_session_id)
            if st.user_id not in targets:
                return
        else:
            targets = [msg.to_session_id]
        self.fanout.notify(command, msg, targets, skip=st)


class _PendingStore:
    """A message sent to biz, waiting for its durable id: drives its `StoreAttempt` from the link's callbacks.
    One small object per message: a closure over the same state cost a function, a tuple and a cell per
    variable (all garbage-collector tracked).

    If the link to biz drops before the answer, the same request is sent again (to the same biz once it is
    back, or the next live one) after the attempt's delays: biz answers a request it already stored with
    that id (by client msg id, or by msg's token), so the message is stored once and the sender acked with
    its id."""

    __slots__ = ("attempt", "chat", "cid", "command", "ctx", "is_group", "sent", "st")

    def __init__(
        self,
        chat: ChatHandlers,
        ctx: Context,
        st: ClientState,
        command: str,
        cid: int,
        attempt: StoreAttempt,
        is_group: bool,
    ) -> None:
        self.chat = chat
        self.ctx = ctx
        self.st = st
        self.command = command
        self.cid = cid
        self.attempt = attempt
        self.is_group = is_group
        self.sent = False  # whether a request left for biz (else nothing can have been stored)

    def answered(self, reply: Any) -> None:
        """Biz of this shard answered a direct call (`DirectStore`) with the reply (None: it failed)."""
        result = self.attempt.answer_message(reply)
        if result is not None:
            chat = self.chat
            chat.stored(self.ctx, self.st, self.command, self.cid, self.attempt.msg, result, self.is_group)
        else:
            self.unknown()

    def stored(self, frame: Frame | None) -> None:
        """Biz answered (`frame`), or the link to it was lost (None)."""
        attempt = self.attempt
        if frame is not None:
            result = attempt.answer(frame.body)
            if result is not None:
                chat = self.chat
                chat.stored(self.ctx, self.st, self.command, self.cid, attempt.msg, result, self.is_group)
                return
        # No answer (the link was lost), or an empty one (biz failed storing it): whether the message was
        # stored is unknown, so the same request goes again (biz answers a stored one with its id).
        delay = attempt.retry_delay()
        if delay is not None:
            self.chat.m_store_retries.inc()
            asyncio.get_running_loop().call_later(delay, self.retry)
            return
        if not self.sent:
            # No biz was reachable for any attempt: nothing was stored, msg id 0 says so, and the dedup
            # window forgets the request, so the client's retransmit is processed again.
            ack = self.chat.ack(self.st.user_id, attempt.msg.to_session_id, self.is_group)
            self.ctx.reply(ack, remember=False)
            return
        self.unknown()

    def unknown(self) -> None:
        """Biz stayed out of reach, or kept failing: the message may have been stored before its answer was
        lost, so it is not refused (an ack with msg id 0 says "not stored"). No ack: the client's retransmit
        (same client msg id) is processed afresh, and biz answers it with the stored id if there is one. The
        dedup window forgets the request."""
        self.chat.m_store_unknown.inc()
        self.ctx.forget()

    def retry(self) -> None:
        """Send the request again to the biz instance for this sender (flagged as a resend)."""
        user = self.st.user_id
        link = self.chat.biz.link(user)
        request = self.attempt.resend()
        sent, self.sent = self.sent, True
        if link is None or not link.request(
            self.cid, request, self.stored, flag=FLAG_RELAY, head=relay_head((user,))
        ):
            self.sent = sent  # this attempt never left
            self.stored(None)
