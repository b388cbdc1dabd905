"""Runtime services layer (msg): the msg service's handlers, composed of components that are given their
collaborators explicitly (local sessions, group cache, biz pool, router pool, delivery tracker, fan-out):

- `SessionHandlers`: login (password and ticket), logout, kicks, resumption tickets, presence queries, the
  secure-session handshake;
- `BizForwarding`: client commands biz answers as they are, and the ones whose answer is also announced;
- `ChatHandlers` (runtime.services.msg.chat): sending, acks, read acks, recall, relays of chat;
- `FileRequestHandlers` (runtime.services.file.msg_side): IMFileReq and the offline-file commands.

`MsgHandlers` is the object the dispatcher routes to: one method per hosted command, each handing the request
to its component.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any, cast

from google.protobuf.message import Message

from runtime.auth.passwords import MAX_PLAIN_PASSWORD, wire_password
from runtime.auth.tickets import REVOKE_RETRY_DELAYS
from runtime.codec_legacy import LegacyText
from runtime.dispatch import Context
from runtime.errors import IntegrityError, StageError
from runtime.monitor.metrics import Counter
from runtime.services.file import FileRequestHandlers
from runtime.services.links import Proto, ResultCode, relay_head
from runtime.services.msg.chat import ChatHandlers
from runtime.services.msg.common import (
    BizPool,
    Fanout,
    GroupCache,
    LocalSessions,
    client_state,
    now,
    stamp_user,
    strip_attach,
)
from runtime.services.msg.delivery import ClientState, same_class
from runtime.services.msg.presence import LocalPresence
from runtime.services.msg.routing import RouterPool
from runtime.services.protocol import command_ids_of, enums_of
from runtime.services.refusals import answer_refusal
from runtime.stages.crypto import KeyExchange, derive_session_keys

if TYPE_CHECKING:
    from generated.teamtalk import IM_Buddy_pb2 as buddy
    from generated.teamtalk import IM_Ext_pb2 as ext
    from generated.teamtalk import IM_File_pb2 as file
    from generated.teamtalk import IM_Group_pb2 as group
    from generated.teamtalk import IM_Login_pb2 as login_pb
    from generated.teamtalk import IM_Message_pb2 as message
    from generated.teamtalk import IM_Server_pb2 as server
    from generated.teamtalk import IM_SwitchService_pb2 as switch

log = logging.getLogger("ttgen.msg")


class Counts:
    """What the session handlers report to the login servers and count."""

    def __init__(self, report: Any, m_ticket_logins: Counter, m_ticket_refused: Counter) -> None:
        self.report = report  # (user id, +1 / -1) -> None: IMUserCntUpdate to every login server
        self.m_ticket_logins = m_ticket_logins
        self.m_ticket_refused = m_ticket_refused


class SessionHandlers:
    """Login, logout, kicks, resumption tickets, presence queries and the handshake."""

    def __init__(
        self,
        proto: Proto,
        *,
        sessions: LocalSessions,
        biz: BizPool,
        routers: RouterPool,
        presence: LocalPresence,
        fanout: Fanout,
        push: Any,
        counts: Counts,
        max_conn: int,
        background: Any,
        md5_login: str = "allow",
    ) -> None:
        self.proto = proto
        self.md5_login = md5_login  # runtime.auth.MD5_LOGIN_POLICIES: where TeamTalk's MD5 login is accepted
        self.sessions = sessions
        self.biz = biz
        self.routers = routers
        self.presence = presence
        self.fanout = fanout
        self.push = push  # (link, command, message, body) -> sent
        self.counts = counts
        self.max_conn = max_conn
        self.background = background  # keeps a fire-and-forget task referenced until it ends
        self.cmd = command_ids_of(proto.registry)
        self.enums = enums_of(proto.registry)
        self.mobile_bit = self.enums.ClientTypeBits.MOBILE
        # IM.Ext.AeadSuite -> runtime.stages.crypto algorithm
        suites = self.enums.AeadSuite
        self.suites: dict[int, str] = {
            suites.AEAD_AES_256_GCM: "aes-256-gcm",
            suites.AEAD_CHACHA20_POLY1305: "chacha20-poly1305",
        }

    # connections -----------------------------------------------------------------------------------------
    def disconnected(self, link: Any) -> None:
        """A client connection closed: forget it, tell routers and login."""
        st = (link.data or {}).get("msg")
        if isinstance(st, ClientState):
            self.retire(st)

    def _status_update(self, st: ClientState, status: int) -> None:
        cid = self.cmd.CID_OTHER_USER_STATUS_UPDATE
        upd = self.proto.new(cid, user_status=status, user_id=st.user_id, client_type=st.client_type)
        self.routers.to_all(cid, upd.SerializeToString())

    def retire(self, st: ClientState) -> None:
        """Take a session out of service (idempotent): presence offline, load counter -1."""
        if not st.logged_in:
            return
        st.logged_in = False
        st.unacked.clear()
        if self.sessions.remove(st):
            self.presence.forget(st)
            self._status_update(st, self.presence.policy.offline)
            self.counts.report(st.user_id, -1)

    def kick(self, st: ClientState, reason: int) -> None:
        """Tell a session it was kicked, revoke its ticket, retire it and close it once the notice is
        written."""
        self._revoke(st.user_id, st.ticket_session)
        st.ticket_session = b""
        cid = self.cmd.CID_LOGIN_KICK_USER
        self.push(st.link, cid.name, self.proto.new(cid, user_id=st.user_id, kick_reason=reason), None)
        self.retire(st)
        st.link.close(f"kicked (reason {reason})")

    def _relay_kick(self, user_id: int, client_type: int, reason: int) -> None:
        cid = self.cmd.CID_OTHER_SERVER_KICK_USER
        kick = self.proto.new(cid, user_id=user_id, client_type=client_type, reason=reason)
        self.routers.relay(cid, kick.SerializeToString(), [user_id])

    # login -----------------------------------------------------------------------------------------------
    def secured(self, ctx: Context) -> bool:
        """Whether the connection completed the secure-session handshake (its session_aead frames are sealed:
        the unpack stage refuses a clear one)."""
        return "cipher" in ctx.link.extras()

    async def login(self, ctx: Context, msg: login_pb.IMLoginReq) -> Message | None:
        """TeamTalk's login with the MD5 hex of the password, where `md5_login` allows it."""
        refusal: tuple[ResultCode, str] | None = None
        if self.md5_login == "refuse":
            refusal = (ResultCode.DB_VALIDATE_FAILED, "MD5 logins are switched off: log in with the password")
        elif self.md5_login == "secure_only" and not self.secured(ctx):
            refusal = (ResultCode.DB_VALIDATE_FAILED, "MD5 logins need a secure session")
        return await self._check_password(ctx, msg, msg.password, refusal)

    async def password_login(self, ctx: Context, msg: ext.IMPasswordLoginReq) -> Message | None:
        """Log in with the password itself (never its MD5 hex on the wire), inside a secure session only: biz
        checks it as IMLoginReq's (argon2id of its MD5 hex; the same lockout and hashing share)."""
        refusal: tuple[ResultCode, str] | None = None
        if not self.secured(ctx):
            refusal = (ResultCode.DB_VALIDATE_FAILED, "password logins need a secure session")
        elif len(msg.password.encode("utf-8", "surrogatepass")) > MAX_PLAIN_PASSWORD:
            refusal = (ResultCode.DB_VALIDATE_FAILED, "password too long")
        wire = wire_password(msg.password) if refusal is None else ""
        return await self._check_password(ctx, msg, wire, refusal)

    async def _check_password(
        self,
        ctx: Context,
        msg: login_pb.IMLoginReq | ext.IMPasswordLoginReq,
        wire: str,
        refusal: tuple[ResultCode, str] | None,
    ) -> Message | None:
        """Authenticate through biz; enforce one PC and one mobile session per user, cluster-wide. A refusal
        given by the caller closes the connection without asking biz (no password is checked or counted)."""
        cmd = self.cmd
        res = cast(
            "login_pb.IMLoginRes",
            self.proto.new(cmd.CID_LOGIN_RES_USERLOGIN, server_time=now(), result_code=0),
        )
        st = client_state(ctx)
        if st.logged_in:
            res.result_code, res.result_string = ResultCode.DB_VALIDATE_FAILED, "already logged in"  # type: ignore[assignment]
            return res
        if refusal is None:
            refusal = self._login_gate()
        rsp: server.IMValidateRsp | None = None
        if refusal is None:
            req = self.proto.new(
                cmd.CID_OTHER_VALIDATE_REQ,
                user_name=msg.user_name,
                password=wire,
                attach_data=ctx.peer.rsplit(":", 1)[0].encode(),
            )
            rsp = cast(
                "server.IMValidateRsp | None", await self.biz.call(cmd.CID_OTHER_VALIDATE_REQ.name, 0, req)
            )
            if rsp is None:
                refusal = (ResultCode.NO_DB_SERVER, "biz did not answer")
            elif rsp.result_code == ResultCode.MSG_SERVER_FULL:  # biz's verify pool is saturated
                refusal = (ResultCode.MSG_SERVER_FULL, rsp.result_string or "login busy; try again later")
            elif rsp.result_code != 0:
                # The wire enum ends at 7: every validation refusal is DB_VALIDATE_FAILED, the text says why.
                refusal = (ResultCode.DB_VALIDATE_FAILED, rsp.result_string or "validation failed")
            elif self.sessions.count >= self.max_conn:
                # Checked again: logins validated concurrently all passed the first check.
                refusal = (ResultCode.MSG_SERVER_FULL, "msg server full")
        if refusal is not None:
            res.result_code, res.result_string = int(refusal[0]), refusal[1]  # type: ignore[assignment]
            ctx.reply(res)
            ctx.close(f"login refused: {refusal[1]}")
            return None
        if not ctx.link.conn or not ctx.link.conn.is_open:
            return None
        assert rsp is not None
        self._admit(ctx, st, rsp.user_info.user_id, msg.client_type)
        st.auth_time = now()
        res.online_status = msg.online_status
        res.user_info.CopyFrom(rsp.user_info)
        return res

    def _login_gate(self) -> tuple[ResultCode, str] | None:
        """Why no login can proceed on this server right now, or None."""
        if self.biz.link() is None:
            return (ResultCode.NO_DB_SERVER, "biz service unavailable")
        if not self.routers.available:
            return (ResultCode.NO_ROUTE_SERVER, "router service unavailable")
        if self.sessions.count >= self.max_conn:
            return (ResultCode.MSG_SERVER_FULL, "msg server full")
        return None

    def _admit(self, ctx: Context, st: ClientState, user_id: int, client_type: int) -> None:
        """An authenticated connection: register it, announce it, kick same-class sessions cluster-wide."""
        ctx.authenticate(user_id, client_type)
        st.user_id, st.client_type, st.logged_in = user_id, client_type, True
        st.envelope = relay_head((user_id,))  # what every store request of this session is sent with
        st.mobile = bool(client_type & self.mobile_bit)
        older = [o for o in self.sessions.of(user_id) if same_class(o.client_type, client_type)]
        self.sessions.add(st)
        # ONLINE goes out before the older session's OFFLINE, so a re-login does not flap presence.
        self._status_update(st, self.presence.policy.online)
        self.counts.report(user_id, +1)
        duplicate = self.enums.KickReasonType.KICK_REASON_DUPLICATE_USER
        for other in older:
            self.kick(other, duplicate)
        self._relay_kick(user_id, client_type, duplicate)

    # resumption tickets ----------------------------------------------------------------------------------
    async def ticket_login(self, ctx: Context, msg: ext.IMTicketLoginReq) -> Message | None:
        """Log in with a resumption ticket: biz checks the HMAC and consumes the ticket (no password hash);
        the answer carries the successor ticket. After a refused ticket the connection stays open for a
        password login (the rate limit of both commands still applies); when no login can proceed at all
        (biz or routers down, server full) it closes as after a refused password."""
        cmd = self.cmd
        codes = self.enums.TicketResult
        ok = int(codes.TICKET_OK)
        res = cast(
            "ext.IMTicketLoginRsp",
            self.proto.new(cmd.CID_EXT_TICKET_LOGIN_RSP, server_time=now(), result_code=codes.TICKET_OK),
        )
        st = client_state(ctx)
        if st.logged_in:
            res.result_code, res.result_string = codes.TICKET_UNAVAILABLE, "already logged in"  # type: ignore[assignment]
            return res
        gate = self._login_gate()
        rsp: ext.IMTicketVerifyRsp | None = None
        if gate is None:
            req = self.proto.new(
                cmd.CID_EXT_TICKET_VERIFY_REQ,
                ticket=msg.ticket,
                client_type=msg.client_type,
                device_id=msg.device_id,
                attach_data=ctx.peer.rsplit(":", 1)[0].encode(),
            )
            rsp = cast(
                "ext.IMTicketVerifyRsp | None",
                await self.biz.call(cmd.CID_EXT_TICKET_VERIFY_REQ.name, 0, req),
            )
        if rsp is None or rsp.result_code != ok:
            if rsp is None:
                res.result_code = codes.TICKET_UNAVAILABLE  # type: ignore[assignment]
                res.result_string = gate[1] if gate is not None else "biz did not answer"
            else:
                res.result_code, res.result_string = rsp.result_code, rsp.result_string or "ticket refused"
            self.counts.m_ticket_refused.inc()
            if gate is None and rsp is not None:
                return res
            ctx.reply(res)
            ctx.close(f"ticket login refused: {res.result_string}")
            return None
        if not ctx.link.conn or not ctx.link.conn.is_open:
            return None
        self._admit(ctx, st, rsp.user_info.user_id, msg.client_type)
        st.auth_time, st.ticket_session = rsp.auth_time, rsp.session_id
        self.counts.m_ticket_logins.inc()
        res.online_status = msg.online_status
        res.user_info.CopyFrom(rsp.user_info)
        res.ticket, res.expire_time = rsp.ticket, rsp.expire_time
        return res

    async def resume_ticket(self, ctx: Context, msg: ext.IMResumeTicketReq) -> Message:
        """Issue a resumption ticket to this logged-in connection (retiring the one issued before)."""
        cmd = self.cmd
        codes = self.enums.TicketResult
        res = cast(
            "ext.IMResumeTicketRsp",
            self.proto.new(cmd.CID_EXT_RESUME_TICKET_RSP, result_code=codes.TICKET_OK),
        )
        st = client_state(ctx)
        if not st.logged_in:
            res.result_code = codes.TICKET_NOT_LOGGED_IN  # type: ignore[assignment]
            return res
        req = self.proto.new(
            cmd.CID_EXT_TICKET_ISSUE_REQ,
            user_id=st.user_id,
            client_type=st.client_type,
            auth_time=st.auth_time,
            device_id=msg.device_id,
            previous_session=st.ticket_session,
        )
        rsp = cast(
            "ext.IMTicketIssueRsp | None",
            await self.biz.call(cmd.CID_EXT_TICKET_ISSUE_REQ.name, st.user_id, req),
        )
        if rsp is None:
            res.result_code = codes.TICKET_UNAVAILABLE  # type: ignore[assignment]
            return res
        if rsp.result_code != int(codes.TICKET_OK):
            res.result_code = rsp.result_code
            return res
        if not _still_logged_in(st):  # logged out or kicked while biz issued it: the ticket dies with it
            self._revoke(st.user_id, rsp.session_id)
            res.result_code = codes.TICKET_REVOKED  # type: ignore[assignment]
            return res
        st.ticket_session = rsp.session_id
        res.ticket, res.expire_time = rsp.ticket, rsp.expire_time
        return res

    def _revoke(self, user_id: int, session_id: bytes) -> asyncio.Future[Message | None] | None:
        """Tell biz a session's ticket is dead (logout, kick). Returns a future of the first attempt, so a
        logout can wait for it; if biz does not answer, the revocation is sent again in the background until
        it is stored or the ticket would have expired anyway (REVOKE_RETRY_DELAYS)."""
        if not session_id:
            return None
        cid = self.cmd.CID_EXT_TICKET_REVOKE_REQ
        req = self.proto.new(cid, user_id=user_id, session_id=session_id)
        first: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()

        async def send() -> None:
            for delay in (0.0, *REVOKE_RETRY_DELAYS):
                if delay:
                    await asyncio.sleep(delay)
                rsp = await self.biz.call(cid.name, user_id, req)
                if not first.done():
                    first.set_result(rsp)
                if rsp is not None:
                    return
            log.warning("ticket revocation for user %d was never stored", user_id)

        self.background(asyncio.get_running_loop().create_task(send(), name="ticket-revoke"))
        return first

    async def logout(self, ctx: Context, msg: login_pb.IMLogoutReq) -> None:
        """Clear the push token and revoke the session's ticket, answer, close."""
        st = client_state(ctx)
        revoked = self._revoke(st.user_id, st.ticket_session)
        st.ticket_session = b""
        await self.biz.call(self.cmd.CID_LOGIN_REQ_LOGINOUT.name, st.user_id, msg)
        if revoked is not None:
            await revoked  # the logout answer means the ticket is dead everywhere
        ctx.reply(self.proto.new(self.cmd.CID_LOGIN_RES_LOGINOUT, result_code=0))
        self.retire(st)
        ctx.close("logout")
        return None

    async def kick_pc(self, ctx: Context, msg: login_pb.IMKickPCClientReq) -> Message:
        """A mobile client kicks the user's PC sessions everywhere (reason MOBILE_KICK)."""
        st = client_state(ctx)
        rsp = cast(
            "login_pb.IMKickPCClientRsp",
            self.proto.new(self.cmd.CID_LOGIN_RES_KICKPCCLIENT, user_id=st.user_id, result_code=0),
        )
        if not st.mobile:
            rsp.result_code = int(ResultCode.ACCESS_DENIED)
            return rsp
        reason = self.enums.KickReasonType.KICK_REASON_MOBILE_KICK
        for other in list(self.sessions.of(st.user_id)):
            if not other.mobile:
                self.kick(other, reason)
        self._relay_kick(st.user_id, st.client_type, reason)
        return rsp

    async def time(self, ctx: Context, msg: message.IMClientTimeReq) -> Message:
        """Clock sync."""
        return self.proto.new(self.cmd.CID_MSG_TIME_RESPONSE, server_time=now())

    async def users_status(self, ctx: Context, msg: buddy.IMUsersStatReq) -> Message:
        """Presence query, answered by a router."""
        st = client_state(ctx)
        msg.user_id = st.user_id
        del msg.user_id_list[1000:]
        self.presence.subscribed(st, msg.user_id_list)
        try:
            frame = await self.routers.call(
                self.cmd.CID_BUDDY_LIST_USERS_STATUS_REQUEST, msg.SerializeToString()
            )
        except ConnectionError:  # no router: nobody can be vouched for as online
            rsp = cast(
                "buddy.IMUsersStatRsp",
                self.proto.new(self.cmd.CID_BUDDY_LIST_USERS_STATUS_RESPONSE, user_id=st.user_id),
            )
            for uid in msg.user_id_list:
                rsp.user_stat_list.add(user_id=uid, status=self.presence.policy.offline)
            return rsp
        return strip_attach(self.proto.parse(frame.command_id, frame.body))

    async def handshake(self, ctx: Context, msg: ext.IMSecureHandshakeReq) -> Message | None:
        """Open an encrypted session (X25519 + AEAD, keys from runtime.stages.crypto). The answer goes out in
        clear; every later `session_aead` frame on the connection is sealed. Derivation: HKDF-SHA256 with salt
        client_nonce || server_nonce and context client_key || server_key (`derive_session_keys`)."""
        results = self.enums.HandshakeResult
        rsp = cast(
            "ext.IMSecureHandshakeRsp",
            self.proto.new(self.cmd.CID_EXT_HANDSHAKE_RSP, result_code=results.HANDSHAKE_OK),
        )
        data = ctx.link.extras()
        if "cipher" in data:
            rsp.result_code = results.HANDSHAKE_ALREADY_SECURED  # type: ignore[assignment]
            return rsp
        suite = next((int(s) for s in msg.suites if int(s) in self.suites), None)
        if suite is None:
            rsp.result_code = results.HANDSHAKE_NO_COMMON_SUITE  # type: ignore[assignment]
            return rsp
        kx = KeyExchange()
        server_nonce = os.urandom(16)
        try:
            keys = derive_session_keys(
                kx, msg.client_public_key, msg.client_nonce, server_nonce, initiator=False
            )
        except (IntegrityError, ValueError):
            rsp.result_code = results.HANDSHAKE_BAD_KEY  # type: ignore[assignment]
            return rsp
        rsp.server_public_key, rsp.server_nonce = kx.public_bytes, server_nonce
        rsp.suite = suite  # type: ignore[assignment]  # an int of the spec's AeadSuite
        ctx.reply(rsp)  # in clear: the handshake pair is never sealed
        ctx.enable_encryption(keys, self.suites[suite])
        return None


