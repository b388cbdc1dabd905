"""The fuzz engine and its models: suites share the budget fairly (checked exactly, on a fake clock) and are
reported per suite; the session model logs a session in on a successful login; stateful examples get users of
their own; a handler exception is a failure carrying the server's traceback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runtime.fuzz import stateful, suites
from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.engine import Engine
from runtime.fuzz.plant import PlantedError, plant_command, trips
from runtime.fuzz.reproducer import Reproducer
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.strategies import boundary_messages, minimal_message
from runtime.fuzz.suites import Case
from runtime.fuzz.targets import ValidatingTarget


@pytest.fixture(scope="module")
def validating(tt_stack: FuzzStack) -> Iterator[ValidatingTarget]:
    target = ValidatingTarget(tt_stack)
    try:
        yield target
    finally:
        target.close()


class FakeClock:
    """Time that passes only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Fake seconds each example of a suite costs: binary fractions, so sums are exact in floating point. Examples
# that talk to a server cost more, as they do for real; stateful ones get about 16 examples (two runs), enough
# for the model to send requests.
COST = {"roundtrip": 1 / 64, "frames": 1 / 64, "live": 1 / 16, "stateful": 1 / 16}


class TimedEngine(Engine):
    """An engine on a fake clock: every example counted advances it by its suite's cost. Records, before
    each case, which suite ran and every suite's time so far."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running = ""
        self.choices: list[tuple[str, float, dict[str, float]]] = []  # suite, start, seconds of all suites

    def _run_case(self, case: Case, examples: int, seed: int) -> Reproducer | None:
        self.running = case.suite
        seconds = {name: s.seconds for name, s in self.stats.suites.items()}
        self.choices.append((case.suite, self.clock(), seconds))
        return super()._run_case(case, examples, seed)

    def _count(self) -> None:
        assert isinstance(self.clock, FakeClock)
        self.clock.now += COST[self.running]
        super()._count()


def test_every_suite_gets_a_share_of_the_budget(tt_stack: FuzzStack, validating: ValidatingTarget) -> None:
    clock = FakeClock()
    budget = 4.0
    names = ("roundtrip", "frames", "live", "stateful")
    engine = TimedEngine(tt_stack, validating, suite_names=names, budget=budget, clock=clock)
    assert engine.run() == []
    shares = {name: s.seconds for name, s in engine.stats.suites.items()}
    assert set(shares) == set(names)
    for name, suite in engine.stats.suites.items():
        assert suite.examples > 0, f"{name} was starved"
        assert suite.seconds == suite.examples * COST[name]  # time passes only in examples
    # Fair: every case went to the suite that had had the least time so far (ties to the first name).
    for chosen, _start, seconds in engine.choices:
        assert chosen == min(seconds, key=lambda n: (seconds[n], n)), (chosen, seconds)
    # Shared, not multiplied: the suites' times add up to the time that passed, every case started inside the
    # budget, and only a stateful run (never cut short mid-way) may overrun it.
    assert sum(shares.values()) == clock.now == engine.stats.elapsed
    assert all(start < budget for _, start, _ in engine.choices)
    last, _, _ = engine.choices[-1]
    if last == "stateful":
        assert clock.now >= budget
    else:
        assert clock.now == budget  # checked after every example: stopped by the one that reached it
    lines = engine.stats.report({c.name for c in tt_stack.registry})
    assert len(lines) == 4 and all("examples" in line and "commands covered" in line for line in lines)
    assert engine.stats.suites["stateful"].commands  # the stateful model's requests count as coverage


def test_a_login_request_logs_the_session_in(tt_stack: FuzzStack, validating: ValidatingTarget) -> None:
    login = tt_stack.login_commands()[0]
    data = tt_stack.command("CID_MSG_DATA")
    body = minimal_message(tt_stack.strats, tt_stack.message_of(data.name))
    body.to_session_id = 12345  # not to oneself
    body.msg_data = b"hi"
    machine = stateful.machine_for(tt_stack, validating)
    steps = [
        {"op": "rule", "rule": "connect", "args": {"login": False}},
        {
            "op": "rule",
            "rule": "request",
            "args": {
                "session": 0,
                "command": login.name,
                "body": {
                    "hex": minimal_message(tt_stack.strats, tt_stack.message_of(login.name))
                    .SerializeToString()
                    .hex()
                },
            },
        },
        # Before the fix the model still believed the session logged out and expected a close here.
        {
            "op": "rule",
            "rule": "request",
            "args": {"session": 0, "command": data.name, "body": {"hex": body.SerializeToString().hex()}},
        },
    ]
    stateful.replay_rules(machine, steps)


def test_a_handler_exception_fails_with_its_traceback(
    tt_stack: FuzzStack, validating: ValidatingTarget
) -> None:
    info = plant_command(tt_stack)

    def planted(ctx: object, cmd: object, msg: object) -> None:
        if getattr(cmd, "name", None) == info.name and trips(msg):  # type: ignore[arg-type]
            raise PlantedError("boom")

    validating.service.plant = planted  # type: ignore[assignment]
    try:
        [edge, _low] = boundary_messages(tt_stack.strats, tt_stack.message_of(info.name))
        case = suites.live_valid_case(tt_stack, validating, info.name)
        assert edge.SerializeToString() in case.explicit  # boundary values are tried first
        with pytest.raises(AssertionError, match=r"(?s)a handler raised.*Traceback.*PlantedError: boom"):
            case.check(edge.SerializeToString())
    finally:
        validating.service.plant = None
        validating.reset()


def test_stateful_examples_get_users_of_their_own(
    tt_stack: FuzzStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtime.fuzz import cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "CASTS", 2)
    target = ClusterTarget(tt_stack)
    try:
        first, second = target.cast(), target.cast()
        assert not set(first) & set(second) and not set(first.values()) & set(second.values())
        old_db = target.data_dir
        third = target.cast()  # the casts ran out: a fresh database, seeded again
        assert target.restarts == 1 and target.data_dir != old_db and not old_db.exists()
        assert set(third) == set(first)  # the same names, in a database that never saw them used
        with target.connect() as conn:
            target.login_as(conn, sorted(third)[0])
    finally:
        target.close()
