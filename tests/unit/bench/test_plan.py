"""ttgen.bench.plan: users spread over msg servers, source addresses and load processes as documented."""

from __future__ import annotations

from collections import Counter

import pytest

from ttgen.bench.plan import MOBILE_TYPE, PC_TYPE, Options, defaults, is_pc, make_plan


def test_pc_share_is_spread_evenly() -> None:
    flags = [is_pc(i, 0.3) for i in range(1000)]
    assert sum(flags) == 300
    assert all(sum(flags[k : k + 10]) == 3 for k in range(0, 1000, 10))
    assert not any(is_pc(i, 0.0) for i in range(50))
    assert all(is_pc(i, 1.0) for i in range(50))


def test_connections_layout_for_100000_users() -> None:
    plan = make_plan(Options("connections", users=100_000, msg_servers=7))
    assert len(plan.users) == 100_000
    kinds = Counter(u.client_type for u in plan.users)
    assert kinds == {PC_TYPE: 30_000, MOBILE_TYPE: 70_000}
    per_server = Counter(u.instance for u in plan.users)
    assert len(per_server) == 7 and max(per_server.values()) < 20_000  # a process holds < 20,000 files
    per_process = Counter(u.process for u in plan.users)
    assert max(per_process.values()) <= 15_000
    per_source = Counter(u.source for u in plan.users)
    assert max(per_source.values()) <= 4_000
    assert all(s.startswith("127.0.0.") for s in per_source)
    assert len({u.name for u in plan.users}) == 100_000


def test_one_to_one_pairs_cross_msg_servers() -> None:
    plan = make_plan(Options("one-to-one", users=0, pairs=50, msg_servers=3))
    assert len(plan.users) == 100 and len(plan.senders) == 50
    for sender, receiver, group in plan.senders:
        assert not group
        assert plan.users[sender].instance != plan.users[receiver].instance


def test_login_storm_probes_log_in_first() -> None:
    plan = make_plan(Options("login-storm", users=300, pairs=10))
    assert plan.phase_size(0) == 20 and plan.phase_size(1) == 300
    assert {plan.users[s].phase for s, _, _ in plan.senders} == {0}


def test_group_plan() -> None:
    plan = make_plan(Options("group", users=0, groups=3, group_size=4, msg_servers=2))
    assert len(plan.users) == 12 and len(plan.groups) == 3
    assert plan.expected_deliveries_per_message() == 3
    assert [s for s, _, g in plan.senders if g] == [m[0] for m in plan.groups]


def test_smoke_defaults_are_small_and_cheap() -> None:
    for scenario in ("connections", "login-storm", "presence-storm", "one-to-one", "group"):
        d = defaults(scenario, smoke=True)
        assert d["hash"] == "cheap" and d["max_seconds"] <= 120


def test_bad_plans() -> None:
    with pytest.raises(ValueError):
        make_plan(Options("nonsense"))
    with pytest.raises(ValueError):
        make_plan(Options("connections", users=10, sources=251))