class BizForwarding:
    """Client commands biz answers (the user id is stamped, attach_data stripped on the way back), and the
    ones whose accepted answer is also announced to other devices and users."""

    def __init__(
        self,
        proto: Proto,
        *,
        biz: BizPool,
        groups: GroupCache,
        presence: LocalPresence,
        fanout: Fanout,
        legacy: LegacyText | None = None,
    ) -> None:
        self.proto = proto
        self.legacy = legacy  # TeamTalk's text codec for original clients, or None
        self.biz = biz
        self.groups = groups
        self.presence = presence
        self.fanout = fanout
        self.cmd = command_ids_of(proto.registry)

    async def forward(self, ctx: Context, msg: Message) -> Message | None:
        """Stamp the user, ask biz, strip attach_data from the answer."""
        st = client_state(ctx)
        stamp_user(msg, st.user_id)
        rsp = await self.biz.call(ctx.info.name, st.user_id, msg)
        if rsp is None:
            return None
        rsp = strip_attach(rsp)
        if self.legacy is not None and ctx.info.reply:  # history for an original client: its text encoded
            rsp = self.legacy.outbound(ctx.link, ctx.info.reply, rsp)
        return rsp

    async def recent_sessions(self, ctx: Context, msg: buddy.IMRecentContactSessionReq) -> Message | None:
        """Recent sessions from biz; their one-to-one peers are the connection's presence contacts."""
        rsp = await self.forward(ctx, msg)
        if rsp is not None:
            self.presence.contacts(client_state(ctx), cast("buddy.IMRecentContactSessionRsp", rsp))
        return rsp

    async def remove_session(self, ctx: Context, msg: buddy.IMRemoveSessionReq) -> Message | None:
        """Remove a recent session and tell the user's other devices."""
        rsp = cast("buddy.IMRemoveSessionRsp | None", await self.forward(ctx, msg))
        if rsp is not None and rsp.result_code == 0:
            st = client_state(ctx)
            cid = self.cmd.CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY
            note = self.proto.new(
                cid, user_id=st.user_id, session_type=msg.session_type, session_id=msg.session_id
            )
            self.fanout.notify(cid.name, note, [st.user_id], skip=st)
        return rsp

    async def change_sign_info(self, ctx: Context, msg: buddy.IMChangeSignInfoReq) -> Message | None:
        """Set the signature and tell every online user."""
        rsp = cast("buddy.IMChangeSignInfoRsp | None", await self.forward(ctx, msg))
        if rsp is not None and rsp.result_code == 0:
            st = client_state(ctx)
            cid = self.cmd.CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY
            note = self.proto.new(cid, changed_user_id=st.user_id, sign_info=msg.sign_info)
            self.fanout.notify(cid.name, note, None, skip=st)
        return rsp

    async def create_group(self, ctx: Context, msg: group.IMGroupCreateReq) -> Message | None:
        """Create a TMP group; members learn of it through a member-change notify."""
        rsp = cast("group.IMGroupCreateRsp | None", await self.forward(ctx, msg))
        if rsp is not None and rsp.result_code == 0:
            members = sorted(rsp.user_id_list)
            self.groups.drop(rsp.group_id)
            st = client_state(ctx)
            cid = self.cmd.CID_GROUP_CHANGE_MEMBER_NOTIFY
            note = self.proto.new(
                cid,
                user_id=st.user_id,
                change_type=enums_of(self.proto.registry).GroupModifyType.GROUP_MODIFY_TYPE_ADD,
                group_id=rsp.group_id,
                cur_user_id_list=members,
                chg_user_id_list=members,
            )
            self.fanout.notify(cid.name, note, members, skip=st)
        return rsp

    async def change_members(self, ctx: Context, msg: group.IMGroupChangeMemberReq) -> Message | None:
        """Change members under the permission rules; tell current and changed members."""
        rsp = cast("group.IMGroupChangeMemberRsp | None", await self.forward(ctx, msg))
        if rsp is not None and rsp.result_code == 0:
            self.groups.drop(msg.group_id)
            st = client_state(ctx)
            cid = self.cmd.CID_GROUP_CHANGE_MEMBER_NOTIFY
            note = self.proto.new(
                cid,
                user_id=st.user_id,
                change_type=rsp.change_type,
                group_id=rsp.group_id,
                cur_user_id_list=list(rsp.cur_user_id_list),
                chg_user_id_list=list(rsp.chg_user_id_list),
            )
            users = sorted(set(rsp.cur_user_id_list) | set(rsp.chg_user_id_list))
            self.fanout.notify(cid.name, note, users, skip=st)
        return rsp


