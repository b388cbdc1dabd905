"""The generated fuzz suites pass on every golden spec (proto2, proto3 maps/oneofs/nesting, plugins).

Each stack is generated into a temporary folder and its `tests/` run by pytest in a child process: a stack has
its own protobuf files, which must not meet the golden copies in this process's descriptor pool.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.api import check_spec
from codegen.emit import emit_stack
from codegen.writer import sync_tree

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "spec" / "ttgen.yaml").is_file())


@pytest.mark.parametrize("case", CASES)
def test_generated_fuzz_suites_pass(case: str, tmp_path: Path) -> None:
    spec, _ = check_spec(GOLDEN / case / "spec")
    files = emit_stack(spec)
    assert {"strategies.py", "tests/test_fuzz_live.py", "tests/test_fuzz_stateful.py"} <= set(files)
    stack = tmp_path / f"stack_{case}"
    sync_tree(files, stack)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TTGEN_FUZZ"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--import-mode=importlib",
            "--rootdir",
            str(tmp_path),
            "-W",
            "error",
            str(stack / "tests"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
