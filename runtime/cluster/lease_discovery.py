"""Runtime cluster layer: discovery across hosts through the PostgreSQL database, with leases.

Every endpoint a process publishes is a row of `endpoints` keyed by (cluster id, service, instance, kind) and
held by that process (`holder`) under a lease: the process renews its rows every `ttl / 3` seconds, and
readers see only rows whose lease has not expired, so a process that died (or a host that went away) drops out
within `ttl` seconds. Times are the database's clock, so hosts need not agree on theirs. A change (publish,
withdraw) is announced with `NOTIFY ttgen_endpoints`; every process LISTENs and refreshes its view at once,
and polls every `poll` seconds anyway: a change is seen within `poll` seconds even when a notification is
lost, and a lapsed lease within `ttl + poll`.

The Discovery methods are synchronous (dialers call `endpoints()` on every attempt), so they work on the view
this object keeps; a process sees its own publishes at once. Published endpoints are mirrored to the local run
dir too (`mirror`), where `ttgen status` and the process supervisor look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import asyncpg

from runtime.cluster.config import ClusterConfig
from runtime.cluster.discovery import CombinedDiscovery, RunDirDiscovery, StaticDiscovery
from runtime.services.base import Endpoint

CHANNEL = "ttgen_endpoints"
_LOCK = 0x74656E64  # advisory lock for creating the table ("tend")
_log = logging.getLogger(__name__)
_NOW = "extract(epoch from clock_timestamp())"


class LeaseDiscovery:
    """Endpoints of one cluster registered in its database with leases (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        cluster_id: str,
        *,
        ttl: float = 10.0,
        poll: float = 1.0,
        mirror: RunDirDiscovery | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        if ttl <= 0 or poll <= 0:
            raise ValueError("ttl and poll must be positive")
        self.dsn, self.cluster_id = dsn, cluster_id
        self.ttl, self.poll = float(ttl), float(poll)
        self.mirror = mirror
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self._connect_timeout = connect_timeout
        self._mine: dict[tuple[str, int, str], Endpoint] = {}  # what this process published
        self._view: list[Endpoint] = []  # live endpoints of the cluster, oldest registration first
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._withdrawn: list[Endpoint] = []  # to delete from the database on the next beat
        self._changed = False  # publish/withdraw since the last write: the others are notified
        self._dirty = asyncio.Event()  # a refresh (and a write of our rows) is wanted now
        self.refreshes = 0

    # lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect, create the table if needed, LISTEN, load the view, and start the lease keeper."""
        self._conn = await self._open()
        await self._refresh()
        self._task = asyncio.get_running_loop().create_task(self._keep(), name="ttgen-lease-discovery")

    async def _open(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.dsn, timeout=self._connect_timeout, command_timeout=10)
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS endpoints (cluster_id TEXT NOT NULL, "
                    "service TEXT NOT NULL, instance INTEGER NOT NULL, kind TEXT NOT NULL, "
                    "host TEXT NOT NULL, port INTEGER NOT NULL, "
                    "holder TEXT NOT NULL, started DOUBLE PRECISION NOT NULL, "
                    "expires DOUBLE PRECISION NOT NULL, PRIMARY KEY (cluster_id, service, instance, kind))"
                )
            await conn.add_listener(CHANNEL, self._notified)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def close(self) -> None:
        """Withdraw what is still published, stop renewing, disconnect."""
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=5)
            if not done:
                _log.warning("lease discovery: the lease keeper did not stop within 5 s")
            self._task = None
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.terminate()  # the keeper may have been cancelled mid-statement: this connection is done
        # Everything this process holds goes, in a connection of its own (withdrawals not yet written too).
        with contextlib.suppress(Exception):
            final = await asyncpg.connect(self.dsn, timeout=self._connect_timeout)
            try:
                await final.execute(
                    "DELETE FROM endpoints WHERE cluster_id = $1 AND holder = $2",
                    self.cluster_id,
                    self.holder,
                )
                await final.execute("SELECT pg_notify($1, $2)", CHANNEL, self.cluster_id)
            finally:
                await asyncio.wait_for(final.close(), 2)

    # Discovery -------------------------------------------------------------------------------------------
    def publish(self, endpoint: Endpoint) -> None:
        """Announce an endpoint of this process (at once in this process; in the database on the next beat,
        which is now)."""
        self._mine[(endpoint.service, endpoint.instance, endpoint.kind)] = endpoint
        if endpoint not in self._view:
            self._view.append(endpoint)
        if self.mirror is not None:
            self.mirror.publish(endpoint)
        self._changed = True
        self._dirty.set()

    def withdraw(self, endpoint: Endpoint) -> None:
        """Remove an endpoint at shutdown."""
        self._mine.pop((endpoint.service, endpoint.instance, endpoint.kind), None)
        self._view = [e for e in self._view if e != endpoint]
        if self.mirror is not None:
            self.mirror.withdraw(endpoint)
        self._withdrawn.append(endpoint)
        self._changed = True
        self._dirty.set()

    def endpoints(self, service: str, kind: str) -> list[Endpoint]:
        """Every live endpoint of `service` of that kind, oldest registration first."""
        return [e for e in self._view if e.service == service and e.kind == kind]

    # the lease keeper ------------------------------------------------------------------------------------
    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self.cluster_id:
            self._dirty.set()

    async def _keep(self) -> None:
        """Renew leases every ttl/3, refresh the view every `poll` seconds or when notified; survive an
        unreachable database (the last view is kept, and the rows are written again when it is back)."""
        beat = self.ttl / 3
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            timeout = max(0.0, min(self.poll, next_beat - loop.time()))
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation that lands as the event is
            # set, and close() would wait forever for this task.
            alarm = loop.call_later(timeout, self._dirty.set)
            try:
                await self._dirty.wait()
            finally:
                alarm.cancel()
            self._dirty.clear()
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await self._open()
                if loop.time() >= next_beat or self._changed:
                    await self._write()
                    next_beat = loop.time() + beat
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep the last view, try again next round
                _log.warning(
                    "lease discovery: %s: %s (keeping the last known endpoints)", type(exc).__name__, exc
                )
                if self._conn is not None:
                    self._conn.terminate()
                    self._conn = None
                await asyncio.sleep(min(self.poll, beat))

    async def _write(self) -> None:
        """Upsert this process's rows with a fresh lease, delete withdrawn ones, and notify if anything
        changed for the others."""
        conn = self._conn
        assert conn is not None
        changed, self._changed = self._changed, False
        withdrawn, self._withdrawn = self._withdrawn, []
        for e in withdrawn:
            await conn.execute(
                "DELETE FROM endpoints WHERE cluster_id = $1 AND service = $2 AND instance = $3 "
                "AND kind = $4 AND holder = $5",
                self.cluster_id,
                e.service,
                e.instance,
                e.kind,
                self.holder,
            )
        for e in list(self._mine.values()):
            await conn.execute(
                "INSERT INTO endpoints AS e "
                "(cluster_id, service, instance, kind, host, port, holder, started, expires) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7, {_NOW}, {_NOW} + $8) "
                "ON CONFLICT (cluster_id, service, instance, kind) DO UPDATE SET host = excluded.host, "
                "port = excluded.port, holder = excluded.holder, expires = excluded.expires, "
                "started = CASE WHEN e.holder = excluded.holder AND e.host = excluded.host "
                "AND e.port = excluded.port AND e.expires > excluded.started THEN e.started "
                "ELSE excluded.started END",  # a registration keeps its place (order) while its lease holds
                self.cluster_id,
                e.service,
                e.instance,
                e.kind,
                e.host,
                e.port,
                self.holder,
                self.ttl,
            )
        if changed:
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, self.cluster_id)

    async def _refresh(self) -> None:
        conn = self._conn
        assert conn is not None
        rows = await conn.fetch(
            "SELECT service, instance, kind, host, port FROM endpoints WHERE cluster_id = $1 "
            f"AND expires > {_NOW} ORDER BY started, service, instance, kind",
            self.cluster_id,
        )
        view = [Endpoint(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        # our own publishes are live even before their row is written
        view += [e for e in self._mine.values() if e not in view]
        self._view = view
        self.refreshes += 1


async def open_discovery(config: ClusterConfig, local: RunDirDiscovery) -> tuple[Any, LeaseDiscovery | None]:
    """The discovery a process of this cluster uses: the run dir (`discovery.backend: run_dir`, one host) or
    the database with leases (`database`, mirrored to the run dir), with the config's static endpoints beside
    it; and the LeaseDiscovery to close at stop (None for the run dir)."""
    static = StaticDiscovery(config.endpoints)
    if config.discovery.get("backend", "run_dir") != "database":
        return CombinedDiscovery(local, static), None
    from runtime.storage.postgres import load_or_create_cluster_id

    cluster_id = config.storage.get("cluster_id") or load_or_create_cluster_id(config.storage_dir)
    lease = LeaseDiscovery(
        str(config.storage["dsn"]),
        str(cluster_id),
        ttl=float(config.discovery.get("ttl", 10.0)),
        poll=float(config.discovery.get("poll", 1.0)),
        mirror=local,
    )
    await lease.start()
    return CombinedDiscovery(lease, static), lease


async def wait_instances_free(
    config: ClusterConfig, *, timeout: float | None = None, connect_timeout: float = 5.0
) -> None:
    """With database discovery: wait until no live lease of another process holds an instance number this
    host is about to run; raise InstanceTaken when one is still held after `timeout` (default: the lease
    ttl plus a poll, the time a host that died needs to drop out).

    Instance numbers name endpoints cluster-wide (the rows are keyed by service, instance, kind): two hosts
    running the same numbers would overwrite each other's endpoints. A host that restarts after a crash
    finds its old leases and waits for them to lapse."""
    if config.discovery.get("backend", "run_dir") != "database":
        return
    from runtime.storage.postgres import load_or_create_cluster_id

    wanted = {(s.name, i) for s in config.ordered_services() for i in s.numbers}
    if not wanted:
        return
    cluster_id = str(config.storage.get("cluster_id") or load_or_create_cluster_id(config.storage_dir))
    ttl = float(config.discovery.get("ttl", 10.0))
    poll = float(config.discovery.get("poll", 1.0))
    limit = ttl + poll if timeout is None else timeout
    conn = await asyncpg.connect(str(config.storage["dsn"]), timeout=connect_timeout)
    try:
        exists = await conn.fetchval("SELECT to_regclass('endpoints') IS NOT NULL")
        if not exists:
            return
        deadline = asyncio.get_running_loop().time() + limit
        while True:
            rows = await conn.fetch(
                "SELECT service, instance, host, port, holder, expires - "
                f"{_NOW} AS left FROM endpoints WHERE cluster_id = $1 AND expires > {_NOW} "
                "ORDER BY service, instance",
                cluster_id,
            )
            taken = [r for r in rows if (r["service"], r["instance"]) in wanted]
            if not taken:
                return
            if asyncio.get_running_loop().time() >= deadline:
                r = taken[0]
                raise InstanceTaken(
                    f"{r['service']}-{r['instance']} is already running at {r['host']}:{r['port']} "
                    f"(held by {r['holder']}, lease renewed within the last {ttl:g} s): every host needs "
                    "instance numbers of its own; give this host others with --first-instance N (or "
                    f"services.{r['service']}.first_instance)"
                )
            await asyncio.sleep(min(poll, max(0.05, min(float(r["left"]) for r in taken))))
    finally:
        await conn.close()


class InstanceTaken(RuntimeError):
    """An instance number this host would run is held, under a live lease, by a process elsewhere."""