class MsgHandlers:
    """Every client command the msg service hosts (bound to the generated MsgServiceBase by the service):
    each method hands the request to the component that serves it."""

    def __init__(
        self,
        sessions: SessionHandlers,
        forwarding: BizForwarding,
        chat: ChatHandlers,
        files: FileRequestHandlers,
    ) -> None:
        self.session = sessions
        self.forwarding = forwarding
        self.chat = chat
        self.files = files

    # connection hooks and refusals (runtime.dispatch) ----------------------------------------------------
    def on_disconnect(self, link: Any, reason: str) -> None:
        """A client connection closed: forget it, tell routers and login."""
        self.session.disconnected(link)

    def on_rejected(self, ctx: Context, msg: Message | None, exc: StageError) -> bool:
        """Answer a refused request with its reply carrying the error (runtime.services.refusals)."""
        return answer_refusal(ctx, msg, exc)

    # sessions --------------------------------------------------------------------------------------------
    async def on_cid_login_req_userlogin(self, ctx: Context, msg: login_pb.IMLoginReq) -> Message | None:
        return await self.session.login(ctx, msg)

    async def on_cid_ext_password_login_req(
        self, ctx: Context, msg: ext.IMPasswordLoginReq
    ) -> Message | None:
        return await self.session.password_login(ctx, msg)

    async def on_cid_ext_ticket_login_req(self, ctx: Context, msg: ext.IMTicketLoginReq) -> Message | None:
        return await self.session.ticket_login(ctx, msg)

    async def on_cid_ext_resume_ticket_req(self, ctx: Context, msg: ext.IMResumeTicketReq) -> Message | None:
        return await self.session.resume_ticket(ctx, msg)

    async def on_cid_login_req_loginout(self, ctx: Context, msg: login_pb.IMLogoutReq) -> Message | None:
        await self.session.logout(ctx, msg)
        return None

    async def on_cid_login_req_kickpcclient(
        self, ctx: Context, msg: login_pb.IMKickPCClientReq
    ) -> Message | None:
        return await self.session.kick_pc(ctx, msg)

    async def on_cid_msg_time_request(self, ctx: Context, msg: message.IMClientTimeReq) -> Message | None:
        return await self.session.time(ctx, msg)

    async def on_cid_buddy_list_users_status_request(
        self, ctx: Context, msg: buddy.IMUsersStatReq
    ) -> Message | None:
        return await self.session.users_status(ctx, msg)

    async def on_cid_ext_handshake_req(self, ctx: Context, msg: ext.IMSecureHandshakeReq) -> Message | None:
        return await self.session.handshake(ctx, msg)

    # answered by biz -------------------------------------------------------------------------------------
    async def on_cid_login_req_devicetoken(
        self, ctx: Context, msg: login_pb.IMDeviceTokenReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_login_req_push_shield(
        self, ctx: Context, msg: login_pb.IMPushShieldReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_login_req_query_push_shield(
        self, ctx: Context, msg: login_pb.IMQueryPushShieldReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_buddy_list_user_info_request(
        self, ctx: Context, msg: buddy.IMUsersInfoReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_buddy_list_all_user_request(
        self, ctx: Context, msg: buddy.IMAllUserReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_buddy_list_change_avatar_request(
        self, ctx: Context, msg: buddy.IMChangeAvatarReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_buddy_list_department_request(
        self, ctx: Context, msg: buddy.IMDepartmentReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_msg_unread_cnt_request(
        self, ctx: Context, msg: message.IMUnreadMsgCntReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_msg_list_request(self, ctx: Context, msg: message.IMGetMsgListReq) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_msg_get_latest_msg_id_req(
        self, ctx: Context, msg: message.IMGetLatestMsgIdReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_msg_get_by_msg_id_req(
        self, ctx: Context, msg: message.IMGetMsgByIdReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_group_normal_list_request(
        self, ctx: Context, msg: group.IMNormalGroupListReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_group_info_request(self, ctx: Context, msg: group.IMGroupInfoListReq) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_group_shield_group_request(
        self, ctx: Context, msg: group.IMGroupShieldReq
    ) -> Message | None:
        return await self.forwarding.forward(ctx, msg)

    async def on_cid_buddy_list_recent_contact_session_request(
        self, ctx: Context, msg: buddy.IMRecentContactSessionReq
    ) -> Message | None:
        return await self.forwarding.recent_sessions(ctx, msg)

    async def on_cid_buddy_list_remove_session_req(
        self, ctx: Context, msg: buddy.IMRemoveSessionReq
    ) -> Message | None:
        return await self.forwarding.remove_session(ctx, msg)

    async def on_cid_buddy_list_change_sign_info_request(
        self, ctx: Context, msg: buddy.IMChangeSignInfoReq
    ) -> Message | None:
        return await self.forwarding.change_sign_info(ctx, msg)

    async def on_cid_group_create_request(self, ctx: Context, msg: group.IMGroupCreateReq) -> Message | None:
        return await self.forwarding.create_group(ctx, msg)

    async def on_cid_group_change_member_request(
        self, ctx: Context, msg: group.IMGroupChangeMemberReq
    ) -> Message | None:
        return await self.forwarding.change_members(ctx, msg)

    # chat ------------------------------------------------------------------------------------------------
    def on_cid_msg_data(self, ctx: Context, msg: message.IMMsgData) -> Message | None:
        """A plain function, like `ChatHandlers.send`: the dispatcher calls it without a coroutine."""
        return self.chat.send(ctx, msg)

    def on_cid_ext_msg_burn(self, ctx: Context, msg: message.IMMsgData) -> Message | None:
        return self.chat.send_burn(ctx, msg)

    def on_cid_msg_data_ack(self, ctx: Context, msg: message.IMMsgDataAck) -> None:
        self.chat.data_ack(ctx, msg)

    async def on_cid_msg_read_ack(self, ctx: Context, msg: message.IMMsgDataReadAck) -> None:
        await self.chat.read_ack(ctx, msg)

    async def on_cid_ext_msg_burn_read(self, ctx: Context, msg: ext.IMBurnReadReq) -> None:
        await self.chat.burn_read(ctx, msg)

    async def on_cid_ext_msg_recall_req(self, ctx: Context, msg: ext.IMMsgRecallReq) -> Message | None:
        return await self.chat.recall(ctx, msg)

    async def on_cid_ext_msg_edit_req(self, ctx: Context, msg: ext.IMMsgEditReq) -> Message | None:
        return await self.chat.edit(ctx, msg)

    async def on_cid_switch_p2p_cmd(self, ctx: Context, msg: switch.IMP2PCmdMsg) -> None:
        await self.chat.p2p(ctx, msg)

    async def on_cid_ext_typing(self, ctx: Context, msg: ext.IMTypingNotify) -> None:
        await self.chat.typing(ctx, msg)

    async def on_cid_ext_signal(self, ctx: Context, msg: ext.IMEphemeralSignal) -> None:
        await self.chat.signal(ctx, msg)

    # files -----------------------------------------------------------------------------------------------
    async def on_cid_file_request(self, ctx: Context, msg: file.IMFileReq) -> Message | None:
        return await self.files.request(ctx, msg)

    async def on_cid_file_has_offline_req(
        self, ctx: Context, msg: file.IMFileHasOfflineReq
    ) -> Message | None:
        return await self.files.has_offline(ctx, msg)

    async def on_cid_file_add_offline_req(self, ctx: Context, msg: file.IMFileAddOfflineReq) -> None:
        await self.files.add_offline(ctx, msg)

    async def on_cid_file_del_offline_req(self, ctx: Context, msg: file.IMFileDelOfflineReq) -> None:
        await self.files.del_offline(ctx, msg)

    # server-to-server commands the generated base lists for msg: on our links they arrive as replies or
    # relays (runtime.services.msg.inbound); the dispatcher refuses them from clients before they get here.
    async def _internal_only(self, ctx: Context, msg: Message) -> None:
        return None

    on_cid_other_heartbeat = _internal_only
    on_cid_other_stop_recv_packet = _internal_only
    on_cid_other_validate_rsp = _internal_only
    on_cid_ext_ticket_issue_rsp = _internal_only
    on_cid_ext_ticket_verify_rsp = _internal_only
    on_cid_ext_ticket_revoke_rsp = _internal_only
    on_cid_other_get_device_token_rsp = _internal_only
    on_cid_other_push_to_user_rsp = _internal_only
    on_cid_other_get_shield_rsp = _internal_only
    on_cid_other_file_transfer_rsp = _internal_only
    on_cid_other_file_server_ip_rsp = _internal_only

    # what the inbound relays (runtime.services.msg.inbound) hand over -----------------------------------
    def deliver_chat(
        self, command: str, msg: message.IMMsgData, targets: Any, body: bytes | None = None
    ) -> None:
        """A chat message a router relayed: local delivery with retransmit tracking."""
        self.chat.deliver(command, msg, targets, body=body)

    def kick(self, st: ClientState, reason: int) -> None:
        """Kick a local session."""
        self.session.kick(st, reason)

    def fan_out(self, command: str, msg: Message, users: Any, *, mobile_only: bool = False) -> int:
        """Push to every local connection of the users."""
        return self.chat.fanout.local(command, msg, users, mobile_only=mobile_only)


def _still_logged_in(st: ClientState) -> bool:
    """Whether a session is still logged in after an await (a call, which a type checker does not take for
    the check it already narrowed before the await)."""
    return bool(st.logged_in)
