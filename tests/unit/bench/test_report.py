"""ttgen.bench.report: the checks that fail a run, and the Markdown table."""

from __future__ import annotations

from typing import Any

from ttgen.bench.loadprocs import COUNTERS
from ttgen.bench.report import judge, markdown


def report(**counters: int) -> dict[str, Any]:
    c = {k: 0 for k in COUNTERS}
    c.update(login_ok=10, hb_sent=20, hb_answered=20)
    c.update(counters)
    return {
        "scenario": "connections",
        "users": 10,
        "pc": 3,
        "mobile": 7,
        "msg_servers": 2,
        "load_processes": 2,
        "source_addresses": 2,
        "counters": c,
        "logins": {"expected": 10, "ok": c["login_ok"]},
        "latency_ms": {},
        "cpu_s": {"msg-0": 1.0, "load_processes": 0.5},
    }


def test_a_clean_run_has_no_problems() -> None:
    r = report()
    assert judge(r) == []
    r["ok"] = True
    assert "| verdict | ok |" in markdown(r)


def test_each_failure_is_named() -> None:
    assert judge(report(login_ok=9, login_refused=1)) == ["1 of 10 users did not log in", "login_refused: 1"]
    assert judge(report(hb_answered=19)) == ["1 of 20 heartbeats unanswered"]
    assert judge(report(lost=2)) == ["2 logged-in connections were lost"]
    r = report(sent=10, acked=10, delivered=9, duplicates=1)
    r["messages"] = {"expected_deliveries": 10}
    assert judge(r) == ["duplicates: 1", "1 of 10 deliveries missing"]
    r = report(relogins=5, lost=10)
    r["restart"] = {"online_before": 10, "relogins": 5}
    assert judge(r) == ["only 5 of 10 users logged in again after the restart"]
