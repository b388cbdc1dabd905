"""`ttgen fuzz` finds planted bugs (handler, frame decoder) with minimal, saved, replayable reproducers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.framing import FrameDecoder, encode_frame
from runtime.fuzz.cluster import ClusterTarget
from runtime.fuzz.plant import OffByOneDecoder, plant_command, trips
from runtime.fuzz.reproducer import Reproducer, load_all, replay
from runtime.fuzz.stack import FuzzStack
from ttgen.cli import main

ROOT = Path(__file__).resolve().parents[2]
SPEC = str(ROOT / "spec" / "teamtalk")


def fuzz(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["fuzz", SPEC, *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_clean_suites_exit_zero_and_cover_every_message(tmp_path: Path) -> None:
    code, out = fuzz("--time", "2s", "--suite", "roundtrip", "--save-dir", str(tmp_path))
    assert code == 0, out
    assert "0 failures" in out
    covered = re.search(r"messages covered (\d+)/(\d+)", out)
    assert covered is not None and covered.group(1) == covered.group(2) and int(covered.group(2)) >= 125, out
    assert not list(tmp_path.rglob("*.json"))


def test_planted_handler_bug_is_found_on_the_cluster(tmp_path: Path, tt_stack: FuzzStack) -> None:
    code, out = fuzz(
        "--plant",
        "handler",
        "--suite",
        "live",
        "--time",
        "60s",
        "--max-failures",
        "1",
        "--save-dir",
        str(tmp_path),
    )
    assert code == 1, out
    planted = plant_command(tt_stack, "msg")
    assert f"handler of {planted.name} crashes the server" in out
    assert "FAILURE" in out and "bytes: " in out
    [rep] = load_all(tmp_path)
    assert rep.plant == "handler" and rep.suite == "live"
    sends = [s for s in rep.steps if s["op"] == "send"]
    assert [s["command"] for s in sends] == [planted.name]
    body = bytes.fromhex(sends[0]["hex"])[16:]
    msg = planted.message_class.FromString(body)
    assert trips(msg), "the reproducer must carry the tripping value"
    # Shrunk: only the tripping field departs from its minimal value (the rest are zero or empty).
    assert sum(1 for f, v in msg.ListFields() if v not in (0, "", b"", False)) <= 2
    assert (tmp_path / "teamtalk" / f"{rep.id}.json").is_file()
    # The reproducer replays: it still fails on a planted cluster.
    target = ClusterTarget(tt_stack, plant_command=planted.name)
    try:
        with pytest.raises(AssertionError, match=r"affected|no longer answers"):
            replay(rep, tt_stack, target)
    finally:
        target.close()


def test_planted_framing_bug_is_found(tmp_path: Path, tt_stack: FuzzStack) -> None:
    code, out = fuzz(
        "--plant",
        "framing",
        "--suite",
        "frames",
        "--time",
        "60s",
        "--max-failures",
        "1",
        "--save-dir",
        str(tmp_path),
    )
    assert code == 1, out
    [rep] = load_all(tmp_path)
    doc = json.loads((tmp_path / "teamtalk" / f"{rep.id}.json").read_text())
    assert doc["suite"] == "frames"
    chunks = rep.frames_hex()
    # Minimal: one frame with an empty body, exactly one header long.
    assert len(b"".join(bytes.fromhex(c) for c in chunks)) == 16
    with pytest.raises(AssertionError):
        replay(rep, tt_stack, None, OffByOneDecoder)
    replay(rep, tt_stack, None, FrameDecoder)  # the real decoder has no such bug


def test_reproducer_round_trips_through_json(tmp_path: Path) -> None:
    frame = encode_frame(7, 0x0701, 1, b"")
    rep = Reproducer(
        spec="x",
        suite="frames",
        case="frames/decoder",
        failure="AssertionError: boom",
        steps=[{"op": "decode", "chunks": [frame.hex()], "expect": "consistent"}],
    )
    path = rep.save(tmp_path)
    again = Reproducer.load(path)
    assert again == rep and again.id == rep.id and len(rep.id) == 12
    assert frame.hex() in again.describe()


def test_the_time_budget_is_kept_between_examples(
    tt_stack: FuzzStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case is cut short between two examples once the budget is spent (not only between cases), so a run
    ends at its budget however many examples a round asks for. On a fake clock where each example takes
    1/64 s, a 1.5 s budget is exactly 96 examples."""
    from runtime.fuzz import engine as engine_mod

    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()

    class Timed(engine_mod.Engine):
        def _count(self) -> None:
            clock.now += 1 / 64
            super()._count()

    # One round of 20,000 examples per case: a single case alone would take many times the budget.
    monkeypatch.setattr(engine_mod, "FIRST_ROUND_EXAMPLES", 20_000)
    engine = Timed(tt_stack, None, suite_names=("roundtrip",), budget=1.5, seed=7, clock=clock)
    assert engine.run() == []
    assert clock.now == 1.5 and engine.stats.examples == 96
    assert engine.stats.suites["roundtrip"].seconds == 1.5
