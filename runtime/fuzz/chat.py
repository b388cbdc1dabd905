"""Runtime fuzz layer: the TeamTalk messaging model as a state machine against the in-process cluster.

Three seeded users (`alice`, `bob`, `carol`) log in, send 1:1 messages, receive and ack pushes, read, ask for
unread counts, log out and reconnect, in any order hypothesis picks (rules gated by preconditions on who is
online). Invariants: every message the server acked has a fresh id, increasing per conversation; a recipient
online when it was sent receives it exactly once, in order; unread counts match the model (messages after the
last read). `runtime.fuzz.stateful_group.GroupChatMachine` adds groups on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from runtime.framing import encode_frame
from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.live import recorder
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.stateful import Replayable
from runtime.fuzz.wire import PeerClosed, RawConnection
from runtime.stages.policy import parse_rate

if TYPE_CHECKING:
    from generated.teamtalk.registry import Enums

USERS = ("alice", "bob", "carol")

# A conversation: (session type, session id as the receiver sees it: the peer's user id or the group id).
Conv = tuple[int, int]


_SEQ = [0]


def next_seq() -> int:
    """Sequence numbers unique across every connection of the process (below the probe range).

    Unique on purpose: the msg server's dedup window (per sender: command, seq and body, 10 minutes) swallows
    a repeated (seq, body) pair even on a new connection, and without an ack when the first copy was acked
    from a callback; see tests/fuzz/test_findings.py.
    """
    _SEQ[0] = _SEQ[0] % 0xEFFF + 1
    return _SEQ[0]


def conv_of(msg: Any, enums: type[Enums]) -> Conv:
    """The conversation a pushed IMMsgData belongs to, from its receiver's side."""
    if msg.msg_type & enums.MsgTypeBits.GROUP:
        return (int(enums.SessionType.SESSION_TYPE_GROUP), msg.to_session_id)
    return (int(enums.SessionType.SESSION_TYPE_SINGLE), msg.from_user_id)


class ChatClient:
    """One logged-in raw connection that speaks a few TeamTalk commands synchronously."""

    def __init__(self, target: ClusterTarget, stack: FuzzStack, login: str) -> None:
        self.stack = stack
        self.target = target
        self.user_id = target.users[login]
        self.conn: RawConnection = target.connect()
        target.login_as(self.conn, login)
        # The user's second device: the server tells it when the first one read a session (after biz stored
        # the read position), which is how the model knows a read ack took effect.
        self.observer: RawConnection = target.connect()
        target.login_as(self.observer, login, target.mobile_client)
        self.sent: dict[str, int] = {}  # frames of each command sent on `conn`

    def budget(self, command: str) -> int:
        """Frames of `command` the connection may still send without ever meeting its input rate limit.

        The limit is a token bucket per connection and command (`rate`, `burst`), and a frame over it is
        dropped unanswered (IMMsgData: 20/s). The model stays within the burst, counting frames rather than
        time, so what a rule does never depends on the clock (hypothesis replays a run and must see the same).
        """
        policy = self.stack.command(command).stages.get("input", {})
        if policy.get("rate") is None:
            return 1 << 30
        burst = int(max(float(policy.get("burst", parse_rate(policy["rate"]))), 1.0))
        return burst - self.sent.get(command, 0)

    def send(self, command: str, **fields: Any) -> int:
        info = self.stack.command(command)
        seq = next_seq()
        frame = encode_frame(
            info.service_id, info.command_id, seq, info.message_class(**fields).SerializeToString()
        )
        recorder().add("sent", command=command, hex=frame.hex(), user=self.user_id)  # informative
        self.sent[command] = self.sent.get(command, 0) + 1
        self.conn.send_raw(frame)
        self.target.frames_sent += 1
        self.target.sent_commands.add(command)
        return seq

    def call(self, command: str, **fields: Any) -> Any:
        seq = self.send(command, **fields)
        reply = self.stack.command(self.stack.command(command).reply or command)
        frame = self.conn.wait_for(lambda f: f.command_id == reply.command_id and f.seq == seq)
        return reply.message_class.FromString(bytes(frame.body))

    def receive(self, expected: dict[Conv, list[int]]) -> list[tuple[Conv, int]]:
        """Every chat push, as (conversation, msg id) in arrival order, once the expected ones arrived (then
        whatever else came before a heartbeat echo); each one is acked with the key the server tracks."""
        data_cid = self.stack.command("CID_MSG_DATA").command_id
        cls = self.stack.command("CID_MSG_DATA").message_class
        want = {(conv, mid) for conv, ids in expected.items() for mid in ids}
        got: list[tuple[Conv, int]] = []

        def take(frame: Any) -> None:
            msg: Any = cls.FromString(bytes(frame.body))
            conv = conv_of(msg, self.stack.enums)
            got.append((conv, msg.msg_id))
            self.send(
                "CID_MSG_DATA_ACK",
                user_id=self.user_id,
                session_id=conv[1],
                msg_id=msg.msg_id,
                session_type=conv[0],
            )

        while not want <= set(got):
            take(self.conn.wait_for(lambda f: f.command_id == data_cid))
        for frame in self.barrier():
            if frame.command_id == data_cid:
                take(frame)
        return got

    def barrier(self) -> list[Any]:
        """A round trip on the main connection; returns the frames that arrived before its answer (so every
        push queued for the connection before it), and empties the inbox. A clock request rather than a
        heartbeat: heartbeats are rate limited to 2/s per connection (dropped beyond), a few times fewer
        than the machine needs; with no budget left, the frames already received."""
        command = "CID_MSG_TIME_REQUEST"
        if self.budget(command) > 0:
            self.call(command)
        before, self.conn.inbox = self.conn.inbox, []
        return before

    def wait_read_notify(self, session_type: int, session_id: int, msg_id: int) -> None:
        """Until the second device hears that the session was read up to `msg_id`."""
        info = self.stack.command("CID_MSG_READ_NOTIFY")
        while True:
            frame = self.observer.wait_for(lambda f: f.command_id == info.command_id)
            note: Any = info.message_class.FromString(bytes(frame.body))
            if (note.session_type, note.session_id, note.msg_id) == (session_type, session_id, msg_id):
                return

    def unread(self) -> dict[Conv, int]:
        """The server's unread counts by conversation."""
        rsp = self.call("CID_MSG_UNREAD_CNT_REQUEST", user_id=self.user_id)
        out: dict[Conv, int] = {}
        for i in rsp.unreadinfo_list:
            conv = (int(i.session_type), int(i.session_id))
            assert conv not in out, f"unread lists {conv} twice"
            out[conv] = i.unread_cnt
        return out

    def close(self) -> None:
        self.conn.close()
        self.observer.close()


