"""Integration: a short chaos run (bench/chaos.py) keeps every promise, and its checker sees broken ones."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import types
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
            min_acked=200,  # a loaded machine slows the traffic: the run goes on (up to 45 s) until 200 acks
            max_duration=45,
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
    elif tamper == "unknown":  # never acked (the run stopped first), yet stored and delivered: honest
        a.sent.append(chaos.Sent(chaos.SINGLE, 2, 4, b"1:4", uncertain=True))
        b.seen[(chaos.SINGLE, 1)][4] = b"1:4"
        run.unread[2][(chaos.SINGLE, 1)] = 4
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


def test_a_send_of_unknown_outcome_is_neither_refused_nor_a_phantom(tmp_path: Path) -> None:
    """A message whose sender never heard back (biz killed between its commit and its answer, then the run
    stopped) is reported as unknown, whether or not it was stored; only a refusal (msg id 0 to a first
    attempt) that was stored anyway is a phantom."""
    report = _checked(tmp_path, "unknown")
    assert chaos.passed(report), report
    assert (report["unknown"], report["unknown_stored"], report["refused"], report["phantom"]) == (1, 1, 0, 0)


class _Core:
    """A ClientCore stand-in answering CID_MSG_DATA with the given msg ids in turn."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.sent: list[object] = []

    async def call(self, _command: str, msg: object) -> object:
        self.sent.append(msg)
        return types.SimpleNamespace(msg_id=self.answers.pop(0))


def test_a_zero_ack_after_an_unknown_attempt_is_sent_again_not_counted_refused(tmp_path: Path) -> None:
    """Regression (a message reported refused, msg id 0, then found stored after kills of biz and msg): the
    first attempt's answer was lost with its link, so the resend's msg id 0 only says "not stored by this
    request"; the device sends it again with the same client msg id until biz answers with the stored id."""

    async def main() -> tuple[object, object, _Core]:
        run = chaos.Chaos(tmp_path, 2, 1.0, 1.0, 1)
        d = chaos.Device("a", 1, 2, 9)
        uncertain = chaos.Sent(chaos.SINGLE, 2, 1, b"1:1", attempts=1, uncertain=True)
        core = _Core([0, 0, 57])
        await run._send(core, d, uncertain)  # type: ignore[arg-type]
        fresh = chaos.Sent(chaos.SINGLE, 2, 2, b"1:2")
        await run._send(_Core([0]), d, fresh)  # type: ignore[arg-type]
        return uncertain, fresh, core

    uncertain, fresh, core = asyncio.run(main())
    assert (uncertain.acked, uncertain.refused, uncertain.attempts) == (57, False, 4)  # type: ignore[attr-defined]
    assert {m.msg_id for m in core.sent} == {1}  # type: ignore[attr-defined]  # the same client msg id
    assert (fresh.acked, fresh.refused) == (0, True)  # type: ignore[attr-defined]  # a first attempt's 0
