"""CLI layer (bench): the cluster under test: started for the run (`--processes` machinery) or a running one
(`--target`), its users created in bulk, and its processes sampled (CPU and RSS from /proc)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.auth import HashPolicy, PasswordHasher
from runtime.cluster.config import ClusterConfig, parse_config
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.processes import ProcessSupervisor
from runtime.storage import Conflict, GroupType, NewUser, Storage
from ttgen.bench.plan import Options, Plan

PASSWORD = "bench"
PASSWORD_MD5 = hashlib.md5(PASSWORD.encode()).hexdigest()
CHEAP_AUTH = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}  # not for production: bench only
SEED_CHUNK = 2000


def bench_config(opts: Options, data_dir: Path) -> ClusterConfig:
    """The cluster a bench run starts: login, msg x N, router x R, biz x B as processes; no file/gateway."""
    biz: dict[str, Any] = {"instances": opts.biz}
    if opts.hash == "cheap":
        biz["auth"] = dict(CHEAP_AUTH)
    return parse_config(
        {
            "data_dir": str(data_dir),
            **({"layout": opts.layout} if opts.layout else {}),
            "storage": {"backend": "sqlite", "encrypt_at_rest": True},
            "drain_timeout": 10.0,
            "start_timeout": 60.0,
            "services": {
                "login": {"instances": 1, "http_port": 0},
                "msg": {"instances": opts.msg_servers, "client_port": 0},
                "router": {"instances": opts.routers},
                "biz": biz,
                "file": {"instances": 0},
                "storage": {"instances": 0},
                "gateway": {"instances": 0},
            },
        }
    )


def hasher_for(config: ClusterConfig) -> PasswordHasher:
    """A hasher with the biz service's argon2id parameters (what its logins verify against)."""
    biz = config.services.get("biz")
    auth = dict((biz.options.get("auth") or {}) if biz is not None else {})
    return PasswordHasher(policy=HashPolicy.from_config(auth))


async def seed(storage: Storage, plan: Plan, password_hash: str, say: Callable[[str], None]) -> list[int]:
    """Create the plan's users (existing ones are reused) and groups; returns the user ids by user index."""
    ids: list[int] = []

    async def one(name: str) -> int:
        try:
            user = await storage.create_user(NewUser(login_name=name, nick=name, password_hash=password_hash))
            return user.id
        except Conflict:
            found = await storage.get_user_by_login(name)
            assert found is not None
            await storage.set_password_hash(found.id, password_hash)
            return found.id

    names = [u.name for u in plan.users]
    for i in range(0, len(names), SEED_CHUNK):  # concurrent creates share group commits
        ids += await asyncio.gather(*(one(n) for n in names[i : i + SEED_CHUNK]))
        if len(names) > 10 * SEED_CHUNK and (i // SEED_CHUNK) % 10 == 9:
            say(f"bench: {len(ids)} of {len(names)} users created")
    plan.group_ids = []
    for g, members in enumerate(plan.groups):
        group = await storage.create_group(
            ids[members[0]], f"bench-group-{g}", GroupType.NORMAL, [ids[m] for m in members], by_admin=True
        )
        plan.group_ids.append(group.id)
    return ids


@dataclass
class Proc:
    """A cluster process to sample."""

    name: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Cluster:
    """The cluster under test: started and stopped by the run, or a running one found in its run dir."""

    def __init__(self, config: ClusterConfig, stack: str, *, owned: bool, say: Callable[[str], None]) -> None:
        self.config = config
        self.stack = stack
        self.owned = owned
        self.say = say
        self.supervisor: ProcessSupervisor | None = None

    async def start(self) -> None:
        if not self.owned:
            return
        self.supervisor = ProcessSupervisor(self.config, self.stack, console=self.say)
        await self.supervisor.start()

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
            self.supervisor = None

    async def restart(self) -> None:
        """Stop every process (connections drain and close) and start the cluster again."""
        if not self.owned:
            raise RuntimeError("--restart needs a cluster started by the bench (not --target)")
        await self.stop()
        await self.start()

    def msg_endpoints(self) -> dict[int, tuple[str, int]]:
        eps = RunDirDiscovery(self.config.run_dir).endpoints("msg", "client")
        return {e.instance: (e.host, e.port) for e in eps}

    def processes(self) -> list[Proc]:
        if self.supervisor is not None:
            return [Proc(w.name, w.process.pid) for w in self.supervisor.workers]
        seen: dict[int, Proc] = {}
        for rec in RunDirDiscovery(self.config.run_dir).records():
            ep = rec.endpoint
            seen.setdefault(rec.pid, Proc(f"{ep.service}-{ep.instance}", rec.pid))
        return list(seen.values())

    def sample(self) -> dict[str, dict[str, float]]:
        """CPU seconds and RSS (KiB) of every cluster process, by name."""
        return {p.name: {"cpu_s": cpu_seconds(p.pid), "rss_kb": rss_kb(p.pid)} for p in self.processes()}
