"""The fuzzer finds planted bugs of the kinds a protocol engineer ships, each with a reproducer that
`ttgen fuzz --replay` turns into a failing run (and that passes against the server without the bug).

Planted (runtime/fuzz/plant.py): a handler that raises on a field value (`raise`), a frame-length limit off
by one (`frame_max`), a login that skips the password check for names of the limit's length (`auth`), group
member changes without the authorization check (`authz`). The default suite hunts each with the suites that
find it in seconds; `--runslow` hunts each with every suite sharing the budget, within 60 s.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.reproducer import load_all, replay
from runtime.fuzz.stack import FuzzStack
from ttgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "spec" / "teamtalk")
BUDGET = 60.0

# plant -> (the suites that find it fast, what the failure says)
PLANTS = {
    "raise": (("live",), "a handler raised"),
    "frame_max": (("frames", "live"), "was accepted"),
    "auth": (("auth",), "password '.*': accepted|password '': accepted"),
    "authz": (("stateful",), "want ACCESS_DENIED"),
}


def hunt(plant: str, suites: tuple[str, ...], save: Path) -> tuple[int, str, float]:
    args = ["fuzz", SPEC, "--plant", plant, "--time", f"{BUDGET:g}s", "--max-failures", "1"]
    args += ["--save-dir", str(save)]
    for suite in suites:
        args += ["--suite", suite]
    started = time.monotonic()
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output, time.monotonic() - started


def check_found_and_replays(
    plant: str, code: int, out: str, elapsed: float, save: Path, tt_stack: FuzzStack
) -> None:
    import re

    assert code == 1, out[-3000:]
    assert elapsed < BUDGET, f"{plant}: found only after {elapsed:.1f}s"
    [rep] = load_all(save)
    assert rep.plant == plant
    assert re.search(PLANTS[plant][1], rep.failure), rep.failure
    if plant == "raise":
        assert "Traceback" in rep.failure and "PlantedError" in rep.failure  # the server's traceback
    # `ttgen fuzz --replay` rebuilds the planted server from the reproducer and fails again...
    path = next(save.rglob("*.json"))
    again = CliRunner().invoke(main, ["fuzz", SPEC, "--replay", str(path)], catch_exceptions=False)
    assert again.exit_code == 1, again.output[-3000:]
    assert "FAILURE (still fails)" in again.output
    # ...and the same steps pass against the real cluster: the failure is the planted bug, nothing else.
    needs_server = rep.suite != "frames"
    target = ClusterTarget(tt_stack) if needs_server else None
    try:
        replay(rep, tt_stack, target)
    finally:
        if target is not None:
            target.close()


@pytest.mark.parametrize("plant", ["raise", "frame_max", "auth"])
def test_planted_bug_is_found_fast_and_replays(plant: str, tmp_path: Path, tt_stack: FuzzStack) -> None:
    code, out, elapsed = hunt(plant, PLANTS[plant][0], tmp_path)
    check_found_and_replays(plant, code, out, elapsed, tmp_path, tt_stack)


@pytest.mark.slow  # the stateful model needs ~5-25 s to reach a non-creator's member change
def test_missing_authorization_check_is_found_and_replays(tmp_path: Path, tt_stack: FuzzStack) -> None:
    code, out, elapsed = hunt("authz", PLANTS["authz"][0], tmp_path)
    check_found_and_replays("authz", code, out, elapsed, tmp_path, tt_stack)


@pytest.mark.slow  # every suite shares the budget: up to 60 s per plant
@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_planted_bug_is_found_with_every_suite_within_60s(
    plant: str, tmp_path: Path, tt_stack: FuzzStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, elapsed = hunt(plant, (), tmp_path)
    with capsys.disabled():
        print(f"\n{plant}: found in {elapsed:.1f}s with every suite")
    check_found_and_replays(plant, code, out, elapsed, tmp_path, tt_stack)
