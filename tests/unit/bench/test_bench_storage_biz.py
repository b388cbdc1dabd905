"""`bench/bench_storage.py --biz` keeps up with biz's store path: a tiny run stores every message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("generated.teamtalk.registry")

ROOT = Path(__file__).resolve().parents[3]


def test_biz_store_path_bench_stores_every_message() -> None:
    args = ["--biz", "--messages", "300", "--window", "8", "--pairs", "10", "--runs", "1"]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_storage.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # biz_run asserts every message was stored
    assert "CPU per stored message:" in proc.stdout and "300 msgs/run" in proc.stdout
