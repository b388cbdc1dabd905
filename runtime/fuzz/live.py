"""Runtime fuzz layer: live-server invariants: what must hold after any input reaches a running server.

For every frame sent the expected outcome is predicted from the spec, with the same stage units the server
runs: `close` (undecodable body, required field missing, a command before login, a refusal whose action is
close), `refuse` (a constraint or reject rule: no reply, nothing stored), `ignore` (a command a client may not
send), or `accept`. Then, whatever the input: the server still answers a heartbeat on a new connection, an
older bystander connection is unaffected, and refused input left the storage digest unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from runtime.connection import HEARTBEAT_COMMAND_ID
from runtime.errors import BodyError, StageError
from runtime.framing import Frame, encode_frame
from runtime.fuzz.targets import Target, login_succeeded
from runtime.fuzz.wire import NoAnswer, PeerClosed, RawConnection
from runtime.registry import CommandInfo

FUZZ_SEQ = 0x0BAD


@dataclass
class Recorder:
    """The steps of the example being run (per thread): after hypothesis shrinks a failure and replays it
    last, they are the minimal reproducer's command sequence."""

    steps: list[dict[str, Any]] = field(default_factory=list)

    def begin(self) -> None:
        self.steps = []

    def add(self, op: str, **data: Any) -> None:
        self.steps.append({"op": op, **data})


_LOCAL = threading.local()


def recorder() -> Recorder:
    """This thread's recorder."""
    rec: Recorder | None = getattr(_LOCAL, "recorder", None)
    if rec is None:
        rec = _LOCAL.recorder = Recorder()
    return rec


def classify(target: Target, info: CommandInfo, body: bytes, *, authenticated: bool) -> str:
    """The outcome the spec prescribes for `body` sent as `info` on a client connection: accept, close,
    ignore (not a command this port serves), refuse (dropped unanswered) or reject (refused, and answered
    with an error where the command's reply can carry one). Stored data changes only on accept."""
    # In the order the server applies them: connection layer (heartbeat echo, auth gate), dispatcher (does
    # this port's service host the command, may a client send it), then the stages.
    if info.command_id == HEARTBEAT_COMMAND_ID:
        return "accept"  # echoed by the connection layer whatever the body
    authenticated = authenticated or target.auto_auth
    if not authenticated and info.policy("input").get("require_auth", True):
        return "close"
    served = target.serves is None or bool(target.serves & set(info.hosted_by))
    if not info.from_client or not info.hosted_by or not served:
        return "ignore"
    stages = target.stages()[info.command_id]
    try:
        stages.input.check_size(len(body))
        frame = Frame(info.service_id, info.command_id, FUZZ_SEQ, body)
        msg = stages.unpack.unpack(frame, info.message_class, None, None)
        stages.input.check_required(msg)
        stages.input.check_message(msg, target.fuzz_user_id if authenticated else 0)
    except BodyError:
        return "close"
    except StageError as exc:
        # `reject`: refused and answered with an error where the reply can carry one; `drop`: not answered.
        return {"close": "close", "reject": "reject"}.get(exc.action, "refuse")
    except Exception:  # protobuf's undocumented parse errors: the dispatcher closes on those too
        return "close"
    return "accept"


def send_checked(target: Target, info: CommandInfo, body: bytes, *, login: bool = True) -> str:
    """Send `body` as `info` on a fresh connection and check every invariant; returns the outcome."""
    rec = recorder()
    target.prepare()
    expected = classify(target, info, body, authenticated=login)
    rec.add("connect", login=login)
    conn = target.connect(login=login)
    before = None
    if expected in ("close", "refuse", "reject", "ignore"):
        target.settle(conn)
        before = target.storage_digest()
    frame = encode_frame(info.service_id, info.command_id, FUZZ_SEQ, body)
    rec.add("send", command=info.name, hex=frame.hex(), expect=expected)
    try:
        conn.send_raw(frame)
        target.frames_sent += 1
        target.sent_commands.add(info.name)
        check_outcome(target, conn, info, expected)
    finally:
        conn.close()
    check_server(target)
    if before is not None:
        after = target.storage_digest()
        assert after == before, f"{info.name}: storage changed by {expected} input"
    return expected


