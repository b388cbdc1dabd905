"""Every saved reproducer (tests/fuzz/reproducers/<spec>/*.json) replays clean: found bugs stay fixed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.fuzz.reproducer import Reproducer, load_all, replay
from runtime.fuzz.stack import FuzzStack
from runtime.fuzz.targets import Target, open_target

FOLDER = Path(__file__).resolve().parent / "reproducers"
SAVED = load_all(FOLDER)


@pytest.fixture(scope="module")
def live_target(tt_stack: FuzzStack) -> Iterator[Target]:
    target = open_target(tt_stack, "cluster")
    try:
        yield target
    finally:
        target.close()


def test_reproducers_are_saved() -> None:
    assert SAVED, f"no reproducers under {FOLDER}"


@pytest.mark.parametrize("rep", SAVED, ids=[r.id for r in SAVED])
def test_reproducer_replays_clean(
    rep: Reproducer, tt_stack: FuzzStack, request: pytest.FixtureRequest
) -> None:
    assert rep.spec == "teamtalk", "only the bundled spec's reproducers are kept here"
    needs_server = any(s["op"] in ("connect", "send", "raw", "check_server") for s in rep.steps)
    target = request.getfixturevalue("live_target") if needs_server else None
    replay(rep, tt_stack, target)
