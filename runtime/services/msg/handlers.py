"""Runtime services layer (msg): session handlers (login, logout, kicks, presence), biz-answered commands."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from runtime.auth.tickets import REVOKE_RETRY_DELAYS
from runtime.dispatch import Context
from runtime.errors import IntegrityError
from runtime.services.file.msg_side import FileRequestHandlers
from runtime.services.links import ResultCode
from runtime.services.msg.chat import ChatHandlers
from runtime.services.msg.common import stamp_user, strip_attach
from runtime.services.msg.delivery import ClientState, same_class
from runtime.services.refusals import RejectingHandlers
from runtime.stages.crypto import KeyExchange, derive_session_keys

HANDSHAKE_OK, HANDSHAKE_NO_COMMON_SUITE, HANDSHAKE_BAD_KEY, HANDSHAKE_ALREADY_SECURED = 0, 1, 2, 3
SUITES = {1: "aes-256-gcm", 2: "chacha20-poly1305"}  # IM.Ext.AeadSuite -> runtime.stages.crypto algorithm
KICK_DUPLICATE, KICK_MOBILE = 1, 2

GROUP_ADD = 1

# Client commands biz answers as they are (the user id is stamped, attach_data stripped on the way back).
FORWARDED = (
    "CID_LOGIN_REQ_DEVICETOKEN",
    "CID_LOGIN_REQ_PUSH_SHIELD",
    "CID_LOGIN_REQ_QUERY_PUSH_SHIELD",
    "CID_BUDDY_LIST_USER_INFO_REQUEST",
    "CID_BUDDY_LIST_ALL_USER_REQUEST",
    "CID_BUDDY_LIST_CHANGE_AVATAR_REQUEST",
    "CID_BUDDY_LIST_DEPARTMENT_REQUEST",
    "CID_MSG_UNREAD_CNT_REQUEST",
    "CID_MSG_LIST_REQUEST",
    "CID_MSG_GET_LATEST_MSG_ID_REQ",
    "CID_MSG_GET_BY_MSG_ID_REQ",
    "CID_GROUP_NORMAL_LIST_REQUEST",
    "CID_GROUP_INFO_REQUEST",
    "CID_GROUP_SHIELD_GROUP_REQUEST",
)
# IMFileReq and the offline-file commands: FileRequestHandlers (runtime.services.file.msg_side).
# Server-to-server commands the generated base lists for msg; on our links they arrive as replies or relays.
INTERNAL_ONLY = (
    "CID_OTHER_HEARTBEAT",
    "CID_OTHER_STOP_RECV_PACKET",
    "CID_OTHER_VALIDATE_RSP",
    "CID_EXT_TICKET_ISSUE_RSP",
    "CID_EXT_TICKET_VERIFY_RSP",
    "CID_EXT_TICKET_REVOKE_RSP",
    "CID_OTHER_GET_DEVICE_TOKEN_RSP",
    "CID_OTHER_SERVER_KICK_USER",
    "CID_OTHER_LOGIN_STATUS_NOTIFY",
    "CID_OTHER_PUSH_TO_USER_RSP",
    "CID_OTHER_GET_SHIELD_RSP",
    "CID_OTHER_FILE_TRANSFER_RSP",
    "CID_OTHER_FILE_SERVER_IP_RSP",
)


class MsgHandlers(FileRequestHandlers, ChatHandlers, RejectingHandlers):
    """Every client command the msg service hosts (bound to the generated MsgServiceBase by the service)."""

    # connection hooks (runtime.dispatch) -----------------------------------------------------------------
    def on_disconnect(self, link: Any, reason: str) -> None:
        """A client connection closed: forget it, tell routers and login."""
        st = (link.data or {}).get("msg")
        if isinstance(st, ClientState):
            self.retire(st)

    def retire(self, st: ClientState) -> None:
        """Take a session out of service (idempotent): presence offline, load counter -1."""
        if not st.logged_in:
            return
        st.logged_in = False
        st.unacked.clear()
        if self.svc.remove_session(st):
            upd = self.proto.new(
                "CID_OTHER_USER_STATUS_UPDATE",
                user_status=self.svc.presence.policy.offline,
                user_id=st.user_id,
                client_type=st.client_type,
            )
            self.svc.routers.to_all(self.proto.cid("CID_OTHER_USER_STATUS_UPDATE"), upd.SerializeToString())
            self.svc.report_count(st.user_id, -1)

    def kick(self, st: ClientState, reason: int) -> None:
        """Tell a session it was kicked, revoke its ticket, retire it and close it once the notice is
        written."""
        self._revoke(st.user_id, st.ticket_session)
        st.ticket_session = b""
        self.svc.push(
            st.link,
            "CID_LOGIN_KICK_USER",
            self.proto.new("CID_LOGIN_KICK_USER", user_id=st.user_id, kick_reason=reason),
        )
        self.retire(st)
        st.link.close(f"kicked (reason {reason})")

    # login -----------------------------------------------------------------------------------------------
    async def on_cid_login_req_userlogin(self, ctx: Context, msg: Any) -> Any:
        """Authenticate through biz; enforce one PC and one mobile session per user, cluster-wide."""
        res: Any = self.proto.new("CID_LOGIN_RES_USERLOGIN", server_time=self.now(), result_code=0)
        st = self.state(ctx)
        if st.logged_in:
            res.result_code, res.result_string = ResultCode.DB_VALIDATE_FAILED, "already logged in"
            return res
        refusal = self._login_gate()
        if refusal is None:
            req: Any = self.proto.new(
                "CID_OTHER_VALIDATE_REQ",
                user_name=msg.user_name,
                password=msg.password,
                attach_data=ctx.peer.rsplit(":", 1)[0].encode(),
            )
            rsp = await self.biz_call("CID_OTHER_VALIDATE_REQ", 0, req)
            if rsp is None:
                refusal = (ResultCode.NO_DB_SERVER, "biz did not answer")
            elif rsp.result_code == ResultCode.MSG_SERVER_FULL:  # biz's verify pool is saturated
                refusal = (ResultCode.MSG_SERVER_FULL, rsp.result_string or "login busy; try again later")
            elif rsp.result_code != 0:
                # The wire enum ends at 7: every validation refusal is DB_VALIDATE_FAILED, the text says why.
                refusal = (ResultCode.DB_VALIDATE_FAILED, rsp.result_string or "validation failed")
            elif self.svc.g_conns.value >= self.svc.max_conn:
                # Checked again: logins validated concurrently all passed the first check.
                refusal = (ResultCode.MSG_SERVER_FULL, "msg server full")
        if refusal is not None:
            res.result_code, res.result_string = int(refusal[0]), refusal[1]
            ctx.reply(res)
            ctx.close(f"login refused: {refusal[1]}")
            return None
        if not ctx.link.conn or not ctx.link.conn.is_open:
            return None
        assert rsp is not None
        self._admit(ctx, st, rsp.user_info.user_id, msg.client_type)
        st.auth_time = self.now()
        res.online_status = msg.online_status
        res.user_info.CopyFrom(rsp.user_info)
        return res

    def _login_gate(self) -> tuple[ResultCode, str] | None:
        """Why no login can proceed on this server right now, or None."""
        if self.svc.biz_link() is None:
            return (ResultCode.NO_DB_SERVER, "biz service unavailable")
        if not self.svc.routers.available:
            return (ResultCode.NO_ROUTE_SERVER, "router service unavailable")
        if self.svc.g_conns.value >= self.svc.max_conn:
            return (ResultCode.MSG_SERVER_FULL, "msg server full")
        return None

    def _admit(self, ctx: Context, st: ClientState, user_id: int, client_type: int) -> None:
        """An authenticated connection: register it, announce it, kick same-class sessions cluster-wide."""
        ctx.authenticate(user_id, client_type)
        st.user_id, st.client_type, st.logged_in = user_id, client_type, True
        older = [o for o in self.svc.states_of(user_id) if same_class(o.client_type, client_type)]
        self.svc.add_session(st)
        # ONLINE goes out before the older session's OFFLINE, so a re-login does not flap presence.
        upd = self.proto.new(
            "CID_OTHER_USER_STATUS_UPDATE",
            user_status=self.svc.presence.policy.online,
            user_id=user_id,
            client_type=client_type,
        )
        self.svc.routers.to_all(self.proto.cid("CID_OTHER_USER_STATUS_UPDATE"), upd.SerializeToString())
        self.svc.report_count(user_id, +1)
        for other in older:
            self.kick(other, KICK_DUPLICATE)
        kick = self.proto.new(
            "CID_OTHER_SERVER_KICK_USER", user_id=user_id, client_type=client_type, reason=KICK_DUPLICATE
        )
        self.svc.routers.relay(
            self.proto.cid("CID_OTHER_SERVER_KICK_USER"), kick.SerializeToString(), [user_id]
        )

    # resumption tickets ----------------------------------------------------------------------------------
    async def on_cid_ext_ticket_login_req(self, ctx: Context, msg: Any) -> Any:
        """Log in with a resumption ticket: biz checks the HMAC and consumes the ticket (no password hash);
        the answer carries the successor ticket. After a refused ticket the connection stays open for a
        password login (the rate limit of both commands still applies); when no login can proceed at all
        (biz or routers down, server full) it closes as after a refused password."""
        codes = self.proto.enum("CID_EXT_TICKET_LOGIN_RSP", "result_code")
        res: Any = self.proto.new("CID_EXT_TICKET_LOGIN_RSP", server_time=self.now(), result_code=0)
        st = self.state(ctx)
        if st.logged_in:
            res.result_code, res.result_string = codes["TICKET_UNAVAILABLE"], "already logged in"
            return res
        gate = self._login_gate()
        rsp = None
        if gate is None:
            req: Any = self.proto.new(
                "CID_EXT_TICKET_VERIFY_REQ",
                ticket=msg.ticket,
                client_type=msg.client_type,
                device_id=msg.device_id,
                attach_data=ctx.peer.rsplit(":", 1)[0].encode(),
            )
            rsp = await self.biz_call("CID_EXT_TICKET_VERIFY_REQ", 0, req)
        if rsp is None or rsp.result_code != codes["TICKET_OK"]:
            if rsp is None:
                res.result_code = codes["TICKET_UNAVAILABLE"]
                res.result_string = gate[1] if gate is not None else "biz did not answer"
            else:
                res.result_code, res.result_string = rsp.result_code, rsp.result_string or "ticket refused"
            self.svc.m_ticket_refused.inc()
            if gate is None and rsp is not None:
                return res
            ctx.reply(res)
            ctx.close(f"ticket login refused: {res.result_string}")
            return None
        if not ctx.link.conn or not ctx.link.conn.is_open:
            return None
        self._admit(ctx, st, rsp.user_info.user_id, msg.client_type)
        st.auth_time, st.ticket_session = rsp.auth_time, rsp.session_id
        self.svc.m_ticket_logins.inc()
        res.online_status = msg.online_status
        res.user_info.CopyFrom(rsp.user_info)
        res.ticket, res.expire_time = rsp.ticket, rsp.expire_time
        return res

    async def on_cid_ext_resume_ticket_req(self, ctx: Context, msg: Any) -> Any:
        """Issue a resumption ticket to this logged-in connection (retiring the one issued before)."""
        codes = self.proto.enum("CID_EXT_RESUME_TICKET_RSP", "result_code")
        res: Any = self.proto.new("CID_EXT_RESUME_TICKET_RSP", result_code=codes["TICKET_OK"])
        st = self.state(ctx)
        if not st.logged_in:
            res.result_code = codes["TICKET_NOT_LOGGED_IN"]
            return res
        req: Any = self.proto.new(
            "CID_EXT_TICKET_ISSUE_REQ",
            user_id=st.user_id,
            client_type=st.client_type,
            auth_time=st.auth_time,
            device_id=msg.device_id,
            previous_session=st.ticket_session,
        )
        rsp = await self.biz_call("CID_EXT_TICKET_ISSUE_REQ", st.user_id, req)
        if rsp is None:
            res.result_code = codes["TICKET_UNAVAILABLE"]
            return res
        if rsp.result_code != codes["TICKET_OK"]:
            res.result_code = rsp.result_code
            return res
        if not _still_logged_in(st):  # logged out or kicked while biz issued it: the ticket dies with it
            self._revoke(st.user_id, rsp.session_id)
            res.result_code = codes["TICKET_REVOKED"]
            return res
        st.ticket_session = rsp.session_id
        res.ticket, res.expire_time = rsp.ticket, rsp.expire_time
        return res

    def _revoke(self, user_id: int, session_id: bytes) -> asyncio.Future[Any] | None:
        """Tell biz a session's ticket is dead (logout, kick). Returns a future of the first attempt, so a
        logout can wait for it; if biz does not answer, the revocation is sent again in the background until
        it is stored or the ticket would have expired anyway (REVOKE_RETRY_DELAYS)."""
        if not session_id:
            return None
        req = self.proto.new("CID_EXT_TICKET_REVOKE_REQ", user_id=user_id, session_id=session_id)
        first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def send() -> None:
            for delay in (0.0, *REVOKE_RETRY_DELAYS):
                if delay:
                    await asyncio.sleep(delay)
                rsp = await self.biz_call("CID_EXT_TICKET_REVOKE_REQ", user_id, req)
                if not first.done():
                    first.set_result(rsp)
                if rsp is not None:
                    return
            self.svc.log.warning("ticket revocation for user %d was never stored", user_id)

        self.svc.background(asyncio.get_running_loop().create_task(send(), name="ticket-revoke"))
        return first

    async def on_cid_login_req_loginout(self, ctx: Context, msg: Any) -> Any:
        """Clear the push token and revoke the session's ticket, answer, close."""
        st = self.state(ctx)
        revoked = self._revoke(st.user_id, st.ticket_session)
        st.ticket_session = b""
        await self.biz_call("CID_LOGIN_REQ_LOGINOUT", st.user_id, msg)
        if revoked is not None:
            await revoked  # the logout answer means the ticket is dead everywhere
        ctx.reply(self.proto.new("CID_LOGIN_RES_LOGINOUT", result_code=0))
        self.retire(st)
        ctx.close("logout")
        return None

    async def on_cid_login_req_kickpcclient(self, ctx: Context, msg: Any) -> Any:
        """A mobile client kicks the user's PC sessions everywhere (reason MOBILE_KICK)."""
        st = self.state(ctx)
        rsp: Any = self.proto.new("CID_LOGIN_RES_KICKPCCLIENT", user_id=st.user_id, result_code=0)
        if not st.mobile:
            rsp.result_code = int(ResultCode.ACCESS_DENIED)
            return rsp
        for other in list(self.svc.states_of(st.user_id)):
            if not other.mobile:
                self.kick(other, KICK_MOBILE)
        kick = self.proto.new(
            "CID_OTHER_SERVER_KICK_USER", user_id=st.user_id, client_type=st.client_type, reason=KICK_MOBILE
        )
        self.svc.routers.relay(
            self.proto.cid("CID_OTHER_SERVER_KICK_USER"), kick.SerializeToString(), [st.user_id]
        )
        return rsp

    async def on_cid_msg_time_request(self, ctx: Context, msg: Any) -> Any:
        """Clock sync."""
        return self.proto.new("CID_MSG_TIME_RESPONSE", server_time=self.now())

    async def on_cid_buddy_list_users_status_request(self, ctx: Context, msg: Any) -> Any:
        """Presence query, answered by a router."""
        st = self.state(ctx)
        msg.user_id = st.user_id
        del msg.user_id_list[1000:]
        self.svc.presence.subscribed(st, msg.user_id_list)
        try:
            frame = await self.svc.routers.call(
                self.proto.cid("CID_BUDDY_LIST_USERS_STATUS_REQUEST"), msg.SerializeToString()
            )
        except ConnectionError:  # no router: nobody can be vouched for as online
            rsp: Any = self.proto.new("CID_BUDDY_LIST_USERS_STATUS_RESPONSE", user_id=st.user_id)
            for uid in msg.user_id_list:
                rsp.user_stat_list.add(user_id=uid, status=self.svc.presence.policy.offline)
            return rsp
        return strip_attach(self.proto.parse(frame.command_id, frame.body))

    # forwarded to biz ------------------------------------------------------------------------------------
    async def forward(self, ctx: Context, msg: Any) -> Any:
        """Stamp the user, ask biz, strip attach_data from the answer."""
        st = self.state(ctx)
        stamp_user(msg, st.user_id)
        rsp = await self.biz_call(ctx.info.name, st.user_id, msg)
        if rsp is None:
            return None
        rsp = strip_attach(rsp)
        legacy = self.svc.legacy
        if legacy is not None and ctx.info.reply:  # history for an original client: its text encoded
            rsp = legacy.outbound(ctx.link, ctx.info.reply, rsp)
        return rsp

    async def on_cid_buddy_list_recent_contact_session_request(self, ctx: Context, msg: Any) -> Any:
        """Recent sessions from biz; their one-to-one peers are the connection's presence contacts."""
        rsp = await self.forward(ctx, msg)
        if rsp is not None:
            self.svc.presence.contacts(self.state(ctx), rsp)
        return rsp

    async def on_cid_buddy_list_remove_session_req(self, ctx: Context, msg: Any) -> Any:
        """Remove a recent session and tell the user's other devices."""
        rsp = await self.forward(ctx, msg)
        if rsp is not None and rsp.result_code == 0:
            st = self.state(ctx)
            note = self.proto.new(
                "CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY",
                user_id=st.user_id,
                session_type=msg.session_type,
                session_id=msg.session_id,
            )
            self.notify("CID_BUDDY_LIST_REMOVE_SESSION_NOTIFY", note, [st.user_id], skip=st)
        return rsp

    async def on_cid_buddy_list_change_sign_info_request(self, ctx: Context, msg: Any) -> Any:
        """Set the signature and tell every online user."""
        rsp = await self.forward(ctx, msg)
        if rsp is not None and rsp.result_code == 0:
            st = self.state(ctx)
            note = self.proto.new(
                "CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY", changed_user_id=st.user_id, sign_info=msg.sign_info
            )
            self.notify("CID_BUDDY_LIST_SIGN_INFO_CHANGED_NOTIFY", note, None, skip=st)
        return rsp

    async def on_cid_group_create_request(self, ctx: Context, msg: Any) -> Any:
        """Create a TMP group; members learn of it through a member-change notify."""
        rsp = await self.forward(ctx, msg)
        if rsp is not None and rsp.result_code == 0:
            members = sorted(rsp.user_id_list)
            self.svc.group_members.pop(rsp.group_id, None)
            st = self.state(ctx)
            note = self.proto.new(
                "CID_GROUP_CHANGE_MEMBER_NOTIFY",
                user_id=st.user_id,
                change_type=GROUP_ADD,
                group_id=rsp.group_id,
                cur_user_id_list=members,
                chg_user_id_list=members,
            )
            self.notify("CID_GROUP_CHANGE_MEMBER_NOTIFY", note, members, skip=st)
        return rsp

    async def on_cid_group_change_member_request(self, ctx: Context, msg: Any) -> Any:
        """Change members under the permission rules; tell current and changed members."""
        rsp = await self.forward(ctx, msg)
        if rsp is not None and rsp.result_code == 0:
            self.svc.group_members.pop(msg.group_id, None)
            st = self.state(ctx)
            note = self.proto.new(
                "CID_GROUP_CHANGE_MEMBER_NOTIFY",
                user_id=st.user_id,
                change_type=rsp.change_type,
                group_id=rsp.group_id,
                cur_user_id_list=list(rsp.cur_user_id_list),
                chg_user_id_list=list(rsp.chg_user_id_list),
            )
            users = sorted(set(rsp.cur_user_id_list) | set(rsp.chg_user_id_list))
            self.notify("CID_GROUP_CHANGE_MEMBER_NOTIFY", note, users, skip=st)
        return rsp

    async def on_cid_ext_handshake_req(self, ctx: Context, msg: Any) -> Any:
        """Open an encrypted session (X25519 + AEAD, keys from runtime.stages.crypto). The answer goes out in
        clear; every later `session_aead` frame on the connection is sealed. Derivation: HKDF-SHA256 with salt
        client_nonce || server_nonce and context client_key || server_key (`derive_session_keys`)."""
        rsp: Any = self.proto.new("CID_EXT_HANDSHAKE_RSP", result_code=HANDSHAKE_OK)
        data = ctx.link.extras()
        if "cipher" in data:
            rsp.result_code = HANDSHAKE_ALREADY_SECURED
            return rsp
        suite = next((s for s in msg.suites if s in SUITES), None)
        if suite is None:
            rsp.result_code = HANDSHAKE_NO_COMMON_SUITE
            return rsp
        kx = KeyExchange()
        server_nonce = os.urandom(16)
        try:
            keys = derive_session_keys(
                kx, msg.client_public_key, msg.client_nonce, server_nonce, initiator=False
            )
        except (IntegrityError, ValueError):
            rsp.result_code = HANDSHAKE_BAD_KEY
            return rsp
        rsp.server_public_key, rsp.server_nonce, rsp.suite = kx.public_bytes, server_nonce, suite
        ctx.reply(rsp)  # in clear: the handshake pair is never sealed
        ctx.enable_encryption(keys, SUITES[suite])
        return None

    async def internal_only(self, ctx: Context, msg: Any) -> None:
        """Server-to-server commands never come from clients (the dispatcher refuses them first)."""
        return None


def _still_logged_in(st: Any) -> bool:
    """Whether a session is still logged in after an await (a call, which a type checker does not take for
    the check it already narrowed before the await)."""
    return bool(st.logged_in)


def _bind(name: str, method: str) -> None:
    async def handler(self: MsgHandlers, ctx: Context, msg: Any) -> Any:
        return await getattr(self, method)(ctx, msg)

    handler.__name__ = "on_" + name.lower()
    handler.__doc__ = f"{name}: see MsgHandlers.{method}."
    setattr(MsgHandlers, handler.__name__, handler)


for _name in FORWARDED:
    _bind(_name, "forward")
for _name in INTERNAL_ONLY:
    _bind(_name, "internal_only")