class ChatMachine(Replayable, RuleBasedStateMachine):
    """Three users chatting 1:1 through the cluster; `runtime.fuzz.stateful.machine_for` binds the target.

    Every run (example) plays with a cast of users no earlier run used (`ClusterTarget.cast`), so what the
    cluster stored for earlier runs never shows in this one. Rules draw their arguments and call `do`, so a
    failing run's rules replay (`runtime.fuzz.stateful.replay_rules`)."""

    TARGET: ClusterTarget
    STACK: FuzzStack

    def __init__(self) -> None:
        super().__init__()
        recorder().begin()
        self.online: dict[str, ChatClient] = {}
        cast = self.TARGET.cast()
        self.logins = dict(zip(USERS, sorted(cast), strict=True))  # role -> login name of this run
        self.ids = {u: cast[login] for u, login in self.logins.items()}
        self.names = {uid: u for u, uid in self.ids.items()}
        self.last_id: dict[frozenset[str], int] = {}  # 1:1 pair -> last acked msg id (one counter per pair)
        self.pending: dict[str, dict[Conv, list[int]]] = {u: {} for u in USERS}  # pushes owed to online users
        self.sent_to: dict[str, list[tuple[str, int]]] = {u: [] for u in USERS}  # (from, msg id) to a user
        self.read_upto: dict[tuple[str, str], int] = {}  # (reader, peer) -> msg id read up to
        enums = self.STACK.enums
        self.single = int(enums.SessionType.SESSION_TYPE_SINGLE)
        self.group = int(enums.SessionType.SESSION_TYPE_GROUP)

    def able(self, command: str, frames: int = 1) -> list[str]:
        """Online users whose connection may still send `frames` frames of `command` (see `budget`)."""
        return sorted(u for u, c in self.online.items() if c.budget(command) >= frames)

    def others(self, user: str) -> list[str]:
        return [u for u in USERS if u != user]

    def owe(self, user: str, conv: Conv, msg_id: int) -> None:
        """The model expects `user`'s main connection to be pushed `msg_id` of `conv`."""
        self.pending[user].setdefault(conv, []).append(msg_id)

    # -- rules -----------------------------------------------------------------------------------------------
    @rule(user=st.sampled_from(USERS))
    def login(self, user: str) -> None:
        if user in self.online:
            return
        self.do("login", user=user)

    def _login(self, user: str) -> ChatClient:
        if user in self.online:
            return self.online[user]
        client = self.online[user] = ChatClient(self.TARGET, self.STACK, self.logins[user])
        self.check_unread(user, client.unread())
        return client

    @precondition(lambda self: bool(self.able("CID_MSG_DATA")))
    @rule(data=st.data(), text=st.binary(min_size=1, max_size=64))
    def send(self, data: st.DataObject, text: bytes) -> None:
        sender = data.draw(st.sampled_from(self.able("CID_MSG_DATA")), label="sender")
        to = data.draw(st.sampled_from(self.others(sender)), label="to")
        self.do("send", sender=sender, to=to, text=text)

    def _send(self, sender: str, to: str, text: bytes) -> None:
        ack = self.online[sender].call(
            "CID_MSG_DATA",
            from_user_id=self.ids[sender],
            to_session_id=self.ids[to],
            msg_id=0,
            create_time=0,
            msg_type=self.STACK.enums.MsgType.MSG_TYPE_SINGLE_TEXT,
            msg_data=text,
        )
        assert ack.msg_id > 0, f"{sender}->{to}: message refused (msg id 0)"
        pair = frozenset((sender, to))
        last = self.last_id.get(pair, 0)
        assert ack.msg_id > last, f"{sender}->{to}: msg id {ack.msg_id} not after {last}"
        self.last_id[pair] = ack.msg_id
        self.sent_to[to].append((sender, ack.msg_id))
        if to in self.online:
            self.owe(to, (self.single, self.ids[sender]), ack.msg_id)

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data())
    def receive(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(sorted(self.online)), label="user")
        self.do("receive", user=user)

    @precondition(lambda self: any(self.sent_to[u] for u in self.able("CID_MSG_READ_ACK")))
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        readers = [u for u in self.able("CID_MSG_READ_ACK") if self.sent_to[u]]
        user = data.draw(st.sampled_from(readers), label="user")
        peer = data.draw(st.sampled_from(sorted({frm for frm, _ in self.sent_to[user]})), label="peer")
        self.do("read", user=user, peer=peer)

    def _read(self, user: str, peer: str) -> None:
        upto = max(mid for frm, mid in self.sent_to[user] if frm == peer)
        self.online[user].send(
            "CID_MSG_READ_ACK",
            user_id=self.ids[user],
            session_id=self.ids[peer],
            msg_id=upto,
            session_type=self.single,
        )
        self.read_upto[(user, peer)] = upto
        # A read ack has no reply; the user's other device is told once the read position is stored.
        self.online[user].wait_read_notify(self.single, self.ids[peer], upto)

    @precondition(lambda self: bool(self.able("CID_MSG_UNREAD_CNT_REQUEST")))
    @rule(data=st.data())
    def unread(self, data: st.DataObject) -> None:
        user = data.draw(st.sampled_from(self.able("CID_MSG_UNREAD_CNT_REQUEST")), label="user")
        self.do("unread", user=user)

    def _unread(self, user: str) -> None:
        server = self.online[user].unread()
        self.check_unread(user, server)

    def check_unread(self, user: str, server: dict[Conv, int]) -> None:
        for peer in self.others(user):
            got = server.get((self.single, self.ids[peer]), 0)
            want = self._model_unread(user, peer)
            assert got == want, f"{user}: unread from {peer} is {got}, the model says {want}"

    @precondition(lambda self: bool(self.online))
    @rule(data=st.data(), graceful=st.booleans())
    def leave(self, data: st.DataObject, graceful: bool) -> None:
        """Log out (graceful) or drop the connection; owed pushes are received first."""
        user = data.draw(st.sampled_from(sorted(self.online)), label="user")
        self.do("leave", user=user, graceful=graceful)

    def _leave(self, user: str, graceful: bool) -> None:
        self._receive(user)
        client = self.online.pop(user)
        graceful = graceful and client.budget("CID_LOGIN_REQ_LOGINOUT") > 0
        if graceful:
            try:
                client.call("CID_LOGIN_REQ_LOGINOUT")
                assert client.conn.wait_closed(), "logout left the connection open"
            except PeerClosed:
                pass
        client.close()

    # -- model -----------------------------------------------------------------------------------------------
    def _receive(self, user: str) -> None:
        """Every push owed to `user` arrives exactly once, in msg-id order per conversation, and no other."""
        expected = self.pending[user]
        pushes = self.online[user].receive(expected)
        assert len(pushes) == len(set(pushes)), f"{user}: a message was delivered twice: {pushes}"
        got: dict[Conv, list[int]] = {}
        for conv, mid in pushes:
            got.setdefault(conv, []).append(mid)
        for conv, ids in got.items():
            assert ids == sorted(ids), f"{user}: messages of {conv} out of order: {ids}"
        assert got == expected, f"{user}: received {got}, the model expected {expected}"
        self.pending[user] = {}

    def _model_unread(self, user: str, peer: str) -> int:
        upto = self.read_upto.get((user, peer), 0)
        return sum(1 for frm, mid in self.sent_to[user] if frm == peer and mid > upto)

    def teardown(self) -> None:
        for client in self.online.values():
            client.close()