def check_outcome(target: Target, conn: RawConnection, info: CommandInfo, expected: str) -> None:
    """The connection reacted to one frame as the spec says."""
    if expected == "close":
        assert conn.wait_closed(), (
            f"{info.name}: the server kept a connection open after input it must refuse"
        )
        return
    try:
        frames = conn.probe()
    except PeerClosed:
        if expected == "accept" and target.replies_always:
            raise AssertionError(f"{info.name}: valid input closed the connection") from None
        return
    except NoAnswer:
        raise AssertionError(f"{info.name}: no heartbeat answer after the frame (connection hung)") from None
    reply = target.stack.registry.by_name(info.reply) if info.reply else None
    replied = reply is not None and any(
        f.command_id == reply.command_id and f.seq == FUZZ_SEQ for f in frames
    )
    if expected == "accept" and reply is not None and not replied and not conn.closed:
        # Handlers that suspend (a biz round trip) answer after the probe: wait for the reply, so the
        # request's effects are complete before the next example looks at the storage.
        try:
            conn.wait_for(
                lambda f: f.command_id == reply.command_id and f.seq == FUZZ_SEQ, target.reply_timeout
            )
            replied = True
        except (PeerClosed, NoAnswer) as exc:
            target.unanswered += 1
            target.unanswered_by[info.name] = target.unanswered_by.get(info.name, 0) + 1
            if target.answers_valid_requests and not isinstance(exc, PeerClosed):
                target.check_handlers()  # a handler that raised explains the silence, with its traceback
                raise AssertionError(
                    f"{info.name}: valid request not answered with {reply.name} "
                    f"within {target.reply_timeout:g}s"
                ) from None
    if expected == "accept" and reply is not None and target.replies_always:
        assert replied, f"{info.name}: valid request not answered with {reply.name}"
    if expected == "reject" and not replied and not conn.closed:
        # Refused input is answered: an error reply where the command's reply can carry one, else a close.
        if reply is not None:
            try:
                conn.wait_for(
                    lambda f: f.command_id == reply.command_id and f.seq == FUZZ_SEQ, target.reply_timeout
                )
                replied = True
            except PeerClosed:
                pass
            except NoAnswer:
                pass
        if not replied and not conn.closed and target.enforces_limits:
            assert conn.wait_closed(0.5), (
                f"{info.name}: refused input got neither an error reply nor a close "
                "(it looks like a lost frame)"
            )
    if expected in ("refuse", "ignore"):
        assert not replied, f"{info.name}: {expected}d input was answered"


def check_server(target: Target) -> None:
    """The server survived: no handler raised, a new connection is answered and the bystander is
    unaffected."""
    recorder().add("check_server")
    target.check_handlers()
    target.check_alive()
    target.check_bystander()


def check_frame_limit(target: Target, offset: int) -> None:
    """A frame `offset` bytes longer than the spec's limit (an unknown command, on a logged-in connection):
    one that fits is taken (the connection stays open and answers a heartbeat), one over it closes the
    connection; the server and the bystander carry on either way."""
    limit = target.max_frame_bytes
    recorder().add("frame_limit", offset=offset, limit=limit)
    target.prepare()
    conn = target.connect(login=True)
    size = limit + offset
    try:
        try:
            conn.send_raw(framing_limit_frame(limit, offset))
            target.frames_sent += 1
        except PeerClosed:
            assert offset > 0, (
                f"the server closed the connection while a {size}-byte frame (the limit is "
                f"{limit}) was being sent"
            )
        if offset > 0:
            assert conn.wait_closed(), (
                f"a frame of {size} bytes was accepted: the spec's max_frame_bytes is {limit}"
            )
        else:
            try:
                conn.probe()
            except PeerClosed:
                raise AssertionError(
                    f"a frame of {size} bytes closed the connection: the spec's max_frame_bytes is {limit}"
                ) from None
    finally:
        conn.close()
    check_server(target)


def framing_limit_frame(limit: int, offset: int) -> bytes:
    from runtime.fuzz.framing import limit_frame

    return limit_frame(limit, offset)


AUTH_KINDS = ("wrong", "empty", "right")


def check_auth(target: Target, user: str, kind: str, wrong: str) -> None:
    """Log in as a seeded user with a `wrong` password, an `empty` one or the `right` one: only the right
    one may succeed (and it must). A refused login leaves the connection unauthenticated."""
    accounts = target.accounts()
    assert accounts is not None, "the target has no seeded accounts"
    real = accounts[user]
    password = {"empty": "", "right": real}.get(kind, wrong if wrong != real else wrong + "x")
    recorder().add("auth", user=user, kind=kind, password=password)
    target.prepare()
    info, msg = target.login_request(user, password)
    reply_info = target.stack.command(info.reply or info.name)
    shown = "empty" if password == "" and kind != "right" else kind
    what = f"login as {user!r} ({len(user)} characters) with the {shown} password {password!r}"
    with target.connect() as conn:
        conn.send_frame(info.service_id, info.command_id, FUZZ_SEQ, msg.SerializeToString())
        target.frames_sent += 1
        try:
            frame = conn.wait_for(lambda f: f.command_id == reply_info.command_id and f.seq == FUZZ_SEQ)
        except (PeerClosed, NoAnswer) as exc:
            raise AssertionError(f"{what}: no login reply ({exc})") from None
        accepted = login_succeeded(reply_info.message_class.FromString(bytes(frame.body)))
        if kind == "right":
            assert accepted, f"{what}: refused"
        else:
            assert not accepted, f"{what}: accepted"
    check_server(target)


def send_raw_checked(target: Target, chunks: list[bytes], *, login: bool = True) -> None:
    """Send arbitrary bytes (mutated frames) on a fresh connection; only the server-wide invariants apply."""
    rec = recorder()
    target.prepare()
    rec.add("connect", login=login)
    conn = target.connect(login=login)
    try:
        for chunk in chunks:
            rec.add("raw", hex=chunk.hex())
            try:
                conn.send_raw(chunk)
            except PeerClosed:
                break
            target.frames_sent += 1
        try:
            conn.probe(
                timeout=0.25
            )  # a cut-short frame leaves the connection waiting: allowed, so wait briefly
        except (PeerClosed, NoAnswer):
            pass  # closing a connection that sent garbage is allowed; hanging it is checked via the bystander
    finally:
        conn.close()
    check_server(target)
