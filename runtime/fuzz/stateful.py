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
from runtime.fuzz.targets import Target, login_succeeded
from runtime.fuzz.wire import NoAnswer, PeerClosed, RawConnection

MAX_SESSIONS = 4


def to_json(value: Any) -> Any:
    """A rule argument as JSON (bytes as {"hex": ...}, sets as sorted lists)."""
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, set | frozenset):
        return sorted(to_json(v) for v in value)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"hex"}:
        return bytes.fromhex(value["hex"])
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


class Replayable:
    """Rules that draw their arguments, then run `do(rule, **args)`: `do` records the rule with the drawn
    (concrete) arguments and calls `_<rule>`. A reproducer's `rule` steps replay by calling `do` again on a
    fresh machine (`replay_rules`), with the model's checks, without hypothesis."""

    def do(self, rule: str, **args: Any) -> Any:
        live.recorder().add("rule", rule=rule, args={k: to_json(v) for k, v in args.items()})
        return getattr(self, "_" + rule)(**args)

    def replay_checks(self) -> None:
        """The machine's invariants, run after each replayed rule."""


def replay_rules(machine: type[RuleBasedStateMachine], steps: list[dict[str, Any]]) -> None:
    """Run a recorded sequence of rules on a fresh `machine` (bound by `machine_for`); raises the model's
    AssertionError if the failure is still there."""
    instance: Any = machine()
    try:
        for step in steps:
            if step["op"] != "rule":
                continue
            instance.do(step["rule"], **{k: from_json(v) for k, v in step["args"].items()})
            instance.replay_checks()
    finally:
        instance.teardown()


class Session:
    """One client connection and the stage the model believes it is in."""

    def __init__(self, conn: RawConnection, logged_in: bool) -> None:
        self.conn = conn
        self.logged_in = logged_in
        self.seq = 0

    def next_seq(self) -> int:
        self.seq = (self.seq % 0x7FFF) + 1
        return self.seq


class SessionMachine(Replayable, RuleBasedStateMachine):
    """Client sessions against `TARGET`; subclasses made by `machine_for` bind the stack and the target.

    The model follows each session's stage: a session is logged in once a login command it sent is answered
    with a reply saying so (`runtime.fuzz.targets.login_succeeded`), or when it was opened logged in."""

    TARGET: Target
    STACK: FuzzStack
    COMMANDS: list[str]

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.open: list[Session] = []
        live.recorder().begin()
        self._logins = {c.name for c in self.STACK.login_commands()}

    @rule(target=sessions, login=st.booleans())
    def connect(self, login: bool) -> Any:
        return self.do("connect", login=login)

    def _connect(self, login: bool) -> Session:
        session = Session(self.TARGET.connect(login=login), login)
        self.open.append(session)
        return session

    @precondition(lambda self: bool(self.open))
    @rule(session=sessions, data=st.data())
    def request(self, session: Session, data: st.DataObject) -> None:
        # Draw whatever the session's state: what the server did to it must not change what is drawn
        # (hypothesis replays the same draws while shrinking).
        name = data.draw(st.sampled_from(self.COMMANDS), label="command")
        body = data.draw(
            self.STACK.strats.valid(self.STACK.message_of(name)), label="body"
        ).SerializeToString()
        self.do("request", session=self.open.index(session), command=name, body=body)

    def _request(self, session: int, command: str, body: bytes) -> None:
        conn_state = self.open[session]
        if conn_state.conn.closed:
            return
        info = self.STACK.command(command)
        expected = live.classify(self.TARGET, info, body, authenticated=conn_state.logged_in)
        seq = conn_state.next_seq()
        conn_state.conn.send_raw(encode_frame(info.service_id, info.command_id, seq, body))
        self.TARGET.frames_sent += 1
        self.TARGET.sent_commands.add(command)
        if expected == "close":
            assert conn_state.conn.wait_closed(), (
                f"{command}: connection left open after input it must refuse"
            )
            return
        reply = self.STACK.command(info.reply) if info.reply else None
        if expected == "accept" and command in self._logins and reply is not None:
            # A login request: the session is logged in if (and only if) the reply says it succeeded.
            try:
                frame = conn_state.conn.wait_for(lambda f: f.command_id == reply.command_id and f.seq == seq)
            except (PeerClosed, NoAnswer) as exc:
                if self.TARGET.replies_always:
                    raise AssertionError(f"{command}: valid login not answered: {exc}") from None
                return
            if login_succeeded(reply.message_class.FromString(bytes(frame.body))):
                conn_state.logged_in = True
        try:
            conn_state.conn.probe()
        except (PeerClosed, NoAnswer) as exc:
            if expected == "accept" and self.TARGET.replies_always:
                raise AssertionError(f"{command}: session broke after a valid request: {exc}") from None

    @precondition(lambda self: bool(self.open))
    @rule(session=sessions)
    def heartbeat(self, session: Session) -> None:
        self.do("heartbeat", session=self.open.index(session))

    def _heartbeat(self, session: int) -> None:
        conn = self.open[session].conn
        if not conn.closed:
            conn.probe()

    @precondition(lambda self: bool(self.open))
    @rule(session=consumes(sessions))
    def disconnect(self, session: Session) -> None:
        self.do("disconnect", session=self.open.index(session))

    def _disconnect(self, session: int) -> None:
        self.open[session].conn.close()

    @invariant()
    def bystander_unaffected(self) -> None:
        self.replay_checks()

    def replay_checks(self) -> None:
        self.TARGET.check_handlers()
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
