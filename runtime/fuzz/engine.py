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
MAX_ROUND_EXAMPLES = 400
Progress = Callable[["Stats"], None]


@dataclass
class Stats:
    """Running totals of one fuzz session."""

    started: float = field(default_factory=time.monotonic)
    examples: int = 0
    cases_run: int = 0
    rounds: int = 0
    failures: int = 0
    frames: int = 0
    covered_commands: set[str] = field(default_factory=set)
    covered_messages: set[str] = field(default_factory=set)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.examples / self.elapsed if self.elapsed > 0 else 0.0


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
    """Runs the chosen suites of a stack against a target until `budget` seconds have passed."""

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
    ) -> None:
        self.stack, self.target = stack, target
        self.suite_names = suite_names
        self.budget, self.seed, self.plant = budget, seed, plant
        self.decoder = decoder
        self.progress = progress
        self.progress_every = progress_every
        self.max_failures = max_failures  # stop after this many failures (0: run the whole budget)
        self.stats = Stats()
        self.reproducers: list[Reproducer] = []
        self._last_progress = 0.0
        self._deadline = float("inf")  # set by run()

    def cases(self) -> list[Case]:
        """Every case of the selected suites (live and stateful only with a target)."""
        out: list[Case] = []
        if "roundtrip" in self.suite_names or "frames" in self.suite_names:
            for case in suites.sansio_cases(self.stack, self.decoder):
                if case.suite in self.suite_names:
                    out.append(case)
        if self.target is not None and "live" in self.suite_names:
            out.extend(suites.live_cases(self.stack, self.target))
        if self.target is not None and "stateful" in self.suite_names:
            out.append(Case("stateful", "stateful/sessions", _NO_STRATEGY, lambda _x: None))
        return out

    def run(self) -> list[Reproducer]:
        """Fuzz until the budget is spent; returns the reproducers of every failure found."""
        pending = self.cases()
        for case in pending:
            if case.command:
                self.stats.covered_commands.add(case.command)
            if case.suite == "roundtrip":
                self.stats.covered_messages.add(case.name.split("/", 1)[1])
        deadline = self._deadline = self.stats.started + self.budget
        examples = FIRST_ROUND_EXAMPLES
        round_no = 0
        while pending and time.monotonic() < deadline and not self._enough():
            for index, case in enumerate(list(pending)):
                if time.monotonic() >= deadline or self._enough():
                    break
                failure = self._run_case(case, examples, self.seed + round_no * 100_003 + index)
                if failure is not None:
                    pending.remove(case)
                    self.reproducers.append(failure)
                    self.stats.failures += 1
                if self.target is not None:
                    self.stats.frames = self.target.frames_sent
                self._tick(force=failure is not None)
            round_no += 1
            self.stats.rounds = round_no
            examples = min(MAX_ROUND_EXAMPLES, examples * 2)
        self._tick(force=True)
        return self.reproducers

    def _enough(self) -> bool:
        return bool(self.max_failures) and len(self.reproducers) >= self.max_failures

    def _run_case(self, case: Case, examples: int, seed: int) -> Reproducer | None:
        opts = engine_settings(examples)
        self.stats.cases_run += 1

        def count() -> None:
            self.stats.examples += 1
            if self.target is not None:
                self.stats.frames = self.target.frames_sent
            self._tick()
            if time.monotonic() >= self._deadline:
                raise BudgetSpent  # ends this case's run between examples (never while shrinking a failure)

        try:
            if case.suite == "stateful":
                assert self.target is not None
                machine = stateful.machine_for(self.stack, self.target)
                stats = self.stats

                class Counted(machine):  # type: ignore[misc, valid-type]
                    def __init__(self) -> None:
                        super().__init__()
                        stats.examples += 1

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
                failure=f"{type(exc).__name__}: {first_line(exc)}",
                steps=list(recorder().steps),
                example="\n".join(getattr(exc, "__notes__", [])),
                plant=self.plant,
                seed=seed,
            )
        return None

    def _tick(self, force: bool = False) -> None:
        now = time.monotonic()
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


class _NoStrategy:
    """Placeholder strategy of the stateful case (the machine draws its own data)."""


_NO_STRATEGY: Any = _NoStrategy()
