"""Runtime cluster layer: the deployment layout, i.e. which service roles share a process.

- `split`: one process per service instance (ARCHITECTURE.md's original topology). Every internal link is a
  TCP connection.
- `sharded`: shard k is msg-k together with biz-k and router-k (those that exist) in one process; a link
  between two roles of one shard is an in-process link (runtime.inprocess: bytes handed over once per
  loop iteration, no socket), msg stores into its shard's biz and relays through its shard's router by direct
  calls (no frame at all), and only traffic between shards uses TCP links. Every other
  instance (login, file, gateway, storage, the biz and router instances beyond the msg count) keeps a process
  of its own.

The config's top-level `layout:` picks one; the default (split) is the one measured faster on a shared 2-core
machine (bench/RESULTS.md, "2026-12-07: roles that share a process" and "issue 14 on the merged tree": sharded
uses 0.85-0.91x the CPU per message, but its tail latency near the knee is 2.8-5x split's). In one-process
mode (`ttgen up` without `--processes`) every instance runs in one event loop anyway; the layout then decides
which links are in-process, so the integration tests exercise both link kinds in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from runtime.cluster.config import DEFAULT_LAYOUT, LAYOUTS, ClusterConfig
from runtime.services.registry_table import start_rank

__all__ = ["DEFAULT_LAYOUT", "LAYOUTS", "SHARD_SWITCH_INTERVAL", "ProcessGroup", "process_groups", "shard_of"]

# A shard's event loop shares the GIL with biz's SQLite writer thread: with Python's default 5 ms switch
# interval the writer waits up to 5 ms for the GIL after each statement while the loop is busy, and commits
# (so acks) trail. 0.5 ms halved the median latency of a sharded cluster at 5,000 msgs/s (bench/RESULTS.md).
SHARD_SWITCH_INTERVAL = 0.0005
SHARD_ROLES = ("msg", "biz", "router")  # the roles a shard groups, keyed by msg's instance number


@dataclass(frozen=True)
class ProcessGroup:
    """The instances one worker process hosts, started in this order."""

    name: str  # "msg-0" (split, or a role outside any shard) or "shard-0"
    members: tuple[tuple[str, int], ...]  # (service, instance)
    shard: str | None = None  # the shard whose links are in-process; None: every link is TCP

    def hosts(self, service: str, instance: int) -> bool:
        return (service, instance) in self.members


def shard_of(config: ClusterConfig, service: str, instance: int) -> str | None:
    """The shard an instance belongs to in the config's layout (None: its own process / TCP links only)."""
    if config.layout != "sharded" or service not in SHARD_ROLES:
        return None
    msg = config.services.get("msg")
    if msg is None or instance not in msg.numbers:
        return None
    return f"shard-{instance}"


def process_groups(config: ClusterConfig) -> list[ProcessGroup]:
    """Every enabled instance in exactly one group, groups in start order: a group starts at the position of
    its last-starting role (a shard with its msg server), so the peers its roles dial are up before it."""
    singles: list[ProcessGroup] = []
    shards: dict[str, list[tuple[str, int]]] = {}
    for svc in config.ordered_services():
        for i in svc.numbers:
            shard = shard_of(config, svc.name, i)
            if shard is None:
                singles.append(ProcessGroup(f"{svc.name}-{i}", ((svc.name, i),)))
            else:
                shards.setdefault(shard, []).append((svc.name, i))
    groups = singles + [ProcessGroup(name, tuple(members), name) for name, members in shards.items()]

    def rank(group: ProcessGroup) -> tuple[int, int]:
        return (max(start_rank(s) for s, _ in group.members), min(i for _, i in group.members))

    return sorted(groups, key=rank)
