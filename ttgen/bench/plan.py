"""CLI layer (bench): the scenarios and how their simulated users are laid out over msg servers, loopback
source addresses, load processes and login phases. Pure functions of the options: unit-tested."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

PC_TYPE, MOBILE_TYPE = 1, 0x12  # CLIENT_TYPE_WINDOWS, CLIENT_TYPE_ANDROID
PER_SOURCE = 10_000  # connections per loopback source address (ephemeral ports: about 28,000 per address)
PER_PROCESS = 15_000  # connections per load process (each may hold at most 20,000 open files here)
SCENARIOS = ("connections", "login-storm", "presence-storm", "one-to-one", "group")


@dataclass(frozen=True)
class Options:
    """Everything a bench run is parameterised by (the CLI fills it; defaults per scenario in `defaults`)."""

    scenario: str
    users: int = 2000
    pc_share: float = 0.3
    msg_servers: int = 2
    routers: int = 1
    biz: int = 1
    layout: str | None = None  # None: the cluster config's default (runtime.cluster.layout)
    client_procs: int = 0  # 0: one per PER_PROCESS users, at least 2
    sources: int = 0  # 0: one per PER_SOURCE users, at least 2
    login_rate: float = 1000.0  # logins per second, all load processes together (open loop)
    max_inflight: int = 256  # concurrent logins per load process
    login_timeout: float = 30.0
    heartbeat: float = 30.0  # s between a client's heartbeats (0: none)
    hold: float = 60.0  # s to hold the connections after the last login (connections)
    pairs: int = 0  # one-to-one sender/receiver pairs (login-storm: probe pairs sending during the storm)
    rate: float = 10.0  # messages per second per sender (TeamTalk's limit: 20)
    duration: float = 10.0  # s of message load
    group_size: int = 10
    groups: int = 0
    drain: float = 10.0  # max s to wait for the last answers after the load
    hash: str = "config"  # "config": the cluster's argon2id parameters; "cheap": t=1, 1 MiB, p=1
    restart: bool = False  # connections: restart the cluster after the hold, measure the reconnect storm
    reconnect: str = "password"  # how clients come back after a restart ("ticket": resumption tickets)
    reconnect_spread: float = 5.0  # clients reconnect at a random time within this many s after the loss
    max_seconds: float = 900.0  # hard bound of the whole run
    stack: str = "generated.teamtalk"
    extra: dict[str, Any] = field(default_factory=dict)


def defaults(scenario: str, smoke: bool) -> dict[str, Any]:
    """Per-scenario defaults; `smoke` makes a run small and fast (CI), with cheap password hashing."""
    base: dict[str, dict[str, Any]] = {
        "connections": {},
        "login-storm": {"users": 2000, "login_rate": 5000.0, "hold": 0.0},
        "presence-storm": {"users": 1000, "pc_share": 1.0, "login_rate": 500.0, "hold": 2.0},
        "one-to-one": {"users": 0, "pairs": 200, "rate": 10.0, "hold": 0.0, "heartbeat": 0.0},
        "group": {"users": 0, "groups": 20, "group_size": 10, "rate": 5.0, "hold": 0.0, "heartbeat": 0.0},
    }
    out = dict(base[scenario])
    if smoke:
        out.update(hash="cheap", hold=3.0 if scenario == "connections" else out.get("hold", 0.0))
        out.update(heartbeat=1.0 if scenario in ("connections", "login-storm") else out.get("heartbeat", 0))
        small = {"login-storm": 300, "presence-storm": 200}
        if scenario in small:
            out["users"] = small[scenario]
        if scenario == "login-storm":
            out.update(pairs=20, rate=10.0, duration=3.0)
        if scenario in ("one-to-one", "group"):
            out.update(duration=3.0, drain=5.0, pairs=20, groups=4, group_size=5)
        out["max_seconds"] = 120.0
    return out


@dataclass(frozen=True)
class User:
    """One simulated user: where it connects from and to, and in which login phase."""

    index: int
    name: str
    client_type: int
    instance: int  # msg server instance
    source: str  # loopback source address
    process: int  # load process
    phase: int  # 0: before the load; 1: the storm (login-storm)


@dataclass
class Plan:
    """Users, senders and the process/source layout of a run."""

    options: Options
    users: list[User]
    senders: list[tuple[int, int, bool]]  # (sender index, target: user index or group number, group)
    groups: list[list[int]]  # user indexes of each group (group scenario)
    processes: int
    sources: list[str]
    group_ids: list[int] = field(default_factory=list)  # filled when the groups are created

    def expected_deliveries_per_message(self) -> int:
        """Deliveries one message causes: 1 (one-to-one), members - 1 (group)."""
        return self.options.group_size - 1 if self.options.scenario == "group" else 1

    def phase_size(self, phase: int) -> int:
        return sum(1 for u in self.users if u.phase == phase)


def is_pc(index: int, share: float) -> bool:
    """Spread PCs evenly: user i is a PC when floor((i+1) * share) > floor(i * share)."""
    return math.floor((index + 1) * share + 1e-9) > math.floor(index * share + 1e-9)


def make_plan(opts: Options) -> Plan:
    """Lay the users of a scenario out over msg servers, source addresses and load processes."""
    if opts.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {opts.scenario!r}")
    if opts.msg_servers < 1:
        raise ValueError("at least one msg server is needed")
    m = opts.msg_servers
    users: list[tuple[int, int, int]] = []  # (client type, instance, phase)
    senders: list[tuple[int, int, bool]] = []
    groups: list[list[int]] = []
    if opts.scenario in ("one-to-one", "login-storm") and opts.pairs:
        # Each pair's sender and receiver on different msg servers (when there are two or more).
        for k in range(opts.pairs):
            users.append((PC_TYPE, k % m, 0))
            users.append((PC_TYPE, (k + 1) % m, 0))
            senders.append((2 * k, 2 * k + 1, False))
    if opts.scenario == "group":
        for g in range(opts.groups):
            members = []
            for j in range(opts.group_size):
                members.append(len(users))
                users.append((PC_TYPE, (g + j) % m, 0))
            groups.append(members)
            senders.append((members[0], g, True))
    if opts.scenario in ("connections", "login-storm", "presence-storm"):
        phase = 1 if opts.scenario == "login-storm" and opts.pairs else 0
        for i in range(opts.users):
            kind = PC_TYPE if is_pc(i, opts.pc_share) else MOBILE_TYPE
            users.append((kind, i % m, phase))
    n = len(users)
    procs = opts.client_procs or max(2, math.ceil(n / PER_PROCESS))
    nsources = opts.sources or max(2, math.ceil(n / PER_SOURCE))
    if nsources > 250:
        raise ValueError("at most 250 loopback source addresses (127.0.0.2 - 127.0.0.251)")
    sources = [f"127.0.0.{2 + s}" for s in range(nsources)]
    plan_users = [
        User(i, f"bench{i:06d}", kind, inst, sources[i % nsources], i % procs, phase)
        for i, (kind, inst, phase) in enumerate(users)
    ]
    return Plan(opts, plan_users, senders, groups, procs, sources)


def with_overrides(opts: Options, **changes: Any) -> Options:
    return replace(opts, **changes)
