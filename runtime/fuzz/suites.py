"""Runtime fuzz layer: the fuzz suites as cases (a strategy and a check), shared by generated tests, engine.

Suites: `roundtrip` (every message), `frames` (every command's frames, the decoder and the connection on
malformed bytes, the frame-length limit), `live` (every hosted command against a running server: valid
bodies, malformed bodies, frames before login, server-only commands from a client, mutated frames, frames at
and over the spec's length limit), `auth` (wrong, empty and right passwords for seeded users whose names
have the boundary lengths; only on targets with seeded accounts) and `stateful` (see
`runtime.fuzz.stateful`). A case runs under `hypothesis.given`; the recorder keeps each example's steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from runtime.framing import FrameDecoder, encode_frame
from runtime.fuzz import framing, live, mutate
from runtime.fuzz.live import recorder
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.strategies import boundary_messages
from runtime.fuzz.targets import Target

SUITES = ("roundtrip", "frames", "live", "auth", "stateful")
Strat = st.SearchStrategy[Any]


@dataclass(frozen=True)
class Case:
    """One property: `check(example)` must hold for every example `strategy` draws."""

    suite: str
    name: str  # e.g. "live/malformed/CID_MSG_DATA"
    strategy: Strat
    check: Callable[[Any], None]
    command: str = ""
    explicit: tuple[Any, ...] = ()  # examples tried first, before random ones (boundary values)

    def run(self, opts: settings, counter: Callable[[], None] | None = None, seed: int | None = None) -> None:
        """Run under hypothesis with `opts` (and a fixed `seed` if given); raises the (shrunk) failure."""

        failed = False

        def body(example: Any) -> None:
            nonlocal failed
            recorder().begin()
            if counter is not None and not failed:  # not while shrinking: the counter may end the run
                counter()
            try:
                self.check(example)
            except Exception:
                failed = True
                raise

        test = given(self.strategy)(body)
        for value in reversed(self.explicit):
            test = example(value)(test)
        test = settings(opts)(test)
        if seed is not None:
            test = hypothesis_seed(seed)(test)
        test()


# -- roundtrip -----------------------------------------------------------------------------------------------
def roundtrip_case(stack: FuzzStack, message: str) -> Case:
    """Serialize, parse, serialize: the same bytes (bytes, not ==, so NaN compares), required fields kept."""
    cls = stack.messages[message].cls

    def check(msg: Any) -> None:
        data = msg.SerializeToString(deterministic=True)  # map entries in key order
        recorder().add("roundtrip", message=message, hex=data.hex())
        again = cls.FromString(data)
        assert again.SerializeToString(deterministic=True) == data, f"{message}: re-serialized bytes differ"
        assert again.IsInitialized(), f"{message}: parsed message lost required fields"

    return Case("roundtrip", f"roundtrip/{message}", stack.strats.valid(message), check)


# -- frames --------------------------------------------------------------------------------------------------
def body_of(stack: FuzzStack, command: str) -> Strat:
    """Serialized valid bodies of a command."""
    return stack.strats.valid(stack.message_of(command)).map(lambda m: m.SerializeToString())


def frame_of(stack: FuzzStack, command: str) -> Strat:
    """Wire bytes of a valid frame of a command (random seq)."""
    info = stack.command(command)
    return st.tuples(body_of(stack, command), st.integers(0, 0xFFFF)).map(
        lambda t: encode_frame(info.service_id, info.command_id, t[1], t[0])
    )


def frame_roundtrip_case(stack: FuzzStack, command: str, decoder: type[FrameDecoder] = FrameDecoder) -> Case:
    """Frames of `command` (several, coalesced, split anywhere) decode back to themselves."""
    info = stack.command(command)
    one = st.tuples(st.integers(0, 0xFFFF), body_of(stack, command)).map(
        lambda t: (info.service_id, info.command_id, t[0], t[1])
    )
    strategy = st.tuples(st.lists(one, min_size=1, max_size=3), st.lists(st.integers(0, 4096), max_size=4))
    return Case(
        "frames",
        f"frames/roundtrip/{command}",
        strategy,
        lambda t: framing.check_roundtrip(t[0], t[1], decoder),
        command,
    )


def any_frame(stack: FuzzStack) -> Strat:
    """A valid frame of any command of the stack."""
    names = [c.name for c in stack.registry]
    return st.sampled_from(names).flatmap(lambda n: frame_of(stack, n))


def garbage(stack: FuzzStack) -> st.SearchStrategy[list[bytes]]:
    """Byte streams worth feeding a decoder: random bytes, mutated frames, valid frames, in chunks."""
    piece = st.one_of(st.binary(max_size=64), mutate.mutated(any_frame(stack)), any_frame(stack))
    return st.lists(piece, min_size=1, max_size=4).flatmap(lambda ps: mutate.split(b"".join(ps)))


def decoder_case(stack: FuzzStack, decoder: type[FrameDecoder] = FrameDecoder) -> Case:
    return Case("frames", "frames/decoder", garbage(stack), lambda cs: framing.check_decoder(cs, decoder))


def limit_case(decoder: type[FrameDecoder] = FrameDecoder) -> Case:
    """The decoder's length limit is exact: a frame at the limit decodes, one byte more is refused, whatever
    the chunking."""
    strategy = st.tuples(st.sampled_from([0, 1, -1]), st.sampled_from([1 << 20, 1, 7, 4096, 4111]))
    return Case("frames", "frames/limit", strategy, lambda t: framing.check_limit(t[0], t[1], decoder))


def connection_case(stack: FuzzStack, decoder: type[FrameDecoder] = FrameDecoder) -> Case:
    return Case(
        "frames",
        "frames/connection",
        garbage(stack),
        lambda cs: framing.check_connection(stack.registry, cs, decoder),
    )


# -- live ----------------------------------------------------------------------------------------------------
def malformed_body(stack: FuzzStack, command: str) -> Strat:
    """Bodies a server must survive: random bytes, truncated or bit-flipped valid bodies, undeclared enum
    values,
    missing required fields, constraint-violating values."""
    name = stack.message_of(command)
    strats = stack.strats
    valid = body_of(stack, command)
    return st.one_of(
        st.binary(max_size=64),
        valid.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda n: b[:n])),
        valid.flatmap(mutate.bit_flip),
        strats.unknown_enum(name),
        strats.missing_required(name),
        strats.invalid(name).map(lambda m: m.SerializeToString()),
    )


def live_valid_case(stack: FuzzStack, target: Target, command: str) -> Case:
    """Valid bodies of a command, starting with its integer fields at their boundaries."""
    info = stack.command(command)
    edges = boundary_messages(stack.strats, stack.message_of(command))
    return Case(
        "live",
        f"live/valid/{command}",
        body_of(stack, command),
        lambda body: _ignore(live.send_checked(target, info, body)),
        command,
        tuple(m.SerializeToString() for m in edges),
    )


def live_malformed_case(stack: FuzzStack, target: Target, command: str) -> Case:
    info = stack.command(command)
    return Case(
        "live",
        f"live/malformed/{command}",
        malformed_body(stack, command),
        lambda body: _ignore(live.send_checked(target, info, body)),
        command,
    )


def live_prelogin_case(stack: FuzzStack, target: Target, command: str) -> Case:
    info = stack.command(command)
    return Case(
        "live",
        f"live/prelogin/{command}",
        body_of(stack, command),
        lambda body: _ignore(live.send_checked(target, info, body, login=False)),
        command,
    )


def live_internal_case(stack: FuzzStack, target: Target, command: str) -> Case:
    """A server-to-server command sent by a client is never acted on."""
    info = stack.command(command)
    return Case(
        "live",
        f"live/internal/{command}",
        body_of(stack, command),
        lambda body: _ignore(live.send_checked(target, info, body)),
        command,
    )


def live_frames_case(stack: FuzzStack, target: Target) -> Case:
    """Mutated frames on a logged-in connection: the server and other connections carry on."""
    chunks = st.lists(
        st.one_of(mutate.mutated(any_frame(stack)), st.binary(min_size=1, max_size=48)),
        min_size=1,
        max_size=3,
    )
    return Case("live", "live/frames", chunks, lambda cs: live.send_raw_checked(target, cs))


def live_frame_limit_case(stack: FuzzStack, target: Target) -> Case:
    """Frames at, just under and just over the spec's `max_frame_bytes` on a live connection."""
    return Case(
        "live",
        "live/frame_limit",
        st.sampled_from([0, 1, -1]),
        lambda offset: live.check_frame_limit(target, offset),
    )


