"""Runtime fuzz layer: stateful fuzzing: client sessions as a hypothesis `RuleBasedStateMachine`.

`SessionMachine` works for any stack: rules connect (with or without login), send valid requests of hosted
commands, heartbeat, disconnect; preconditions gate them on the session's stage (connected, logged in). Its
model predicts each request's outcome with the spec's stage units and checks it, and that a bystander
connection is never affected. On the TeamTalk cluster, `runtime.fuzz.stateful_group.GroupChatMachine` (the
1:1 model of `runtime.fuzz.chat.ChatMachine` plus TMP groups) takes its place (see there). `run_machine` picks
the machine for the target.
"""

from __future__ import annotations

from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runtime.framing import encode_frame
from runtime.fuzz import live
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.targets import Target
from runtime.fuzz.wire import NoAnswer, PeerClosed, RawConnection

MAX_SESSIONS = 4


class Session:
    """One client connection and the stage the model believes it is in."""

    def __init__(self, conn: RawConnection, logged_in: bool) -> None:
        self.conn = conn
        self.logged_in = logged_in
        self.seq = 0

    def next_seq(self) -> int:
        self.seq = (self.seq % 0x7FFF) + 1
        return self.seq


class SessionMachine(RuleBasedStateMachine):
    """Client sessions against `TARGET`; subclasses made by `machine_for` bind the stack and the target."""

    TARGET: Target
    STACK: FuzzStack
    COMMANDS: list[str]

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.open: list[Session] = []
        live.recorder().begin()

    @rule(target=sessions, login=st.booleans())
    def connect(self, login: bool) -> Any:
        live.recorder().add("connect", login=login)
        session = Session(self.TARGET.connect(login=login), login)
        self.open.append(session)
        return session

    @precondition(lambda self: bool(self.open))
    @rule(session=sessions, data=st.data())
    def request(self, session: Session, data: st.DataObject) -> None:
        if session.conn.closed:
            return
        name = data.draw(st.sampled_from(self.COMMANDS), label="command")
        info = self.STACK.command(name)
        body = data.draw(
            self.STACK.strats.valid(self.STACK.message_of(name)), label="body"
        ).SerializeToString()
        expected = live.classify(self.TARGET, info, body, authenticated=session.logged_in)
        seq = session.next_seq()
        frame = encode_frame(info.service_id, info.command_id, seq, body)
        live.recorder().add("send", command=name, hex=frame.hex(), expect=expected)
        session.conn.send_raw(frame)
        self.TARGET.frames_sent += 1
        if expected == "close":
            assert session.conn.wait_closed(), f"{name}: connection left open after input it must refuse"
            return
        try:
            session.conn.probe()
        except (PeerClosed, NoAnswer) as exc:
            if expected == "accept" and self.TARGET.replies_always:
                raise AssertionError(f"{name}: session broke after a valid request: {exc}") from None

    @precondition(lambda self: bool(self.open))
    @rule(session=sessions)
    def heartbeat(self, session: Session) -> None:
        if session.conn.closed:
            return
        live.recorder().add("probe")
        session.conn.probe()

    @precondition(lambda self: bool(self.open))
    @rule(session=consumes(sessions))
    def disconnect(self, session: Session) -> None:
        live.recorder().add("disconnect")
        session.conn.close()

    @invariant()
    def bystander_unaffected(self) -> None:
        self.TARGET.check_bystander()

    def teardown(self) -> None:
        for session in self.open:
            session.conn.close()


def machine_for(stack: FuzzStack, target: Target) -> type[RuleBasedStateMachine]:
    """The machine class bound to a stack and a target (the chat model on the TeamTalk cluster)."""
    from runtime.fuzz.cluster import ClusterTarget

    if isinstance(target, ClusterTarget):
        from runtime.fuzz.stateful_group import GroupChatMachine

        return type("BoundChatMachine", (GroupChatMachine,), {"TARGET": target, "STACK": stack})
    commands = [c.name for c in stack.registry if c.from_client and c.hosted_by]
    return type(
        "BoundSessionMachine", (SessionMachine,), {"TARGET": target, "STACK": stack, "COMMANDS": commands}
    )


def run_machine(stack: FuzzStack, target: Target, opts: settings) -> None:
    """Run the stack's state machine against `target` under hypothesis settings `opts`."""
    machine = machine_for(stack, target)
    if not getattr(machine, "COMMANDS", True):
        return
    steps = getattr(machine, "MIN_STEPS", 0)
    if opts.stateful_step_count < steps:  # a model whose rules need a setup (groups) needs longer runs
        opts = settings(opts, stateful_step_count=steps)
    run_state_machine_as_test(machine, settings=opts)
