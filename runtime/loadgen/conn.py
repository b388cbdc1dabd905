"""Runtime load-generation layer: one lean client connection of a load process, and what the process counts.

A `LoadConn` speaks just enough of the protocol to log in, heartbeat, send chat messages and acknowledge the
ones it receives; everything it sees is counted in the process's `Counters` and timed in its histograms
against *due* times (see runtime.loadgen.schedule). Chat messages carry their due time in the first 8 bytes
of `msg_data`, so the receiver, in whatever load process, measures delivery from when the message was due.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

from runtime.framing import FrameDecoder, encode_frame
from runtime.loadgen.histogram import Histogram
from runtime.registry import Registry
from runtime.services.protocol import enums_of

STAMP = struct.Struct(">d")  # due time (time.monotonic(), the same clock in every process of the host)
PAD = b"x" * 56

# connection states
NEW, CONNECTING, LOGGING_IN, ONLINE, CLOSED = range(5)


class Wire:
    """Command ids and message classes of the stack, looked up once through its registry."""

    def __init__(self, registry: Registry) -> None:
        def cid(name: str) -> int:
            return registry.by_name(name).command_id

        def cls(name: str) -> Any:
            return registry.by_name(name).message_class

        self.login_req_cid = cid("CID_LOGIN_REQ_USERLOGIN")
        self.login_res_cid = cid("CID_LOGIN_RES_USERLOGIN")
        self.data_cid = cid("CID_MSG_DATA")
        self.ack_cid = cid("CID_MSG_DATA_ACK")
        self.kick_cid = cid("CID_LOGIN_KICK_USER")
        self.ticket_req_cid = cid("CID_EXT_RESUME_TICKET_REQ")
        self.ticket_rsp_cid = cid("CID_EXT_RESUME_TICKET_RSP")
        self.ticket_login_req_cid = cid("CID_EXT_TICKET_LOGIN_REQ")
        self.ticket_login_rsp_cid = cid("CID_EXT_TICKET_LOGIN_RSP")
        self.TicketReq = cls("CID_EXT_RESUME_TICKET_REQ")
        self.TicketRsp = cls("CID_EXT_RESUME_TICKET_RSP")
        self.TicketLoginReq = cls("CID_EXT_TICKET_LOGIN_REQ")
        self.TicketLoginRsp = cls("CID_EXT_TICKET_LOGIN_RSP")
        # Presence pushes: TeamTalk's notices, and a status response the client never asked for (a batch of
        # coalesced changes, where the spec's presence policy sends them so).
        self.presence_cids = frozenset(
            cid(n)
            for n in (
                "CID_BUDDY_LIST_STATUS_NOTIFY",
                "CID_BUDDY_LIST_PC_LOGIN_STATUS_NOTIFY",
                "CID_BUDDY_LIST_USERS_STATUS_RESPONSE",
            )
        )
        # The spec's values this client writes and reads (plain ints: they are on the receive path).
        e = enums_of(registry)
        self.heartbeat_cid = cid("CID_OTHER_HEARTBEAT")
        self.online = int(e.UserStatType.USER_STATUS_ONLINE)
        self.session_single = int(e.SessionType.SESSION_TYPE_SINGLE)
        self.session_group = int(e.SessionType.SESSION_TYPE_GROUP)
        self.msg_single_text = int(e.MsgType.MSG_TYPE_SINGLE_TEXT)
        self.msg_group_text = int(e.MsgType.MSG_TYPE_GROUP_TEXT)
        self.group_bit = e.MsgTypeBits.GROUP
        # MSG_SERVER_FULL with "try again later" (biz's password checks are saturated): retried
        self.login_busy = int(e.ResultType.REFUSE_REASON_MSG_SERVER_FULL)
        self.LoginReq = cls("CID_LOGIN_REQ_USERLOGIN")
        self.LoginRes = cls("CID_LOGIN_RES_USERLOGIN")
        self.MsgData = cls("CID_MSG_DATA")
        self.MsgAck = cls("CID_MSG_DATA_ACK")

    def login_frame(self, name: str, password_md5: str, client_type: int, seq: int) -> bytes:
        body = self.LoginReq(
            user_name=name, password=password_md5, online_status=self.online, client_type=client_type
        ).SerializeToString()
        return encode_frame(self.login_req_cid >> 8, self.login_req_cid, seq, body)

    def ticket_login_frame(self, ticket: bytes, client_type: int, seq: int) -> bytes:
        req = self.TicketLoginReq(ticket=ticket, online_status=self.online, client_type=client_type)
        body = req.SerializeToString()
        return encode_frame(self.ticket_login_req_cid >> 8, self.ticket_login_req_cid, seq, body)

    def message_prefix(self, from_id: int, to_id: int, group: bool) -> bytes:
        """A serialized IMMsgData up to the due stamp: the stamp and PAD end the body (msg_data is the last
        field written), so a message is `prefix + stamp + PAD`."""
        body = self.MsgData(
            from_user_id=from_id,
            to_session_id=to_id,
            msg_id=0,
            create_time=0,
            msg_type=self.msg_group_text if group else self.msg_single_text,
            msg_data=bytes(STAMP.size) + PAD,
        ).SerializeToString()
        return bytes(body[: -(STAMP.size + len(PAD))])


class Counters:
    """What one load process counted and timed (merged by the orchestrator)."""

    FIELDS = (
        "connect_failed",
        "login_ok",
        "login_refused",
        "login_timeout",
        "lost",
        "kicked",
        "hb_sent",
        "hb_answered",
        "hb_late",
        "sent",
        "acked",
        "refused",
        "delivered",
        "duplicates",
        "presence",
        "relogins",
        "reconnect_failed",
        "hb_cut",
        "login_busy",
        "ticket_logins",
        "ticket_refused",
    )

    def __init__(self) -> None:
        self.connect_failed = 0  # first connection attempts that failed (reconnects: see relogins)
        self.login_ok = 0
        self.login_refused = 0
        self.login_timeout = 0
        self.lost = 0  # logged-in connections the server closed
        self.kicked = 0
        self.hb_sent = 0
        self.hb_answered = 0
        self.hb_late = 0  # heartbeats not sent because the previous one was still unanswered
        self.sent = 0
        self.acked = 0
        self.refused = 0  # messages refused by the server, or due while their sender was offline
        self.delivered = 0
        self.duplicates = 0
        self.presence = 0  # presence notifications received
        self.relogins = 0  # logins again after a lost connection
        self.reconnect_failed = 0  # reconnection attempts that failed (and were retried)
        self.hb_cut = 0  # heartbeats unanswered when the server closed the connection (a restart)
        self.login_busy = 0  # logins answered "busy, try later" (and tried again)
        self.ticket_logins = 0  # logins with a resumption ticket instead of the password
        self.ticket_refused = 0  # tickets refused (the client then logs in with its password)
        self.online = 0
        self.last_login_at = 0.0  # time.monotonic() of the latest successful login
        self.refusals: dict[str, int] = {}
        self.h_login = Histogram()  # login answered, from the login's due time
        self.h_hb = Histogram()  # heartbeat echoed, from its due time
        self.h_ack = Histogram()  # sender's ack, from the message's due time
        self.h_e2e = Histogram()  # delivery to the receiver, from the message's due time
        self.h_relogin = Histogram()  # reconnected and logged in, from the connection's loss

    def snapshot(self) -> dict[str, Any]:
        doc: dict[str, Any] = {f: getattr(self, f) for f in self.FIELDS}
        doc["online"] = self.online
        doc["last_login_at"] = self.last_login_at
        return doc

    def histograms(self) -> dict[str, Histogram]:
        return {
            "login": self.h_login,
            "heartbeat": self.h_hb,
            "ack": self.h_ack,
            "e2e": self.h_e2e,
            "relogin": self.h_relogin,
        }


class LoadConn(asyncio.Protocol):
    """One simulated client: logs in, echoes nothing, acks every chat message it receives."""

    __slots__ = (
        "client_type",
        "decoder",
        "due",
        "hb_due",
        "index",
        "lost_at",
        "name",
        "owner",
        "peers_seen",
        "sent_at",
        "seq",
        "state",
        "ticket",
        "transport",
        "user_id",
    )

    def __init__(self, owner: Any, index: int, name: str, client_type: int) -> None:
        self.owner = owner  # the load process (runtime.loadgen.worker.LoadProcess)
        self.index = index
        self.name = name
        self.client_type = client_type
        self.transport: Any = None
        self.decoder: FrameDecoder | None = None
        self.state = NEW
        self.user_id = 0
        self.seq = 0
        self.due = 0.0  # due time of the pending login
        self.hb_due = 0.0  # due time of the unanswered heartbeat (0: none)
        self.lost_at = 0.0
        self.sent_at: dict[int, float] | None = None  # seq -> due time of unacked messages (senders only)
        self.peers_seen: set[tuple[int, int]] | None = None  # (session, msg id) delivered (duplicates)
        self.ticket: bytes | None = None  # the resumption ticket to log in with next time (reconnect: ticket)

    # -- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        assert self.decoder is not None
        now = time.monotonic()
        owner = self.owner
        wire: Wire = owner.wire
        c: Counters = owner.counters
        acks: list[bytes] = []
        for frame in self.decoder.feed(data):
            cid = frame.command_id
            if cid == wire.data_cid:
                msg = wire.MsgData.FromString(frame.body)
                group = msg.msg_type & wire.group_bit
                session = msg.to_session_id if group else msg.from_user_id
                key = (session, msg.msg_id)
                seen = self.peers_seen
                if seen is None:
                    seen = self.peers_seen = set()
                if key in seen:
                    c.duplicates += 1
                else:
                    seen.add(key)
                    c.delivered += 1
                    (due,) = STAMP.unpack_from(msg.msg_data, 0)
                    c.h_e2e.record(int((now - due) * 1e6))
                ack = wire.MsgAck(
                    user_id=self.user_id,
                    session_id=session,
                    msg_id=msg.msg_id,
                    session_type=wire.session_group if group else wire.session_single,
                )
                acks.append(self._frame(wire.ack_cid, ack.SerializeToString()))
            elif cid == wire.ack_cid:
                due = self.sent_at.pop(frame.seq, None) if self.sent_at is not None else None
                if wire.MsgAck.FromString(frame.body).msg_id:
                    c.acked += 1
                    if due is not None:
                        c.h_ack.record(int((now - due) * 1e6))
                else:
                    c.refused += 1
            elif cid == wire.heartbeat_cid:
                if self.hb_due:
                    c.hb_answered += 1
                    c.h_hb.record(int((now - self.hb_due) * 1e6))
                    self.hb_due = 0.0
            elif cid in wire.presence_cids:
                c.presence += 1
            elif cid == wire.login_res_cid and self.state == LOGGING_IN:
                res = wire.LoginRes.FromString(frame.body)
                owner.login_answered(self, res.result_code, res.result_string, res.user_info.user_id, now)
            elif cid == wire.ticket_login_rsp_cid and self.state == LOGGING_IN:
                tres = wire.TicketLoginRsp.FromString(frame.body)
                if tres.result_code == 0:
                    self.ticket = tres.ticket or None
                    c.ticket_logins += 1
                    owner.login_answered(self, 0, "", tres.user_info.user_id, now)
                else:  # refused (expired, revoked...): the password, on this connection
                    c.ticket_refused += 1
                    self.ticket = None
                    self.send_login(owner.password)
            elif cid == wire.ticket_rsp_cid:
                tick = wire.TicketRsp.FromString(frame.body)
                self.ticket = tick.ticket if tick.result_code == 0 and tick.ticket else None
            elif cid == wire.kick_cid:
                c.kicked += 1
        if acks and self.transport is not None:
            self.transport.write(b"".join(acks))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.decoder = None
        self.owner.connection_lost(self)

    # -- sending -------------------------------------------------------------------------------------------
    def _frame(self, cid: int, body: bytes) -> bytes:
        self.seq = self.seq % 0xFFFF + 1
        return encode_frame(cid >> 8, cid, self.seq, body)

    def send_login(self, password_md5: str) -> None:
        self.seq = self.seq % 0xFFFF + 1
        self.state = LOGGING_IN
        self.transport.write(self.owner.wire.login_frame(self.name, password_md5, self.client_type, self.seq))

    def send_ticket_login(self) -> None:
        """Log in with the resumption ticket (kept from the last login) instead of the password."""
        assert self.ticket is not None
        self.seq = self.seq % 0xFFFF + 1
        self.state = LOGGING_IN
        self.transport.write(self.owner.wire.ticket_login_frame(self.ticket, self.client_type, self.seq))

    def ask_ticket(self) -> None:
        """Ask for a resumption ticket on this logged-in connection (for the next reconnect)."""
        wire: Wire = self.owner.wire
        self.transport.write(self._frame(wire.ticket_req_cid, wire.TicketReq().SerializeToString()))

    def send_heartbeat(self, due: float) -> bool:
        """Send a heartbeat due at `due`; False if the previous one is still unanswered (not sent)."""
        if self.hb_due:
            return False
        self.hb_due = due
        self.transport.write(self._frame(self.owner.wire.heartbeat_cid, b""))
        return True

    def send_message(self, prefix: bytes, due: float) -> None:
        wire: Wire = self.owner.wire
        frame = self._frame(wire.data_cid, prefix + STAMP.pack(due) + PAD)
        if self.sent_at is None:
            self.sent_at = {}
        self.sent_at[self.seq] = due
        self.transport.write(frame)
