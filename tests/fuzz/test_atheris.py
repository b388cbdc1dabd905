"""`ttgen fuzz --engine atheris` (optional) finds the planted decoder off-by-one, coverage-guided."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from runtime.framing import FrameDecoder
from runtime.fuzz.plant import OffByOneDecoder
from runtime.fuzz.reproducer import load_all, replay
from runtime.fuzz.stack import FuzzStack
from ttgen.cli import main

pytest.importorskip("atheris")
SPEC = str(Path(__file__).resolve().parents[2] / "spec" / "teamtalk")


@pytest.mark.slow  # a child process instrumenting the runtime: ~20-40 s
def test_atheris_finds_the_planted_framing_bug(tmp_path: Path, tt_stack: FuzzStack) -> None:
    result = CliRunner().invoke(
        main,
        [
            "fuzz",
            SPEC,
            "--engine",
            "atheris",
            "--plant",
            "framing",
            "--time",
            "20s",
            "--save-dir",
            str(tmp_path),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 1, result.output
    reps = load_all(tmp_path)
    assert reps and all(r.case == "atheris/decoder" for r in reps)
    with pytest.raises(AssertionError):
        replay(reps[0], tt_stack, None, OffByOneDecoder)
    replay(reps[0], tt_stack, None, FrameDecoder)
