"""Runtime fuzz layer: the time-boxed engine behind `ttgen fuzz`: runs the suites' cases in rounds until the
budget is spent, counts examples and frames, and turns each (shrunk) failure into a saved reproducer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.stateful import run_state_machine_as_test

from runtime.framing import FrameDecoder
from runtime.fuzz import stateful, suites
from runtime.fuzz.live import recorder
from runtime.fuzz.reproducer import Reproducer
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.suites import Case
from runtime.fuzz.targets import Target

FIRST_ROUND_EXAMPLES = 10
# Cases that talk to a server make a few round trips per example: their first pass asks for fewer, so every
# case of the suite is visited early.
FIRST_ROUND_LIVE = 3
MAX_ROUND_EXAMPLES = 400
# A stateful run is never cut short mid-way (hypothesis would see a test case end differently when it
# replays it), so it asks for few examples at a time: the budget is checked between runs.
MAX_STATEFUL_EXAMPLES = 8
Progress = Callable[["Stats"], None]
Clock = Callable[[], float]


@dataclass
class SuiteStats:
    """Totals of one suite: examples run, failures, time spent, cases (run at least once / all) and the
    commands its examples sent."""

    cases: int = 0
    cases_run: set[str] = field(default_factory=set)
    examples: int = 0
    failures: int = 0
    seconds: float = 0.0
    passes: int = 0
    commands: set[str] = field(default_factory=set)


@dataclass
class Stats:
    """Running totals of one fuzz session (`clock`: where time comes from, time.monotonic unless a test
    fakes it)."""

    clock: Clock = field(default=time.monotonic, repr=False, compare=False)
    started: float = -1.0  # set from `clock` at creation
    examples: int = 0
    cases_run: int = 0
    rounds: int = 0
    failures: int = 0
    frames: int = 0
    covered_commands: set[str] = field(default_factory=set)
    covered_messages: set[str] = field(default_factory=set)
    suites: dict[str, SuiteStats] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        return self.examples / self.elapsed if self.elapsed > 0 else 0.0

    def report(self, commands: set[str]) -> list[str]:
        """One line per suite: examples, failures, time, cases run, commands covered."""
        lines = []
        for name, suite in self.suites.items():
            covered = len(suite.commands & commands)
            lines.append(
                f"  {name:<10} examples {suite.examples:>6}  failures {suite.failures}  "
                f"time {suite.seconds:6.1f}s  cases run {len(suite.cases_run)}/{suite.cases}  "
                f"commands covered {covered}/{len(commands)}"
            )
        return lines


def engine_settings(examples: int) -> settings:
    """Random (not derandomized), no database, one bug per case, no deadline."""
    return settings(
        max_examples=examples,
        derandomize=False,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )


class Engine:
    """Runs the chosen suites of a stack against a target until `budget` seconds have passed.

    Suites share the budget: the next case always comes from the suite that has had the least time so far,
    and each suite cycles through its cases, asking for twice as many examples on every pass. So a suite with
    one slow case (stateful) runs from the first seconds on, and no suite waits for another to finish. Time is
    read from `clock` (time.monotonic; tests pass a fake one to check the shares exactly)."""

    def __init__(
        self,
        stack: FuzzStack,
        target: Target | None,
        *,
        suite_names: tuple[str, ...] = suites.SUITES,
        budget: float = 60.0,
        seed: int = 0,
        plant: str | None = None,
        decoder: type[FrameDecoder] = FrameDecoder,
        progress: Progress | None = None,
        progress_every: float = 1.0,
        max_failures: int = 0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.stack, self.target = stack, target
        self.suite_names = suite_names
        self.budget, self.seed, self.plant = budget, seed, plant
        self.decoder = decoder
        self.progress = progress
        self.progress_every = progress_every
        self.max_failures = max_failures  # stop after this many failures (0: run the whole budget)
        self.clock = clock  # every budget and share decision reads this (a test may fake it)
        self.stats = Stats(clock=clock)
        self.reproducers: list[Reproducer] = []
        self._last_progress = 0.0
        self._deadline = float("inf")  # set by run()
        self._suite: SuiteStats | None = None

    def cases(self) -> list[Case]:
        """Every case of the selected suites (live, auth and stateful only with a target)."""
        out: list[Case] = []
        if "roundtrip" in self.suite_names or "frames" in self.suite_names:
            for case in suites.sansio_cases(self.stack, self.decoder):
                if case.suite in self.suite_names:
                    out.append(case)
        if self.target is not None and "live" in self.suite_names:
            out.extend(suites.live_cases(self.stack, self.target))
        if self.target is not None and "auth" in self.suite_names:
            auth = suites.auth_case(self.stack, self.target)
            if auth is not None:
                out.append(auth)
        if self.target is not None and "stateful" in self.suite_names:
            out.append(Case("stateful", "stateful/sessions", _NO_STRATEGY, lambda _x: None))
        return out

    def run(self) -> list[Reproducer]:
        """Fuzz until the budget is spent; returns the reproducers of every failure found."""
        queues: dict[str, list[Case]] = {}
        for case in self.cases():
            queues.setdefault(case.suite, []).append(case)
            if case.command:
                self.stats.covered_commands.add(case.command)
            if case.suite == "roundtrip":
                self.stats.covered_messages.add(case.name.split("/", 1)[1])
        for name, cases in queues.items():
            self.stats.suites[name] = SuiteStats(cases=len(cases))
        position = dict.fromkeys(queues, 0)
        examples = {
            name: FIRST_ROUND_LIVE if name in ("live", "auth", "stateful") else FIRST_ROUND_EXAMPLES
            for name in queues
        }
        deadline = self._deadline = self.stats.started + self.budget
        calls = 0
        while queues and self.clock() < deadline and not self._enough():
            name = min(queues, key=lambda n: (self.stats.suites[n].seconds, n))
            suite = self.stats.suites[name]
            cases = queues[name]
            case = cases[position[name]]
            started = self.clock()
            self._suite = suite
            if self.target is not None:
                self.target.sent_commands = set()
            failure = self._run_case(case, examples[name], self.seed + calls * 100_003)
            calls += 1
            suite.seconds += self.clock() - started
            suite.cases_run.add(case.name)
            if case.command and case.suite != "stateful":
                suite.commands.add(case.command)
            if self.target is not None:
                suite.commands |= self.target.sent_commands
            if failure is not None:
                cases.remove(case)
                self.reproducers.append(failure)
                self.stats.failures += 1
                suite.failures += 1
            else:
                position[name] += 1
            if position[name] >= len(cases):
                position[name] = 0
                suite.passes += 1
                examples[name] = min(MAX_ROUND_EXAMPLES, examples[name] * 2)
            if not cases:
                del queues[name]
            if self.target is not None:
                self.stats.frames = self.target.frames_sent
            self.stats.rounds = max((s.passes for s in self.stats.suites.values()), default=0)
            self._tick(force=failure is not None)
        self._suite = None
        self._tick(force=True)
        return self.reproducers

    def _enough(self) -> bool:
        return bool(self.max_failures) and len(self.reproducers) >= self.max_failures

    def _count(self) -> None:
        self.stats.examples += 1
        if self._suite is not None:
            self._suite.examples += 1

    def _run_case(self, case: Case, examples: int, seed: int) -> Reproducer | None:
        opts = engine_settings(examples)
        self.stats.cases_run += 1

        def count() -> None:
            self._count()
            if self.target is not None:
                self.stats.frames = self.target.frames_sent
            self._tick()
            if self.clock() >= self._deadline:
                raise BudgetSpent  # ends this case's run between examples (never while shrinking a failure)

        try:
            if case.suite == "stateful":
                assert self.target is not None
                machine = stateful.machine_for(self.stack, self.target)
                failed = [False]
                engine_count = self._count
                opts = settings(opts, max_examples=min(examples, MAX_STATEFUL_EXAMPLES))

                class Counted(machine):  # type: ignore[misc, valid-type]
                    def __init__(self) -> None:
                        if not failed[0]:  # not while shrinking a failure
                            engine_count()
                        super().__init__()

                    def do(self, rule: str, **args: Any) -> Any:
                        try:
                            return super().do(rule, **args)
                        except Exception:
                            failed[0] = True
                            raise

                    def replay_checks(self) -> None:
                        try:
                            super().replay_checks()
                        except Exception:
                            failed[0] = True
                            raise

                steps = getattr(machine, "MIN_STEPS", 0)
                if steps:
                    opts = settings(opts, stateful_step_count=max(steps, opts.stateful_step_count))
                hypothesis_seed(seed)(lambda: run_state_machine_as_test(Counted, settings=opts))()
            else:
                case.run(opts, count, seed)
        except BudgetSpent:
            return None
        except Exception as exc:  # a property failed (after shrinking): keep its minimal steps
            if self.target is not None:
                self.target.reset()
            return Reproducer(
                spec=self.stack.name,
                suite=case.suite,
                case=case.name,
                command=case.command,
                failure=f"{type(exc).__name__}: {describe_failure(exc)}",
                steps=list(recorder().steps),
                example="\n".join(getattr(exc, "__notes__", [])),
                plant=self.plant,
                seed=seed,
            )
        return None

    def _tick(self, force: bool = False) -> None:
        now = self.clock()
        if self.progress is not None and (force or now - self._last_progress >= self.progress_every):
            self._last_progress = now
            if self.target is not None:
                self.stats.frames = self.target.frames_sent
            self.progress(self.stats)


class BudgetSpent(BaseException):
    """Raised between two examples once the time budget is spent. A BaseException, so hypothesis lets it
    through at once instead of treating it as a failure to shrink."""


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def describe_failure(exc: BaseException) -> str:
    """The failure's message: its first line, and the whole text when it carries a traceback (a handler that
    raised on the server)."""
    text = str(exc).strip()
    if "Traceback (most recent call last)" in text:
        return text
    return first_line(exc)


class _NoStrategy:
    """Placeholder strategy of the stateful case (the machine draws its own data)."""


_NO_STRATEGY: Any = _NoStrategy()
