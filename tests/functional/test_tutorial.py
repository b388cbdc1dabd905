"""docs/tutorial.md works as written: every shell block runs, in order, in one bash script in a temporary
folder (with a free port in place of 8000), and each step prints what the tutorial says it prints."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def shell_blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_tutorial_has_the_steps_the_issue_asks_for() -> None:
    script = "\n".join(shell_blocks(TUTORIAL.read_text(encoding="utf-8")))
    for command in (
        "ttgen init",
        "python -m app.server",
        "python -m app.client",
        "ttgen generate spec",
        "ttgen diff HEAD:spec spec",
        "ttgen fuzz spec",
        "--replay",
    ):
        assert command in script, command


@pytest.mark.skipif(
    shutil.which("git") is None or shutil.which("patch") is None, reason="needs git and patch"
)
def test_every_shell_block_of_the_tutorial_runs(tmp_path: Path) -> None:
    blocks = shell_blocks(TUTORIAL.read_text(encoding="utf-8"))
    script = "\n".join(blocks).replace("8000", str(free_port()))
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "HYPOTHESIS", "TTGEN_FUZZ"))}
    env.update(
        PATH=os.pathsep.join([bin_dir, env.get("PATH", "")]),
        GIT_AUTHOR_NAME="tutorial",
        GIT_AUTHOR_EMAIL="tutorial@example.invalid",
        GIT_COMMITTER_NAME="tutorial",
        GIT_COMMITTER_EMAIL="tutorial@example.invalid",
        PYTHONPATH="",
    )
    # Background servers the script starts are stopped however it ends; output goes to a file, which a
    # server left running could not hold open the way it would a pipe.
    cleanup = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    log = tmp_path / "tutorial.log"
    with log.open("w") as sink:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", cleanup + script + "\n"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=280,
            check=False,
        )
    out = log.read_text(encoding="utf-8", errors="replace")
    assert result.returncode == 0, out[-6000:]
    assert "logged in as alice (user 1)" in out and "message 1 to user 2 acknowledged" in out
    assert "I am bob (user 2)" in out
    assert "lossy[FIELD_TYPE_WIDENED]" in out
    assert "0 failures" in out
    assert "with the empty password '': accepted" in out
    assert "FAILURE (still fails)" in out and "passed: the reproducer no longer fails" in out