def auth_case(stack: FuzzStack, target: Target) -> Case | None:
    """Wrong, empty and right passwords for the target's seeded accounts (None: it has none)."""
    accounts = target.accounts()
    if not accounts:
        return None
    login = stack.login_commands()
    strategy = st.tuples(
        st.sampled_from(sorted(accounts, key=lambda n: (len(n), n))),
        st.sampled_from(live.AUTH_KINDS),
        st.text(max_size=12),
    )
    return Case(
        "auth",
        "auth/passwords",
        strategy,
        lambda t: live.check_auth(target, t[0], t[1], t[2]),
        login[0].name if login else "",
    )


def _ignore(_: object) -> None:
    return None


# -- selection -----------------------------------------------------------------------------------------------
def client_commands(stack: FuzzStack) -> list[str]:
    return [c.name for c in stack.registry if c.from_client and c.hosted_by]


def internal_commands(stack: FuzzStack) -> list[str]:
    return [c.name for c in stack.registry if c.direction == "s2s" and c.hosted_by]


def sansio_cases(stack: FuzzStack, decoder: type[FrameDecoder] = FrameDecoder) -> list[Case]:
    """Every case that needs no server."""
    cases = [roundtrip_case(stack, m) for m in sorted(stack.messages)]
    cases += [limit_case(decoder), decoder_case(stack, decoder), connection_case(stack, decoder)]
    cases += [frame_roundtrip_case(stack, c.name, decoder) for c in stack.registry]
    return cases


def live_cases(stack: FuzzStack, target: Target) -> list[Case]:
    """Every case against a live server."""
    cases: list[Case] = [live_frame_limit_case(stack, target)]
    for name in client_commands(stack):
        cases.append(live_valid_case(stack, target, name))
        cases.append(live_malformed_case(stack, target, name))
        cases.append(live_prelogin_case(stack, target, name))
    cases += [live_internal_case(stack, target, n) for n in internal_commands(stack)]
    cases.append(live_frames_case(stack, target))
    return cases
