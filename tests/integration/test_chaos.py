"""Integration: a short chaos run (bench/chaos.py) keeps every promise, and its checker sees broken ones."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ttgen_bench_chaos", ROOT / "bench" / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


chaos = _chaos()


def test_kills_under_traffic_lose_duplicate_and_reorder_nothing(tmp_path: Path, cluster_layout: str) -> None:
    report = asyncio.run(
        chaos.run_chaos(
            duration=12,
            devices=8,
            rate=5,
            kill_every=2.5,
            seed=7,
            data_dir=tmp_path,
            cycle=True,
            layout=cluster_layout,
        )
    )
    assert report["kills"].get("msg") and report["kills"].get("biz"), report  # the nemesis did its work
    assert report["acked"] >= 200, report
    assert report["logins"] > report["devices"], report  # a msg server's devices had to log in again
    assert chaos.passed(report), json.dumps(report)  # the whole report: which promise, examples
    assert all(v["p99"] < 15 for v in report["recovery_s"].values()), json.dumps(report)


def _checked(tmp_path: Path, tamper: str) -> dict[str, object]:
    """The checker over two devices' records, with one promise broken by hand."""
    run = chaos.Chaos(tmp_path, 2, 1.0, 1.0, 1)
    a = chaos.Device("a", 1, 2, 9)
    b = chaos.Device("b", 2, 1, 9)
    run.devices = [a, b]
    for n in (1, 2, 3):
        a.sent.append(chaos.Sent(chaos.SINGLE, 2, n, f"1:{n}".encode(), acked=n))
        b.seen[(chaos.SINGLE, 1)][n] = f"1:{n}".encode()
    run.unread = {2: {(chaos.SINGLE, 1): 3}}
    if tamper == "lose":
        del b.seen[(chaos.SINGLE, 1)][2]
        run.unread[2][(chaos.SINGLE, 1)] = 2
    elif tamper == "duplicate":
        b.seen[(chaos.SINGLE, 1)][4] = b"1:3"
        run.unread[2][(chaos.SINGLE, 1)] = 4
    elif tamper == "reorder":
        b.seen[(chaos.SINGLE, 1)][2], b.seen[(chaos.SINGLE, 1)][3] = b"1:3", b"1:2"
    elif tamper == "phantom":
        a.sent.append(chaos.Sent(chaos.SINGLE, 2, 4, b"1:4", refused=True))
        b.seen[(chaos.SINGLE, 1)][4] = b"1:4"
        run.unread[2][(chaos.SINGLE, 1)] = 4
    elif tamper == "unread":
        run.unread[2][(chaos.SINGLE, 1)] = 1
    result: dict[str, object] = run.check()
    return result


@pytest.mark.parametrize(
    ("tamper", "key"),
    [
        ("lose", "lost"),
        ("duplicate", "duplicated"),
        ("reorder", "reordered"),
        ("phantom", "phantom"),
        ("unread", "unread_mismatch"),
    ],
)
def test_the_checker_reports_each_broken_promise(tmp_path: Path, tamper: str, key: str) -> None:
    assert chaos.passed(_checked(tmp_path, "none"))
    report = _checked(tmp_path, tamper)
    assert report[key] == 1, report
    assert not chaos.passed(report)
