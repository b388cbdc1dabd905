"""Runtime fuzz layer: the TeamTalk messaging model as a state machine against the in-process cluster.

Two seeded users (`alice`, `bob`) log in, send 1:1 messages, receive and ack pushes, read, ask for unread
counts, log out and reconnect, in any order hypothesis picks (rules gated by preconditions on who is online).
Invariants: every message the server acked has a fresh id, increasing per conversation; a recipient online
when
it was sent receives it exactly once, in order; unread counts match the model (messages after the last read).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from runtime.framing import encode_frame
from runtime.fuzz.cluster import MOBILE_CLIENT, ClusterTarget
from runtime.fuzz.live import recorder
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.wire import PeerClosed, RawConnection

USERS = ("alice", "bob")
SINGLE = 1  # SessionType SESSION_TYPE_SINGLE
SINGLE_TEXT = 1  # MsgType MSG_TYPE_SINGLE_TEXT


_SEQ = [0]


def next_seq() -> int:
    """Sequence numbers unique across every connection of the process (below the probe range).

    Unique on purpose: the msg server's dedup window (per sender: command, seq and body, 10 minutes) swallows
    a repeated (seq, body) pair even on a new connection, and without an ack when the first copy was acked
    from a callback; see tests/fuzz/test_findings.py.
    """
    _SEQ[0] = _SEQ[0] % 0xEFFF + 1
    return _SEQ[0]


class ChatClient:
    """One logged-in raw connection that speaks a few TeamTalk commands synchronously."""

    def __init__(self, target: ClusterTarget, stack: FuzzStack, user: str) -> None:
        self.stack = stack
        self.target = target
        self.user_id = target.users[user]
        self.conn: RawConnection = target.connect()
        target.login_as(self.conn, user)
        # The user's second device: the server tells it when the first one read a session (after biz stored
        # the read position), which is how the model knows a read ack took effect.
        self.observer: RawConnection = target.connect()
        target.login_as(self.observer, user, MOBILE_CLIENT)

    def send(self, command: str, **fields: Any) -> int:
        info = self.stack.command(command)
        seq = next_seq()
        frame = encode_frame(
            info.service_id, info.command_id, seq, info.message_class(**fields).SerializeToString()
        )
        recorder().add("send", command=command, hex=frame.hex(), user=self.user_id)
        self.conn.send_raw(frame)
        self.target.frames_sent += 1
        return seq

    def call(self, command: str, **fields: Any) -> Any:
        seq = self.send(command, **fields)
        reply = self.stack.command(self.stack.command(command).reply or command)
        frame = self.conn.wait_for(lambda f: f.command_id == reply.command_id and f.seq == seq)
        return reply.message_class.FromString(bytes(frame.body))

    def receive(self, expected: list[int], peers: set[int]) -> list[Any]:
        """Chat pushes from `peers`, in arrival order, once the expected ids arrived; each one is acked."""
        data_cid = self.stack.command("CID_MSG_DATA").command_id
        cls = self.stack.command("CID_MSG_DATA").message_class
        got: list[Any] = []

        def take(frame: Any) -> None:
            msg: Any = cls.FromString(bytes(frame.body))
            if msg.from_user_id in peers:
                got.append(msg)
            self.send(
                "CID_MSG_DATA_ACK",
                user_id=self.user_id,
                session_id=msg.from_user_id,
                msg_id=msg.msg_id,
                session_type=SINGLE,
            )

        while not set(expected) <= {m.msg_id for m in got}:
            take(self.conn.wait_for(lambda f: f.command_id == data_cid))
        for frame in self.conn.probe():
            if frame.command_id == data_cid:
                take(frame)
        return got

    def wait_read_notify(self, session_id: int, msg_id: int) -> None:
        """Until the second device hears that `session_id` was read up to `msg_id`."""
        info = self.stack.command("CID_MSG_READ_NOTIFY")
        while True:
            frame = self.observer.wait_for(lambda f: f.command_id == info.command_id)
            note: Any = info.message_class.FromString(bytes(frame.body))
            if note.session_id == session_id and note.msg_id == msg_id:
                return

    def close(self) -> None:
        self.conn.close()
        self.observer.close()


class ChatMachine(RuleBasedStateMachine):
    """Alice and Bob chatting through the cluster; `runtime.fuzz.stateful.machine_for` binds the target."""

    TARGET: ClusterTarget
    STACK: FuzzStack

    def __init__(self) -> None:
        super().__init__()
        recorder().begin()
        self.online: dict[str, ChatClient] = {}
        self.ids = {u: self.TARGET.users[u] for u in USERS}
        self.last_id: dict[tuple[str, str], int] = {}  # (from, to) -> last acked msg id
        self.pending: dict[str, list[int]] = {u: [] for u in USERS}  # pushes owed to an online user
        self.sent_to: dict[str, list[tuple[str, int]]] = {u: [] for u in USERS}  # (from, msg id) to a user
        self.read_upto: dict[tuple[str, str], int] = {}  # (reader, peer) -> msg id read up to
        self.baseline: dict[
            tuple[str, str], int | None
        ] = {}  # unread before this run, until a read clears it

    def other(self, user: str) -> str:
        return USERS[1 - USERS.index(user)]

    # -- rules -----------------------------------------------------------------------------------------------
    @rule(user=st.sampled_from(USERS))
    def login(self, user: str) -> None:
        if user in self.online:
            return
        recorder().add("login", user=user)
        client = self.online[user] = ChatClient(self.TARGET, self.STACK, user)
        peer = self.other(user)
        if (user, peer) not in self.baseline:
            self.baseline[(user, peer)] = self._server_unread(client, peer) - self._model_unread(
                user, peer, 0
            )

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data(), text=st.binary(min_size=1, max_size=64))
    def send(self, data: st.DataObject, text: bytes) -> None:
        sender = data.draw(st.sampled_from(sorted(self.online)), label="sender")
        to = self.other(sender)
        ack = self.online[sender].call(
            "CID_MSG_DATA",
            from_user_id=self.ids[sender],
            to_session_id=self.ids[to],
            msg_id=0,
            create_time=0,
            msg_type=SINGLE_TEXT,
            msg_data=text,
        )
        assert ack.msg_id > 0, f"{sender}->{to}: message refused (msg id 0)"
        last = self.last_id.get((sender, to), 0)
        assert ack.msg_id > last, f"{sender}->{to}: msg id {ack.msg_id} not after {last}"
        self.last_id[(sender, to)] = ack.msg_id
        self.sent_to[to].append((sender, ack.msg_id))
        if to in self.online:
            self.pending[to].append(ack.msg_id)

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.online)), label="user")
        self._receive(user)

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.online)), label="user")
        peer = self.other(user)
        upto = max([mid for frm, mid in self.sent_to[user] if frm == peer], default=0)
        if not upto:
            return
        self.online[user].send(
            "CID_MSG_READ_ACK",
            user_id=self.ids[user],
            session_id=self.ids[peer],
            msg_id=upto,
            session_type=SINGLE,
        )
        self.read_upto[(user, peer)] = upto
        self.baseline[(user, peer)] = 0
        # A read ack has no reply; the user's other device is told once the read position is stored.
        self.online[user].wait_read_notify(self.ids[peer], upto)

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data())
    def unread(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.online)), label="user")
        peer = self.other(user)
        got = self._server_unread(self.online[user], peer)
        base = self.baseline.get((user, peer)) or 0
        want = self._model_unread(user, peer, base)
        assert got == want, f"{user}: unread from {peer} is {got}, the model says {want}"

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data(), graceful=st.booleans())
    def leave(self, data: st.DataObject, graceful: bool) -> None:
        """Log out (graceful) or drop the connection; owed pushes are received first."""
        user = data.draw(st.sampled_from(sorted(self.online)), label="user")
        self._receive(user)
        client = self.online.pop(user)
        recorder().add("logout" if graceful else "disconnect", user=user)
        if graceful:
            try:
                client.call("CID_LOGIN_REQ_LOGINOUT")
                assert client.conn.wait_closed(), "logout left the connection open"
            except PeerClosed:
                pass
        client.close()

    # -- model -----------------------------------------------------------------------------------------------
    def _receive(self, user: str) -> None:
        peer = self.other(user)
        expected = self.pending[user]
        got = [m.msg_id for m in self.online[user].receive(expected, {self.ids[peer]})]
        assert len(got) == len(set(got)), f"{user}: a message was delivered twice: {got}"
        assert got == sorted(got), f"{user}: messages out of order: {got}"
        assert got == expected, f"{user}: received {got}, the model expected {expected}"
        self.pending[user] = []

    def _model_unread(self, user: str, peer: str, base: int) -> int:
        upto = self.read_upto.get((user, peer), 0)
        return base + sum(1 for frm, mid in self.sent_to[user] if frm == peer and mid > upto)

    def _server_unread(self, client: ChatClient, peer: str) -> int:
        rsp = client.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=client.user_id)
        return sum(i.unread_cnt for i in rsp.unreadinfo_list if i.session_id == self.ids[peer])

    def teardown(self) -> None:
        for client in self.online.values():
            client.close()
