"""`bench/bench_web.py` in a small run (a real multi-process cluster, WebSocket and long-poll clients in their
own process): every message sent is answered and delivered once, and latencies are reported per protocol."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_web.py"


def test_bench_web_small_run_delivers_everything(tmp_path: Path) -> None:
    out = tmp_path / "web.json"
    args = ["--pairs", "2", "--rate", "5", "--duration", "2", "--settle", "1", "--drain", "8"]
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--mode", "mixed", "--client-procs", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (row,) = json.loads(out.read_text())["runs"]
    assert row["offered/s"] == row["delivered/s"] == 10.0
    assert (row["refused"], row["lost"]) == (0, 0)
    assert row["ws p99"] > 0 and row["poll p99"] > 0 and row["gateway0 us/msg"] > 0
