"""Runtime cluster layer: the `--processes` supervisor, one worker process per service instance.

Workers start service by service in table order; the supervisor waits for each worker's `READY` line (its
endpoints are then published) before starting the next service. A worker that dies is reported loudly; the
rest keeps running. With the config's `restart: on-failure` it is started again after a backoff
(RESTART_BACKOFF), unless it already died RESTART_LIMIT times within RESTART_PERIOD seconds (a crash loop:
then it stays down, reported); with `restart: never` (the default) it stays down. On SIGINT/SIGTERM workers
get SIGTERM in reverse start order, drain and exit; a worker still running after the drain timeout plus a
grace period is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.cluster.config import ClusterConfig
from runtime.cluster.discovery import RunDirDiscovery
from runtime.cluster.layout import ProcessGroup, process_groups
from runtime.cluster.runner import (
    ClusterStartError,
    Console,
    check_instances_free,
    claim_data_dir,
    plan_services,
    release_data_dir,
    update_cluster_state,
)
from runtime.cluster.worker import FAILED, READY
from runtime.services.base import Endpoint

CONFIG_FILE = "cluster.config"
KILL_GRACE = 5.0
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before a worker's 1st, 2nd, ... restart in the period
RESTART_LIMIT = 5  # restarts of one worker within RESTART_PERIOD; one more death leaves it down
RESTART_PERIOD = 300.0


def start_batches(config: ClusterConfig, available: set[str]) -> list[list[ProcessGroup]]:
    """The layout's process groups (of services that can run) in start order, batched: the instances of one
    service outside any shard start together; each shard alone (shard k+1's roles dial shard k's biz)."""
    batches: list[list[ProcessGroup]] = []
    previous = ""
    for group in process_groups(config):
        if not all(name in available for name, _ in group.members):
            group = ProcessGroup(
                group.name, tuple(m for m in group.members if m[0] in available), group.shard
            )
            if not group.members:
                continue
        service = group.members[0][0]
        if group.shard is None and service == previous and batches:
            batches[-1].append(group)
        else:
            batches.append([group])
        previous = service if group.shard is None else ""
    return batches


def worker_pids(workers: Sequence[Worker]) -> dict[str, int]:
    """Instance name -> pid of its worker, for the state file (every role of a shard, by its own name)."""
    out: dict[str, int] = {}
    for w in workers:
        members = w.group.members if w.group is not None else ((w.service, w.instance),)
        for service, instance in members:
            out[f"{service}-{instance}"] = w.process.pid
    return out


@dataclass
class Worker:
    """One worker process and what it reported (`service`/`instance`: its first instance; a shard's
    `group` hosts several, runtime.cluster.layout)."""

    service: str
    instance: int
    process: asyncio.subprocess.Process
    endpoints: list[Endpoint] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None
    group: ProcessGroup | None = None

    @property
    def name(self) -> str:
        return self.group.name if self.group is not None else f"{self.service}-{self.instance}"

    def hosts(self, service: str, instance: int) -> bool:
        if self.group is not None:
            return self.group.hosts(service, instance)
        return (self.service, self.instance) == (service, instance)


class ProcessSupervisor:
    """Runs every service instance in its own process."""

    def __init__(
        self,
        config: ClusterConfig,
        stack_module: str,
        *,
        console: Console = print,
        verbose: bool = False,
        python: str = sys.executable,
    ) -> None:
        self.config, self.stack_module = config, stack_module
        self.console, self.verbose, self.python = console, verbose, python
        self.workers: list[Worker] = []
        self.exited: list[tuple[str, int | None]] = []  # workers that died on their own: (name, exit code)
        self._stopping = False
        self._stop = asyncio.Event()
        self._restarts: dict[str, list[float]] = {}  # worker name -> monotonic times of its recent restarts
        self._restarting: set[asyncio.Task[None]] = set()

    async def start(self) -> list[Worker]:
        """Spawn every worker and wait until each is ready; on failure stop all, raise ClusterStartError."""
        planned = plan_services(self.config, self.console)
        await check_instances_free(self.config)
        available = {item.config.name for item in planned}
        claim_data_dir(self.config, "processes")
        config_path = self.config.run_dir / CONFIG_FILE
        config_path.write_text(self.config.to_json() + "\n", encoding="utf-8")
        try:
            for batch in start_batches(self.config, available):
                spawned = [await self._spawn_group(group, str(config_path)) for group in batch]
                self.workers.extend(spawned)
                await asyncio.gather(*(self._await_ready(w) for w in spawned))
        except BaseException:
            await self.stop()
            raise
        for worker in self.workers:
            worker.watcher = asyncio.create_task(self._watch(worker))
            if worker.process.stdin is not None:  # every peer is up now: look again (later shards' roles)
                with contextlib.suppress(OSError):
                    worker.process.stdin.write(b"peers\n")
        pids = worker_pids(self.workers)
        update_cluster_state(self.config, state="running", workers=pids)
        return self.workers

    async def _spawn_group(self, group: ProcessGroup, config_path: str) -> Worker:
        service, instance = group.members[0]
        if len(group.members) == 1 and group.shard is None:
            return await self._spawn(service, instance, config_path)
        extra = [f"--member={name}:{i}" for name, i in group.members[1:]]
        if group.shard is not None:
            extra.append(f"--shard={group.shard}")
        worker = await self._spawn(service, instance, config_path, extra)
        worker.group = group
        return worker

    async def _spawn(
        self, service: str, instance: int, config_path: str, extra: Sequence[str] = ()
    ) -> Worker:
        argv = [
            self.python,
            "-m",
            "runtime.cluster.worker",
            "--config",
            config_path,
            "--service",
            service,
            "--instance",
            str(instance),
            "--stack",
            self.stack_module,
            *extra,
        ]
        if self.verbose:
            argv.append("--verbose")
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops workers in order
        )
        return Worker(service, instance, process)

    async def _await_ready(self, worker: Worker) -> None:
        assert worker.process.stdout is not None
        try:
            line = await asyncio.wait_for(worker.process.stdout.readline(), self.config.start_timeout)
        except TimeoutError:
            raise ClusterStartError(
                f"{worker.name} did not report ready within {self.config.start_timeout}s"
            ) from None
        kind, _, payload = line.decode("utf-8", "replace").strip().partition(" ")
        if kind == READY:
            doc: dict[str, Any] = json.loads(payload)
            worker.endpoints = [
                Endpoint(
                    e.get("service", worker.service),
                    int(e.get("instance", worker.instance)),
                    e["kind"],
                    e["host"],
                    int(e["port"]),
                )
                for e in doc["endpoints"]
            ]
            return
        if kind == FAILED:
            error = json.loads(payload).get("error", "unknown error")
        else:
            code = await worker.process.wait()
            error = f"exited with code {code} before reporting ready (see its log and the console)"
        raise ClusterStartError(f"{worker.name} failed to start: {error}")

    async def _watch(self, worker: Worker) -> None:
        """Forward stray stdout and report a worker that exits while the cluster is running."""
        assert worker.process.stdout is not None
        while line := await worker.process.stdout.readline():
            self.console(f"{worker.name}: {line.decode('utf-8', 'replace').rstrip()}")
        code = await worker.process.wait()
        if not self._stopping:
            self.exited.append((worker.name, code))
            RunDirDiscovery(self.config.run_dir).sweep_stale()
            died = f"error: {worker.name} (pid {worker.process.pid}) exited with code {code}"
            if self.config.restart != "on-failure":
                self.console(f"{died}; it is NOT restarted, the rest of the cluster keeps running")
                return
            self._schedule_restart(worker, died)

    def _schedule_restart(self, worker: Worker, died: str) -> None:
        """The `on-failure` policy: start the worker again after a backoff, unless it is crash-looping."""
        now = asyncio.get_running_loop().time()
        recent = [t for t in self._restarts.get(worker.name, []) if now - t < RESTART_PERIOD]
        self._restarts[worker.name] = recent
        if len(recent) >= RESTART_LIMIT:
            self.console(
                f"{died}; it was restarted {len(recent)} times in {RESTART_PERIOD:g} s: NOT restarted again "
                "(a crash loop: see its log); the rest of the cluster keeps running"
            )
            return
        delay = RESTART_BACKOFF[min(len(recent), len(RESTART_BACKOFF) - 1)]
        recent.append(now + delay)
        self.console(f"{died}; restarting it in {delay:g} s")
        task = asyncio.get_running_loop().create_task(self._restart_later(worker, delay, died))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _restart_later(self, worker: Worker, delay: float, died: str) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        try:
            await self.restart(worker.service, worker.instance)
        except ValueError:  # restarted meanwhile by someone else (`restart` called directly)
            return
        except ClusterStartError as exc:
            self._schedule_restart(worker, f"error: {worker.name} did not come back: {exc}")

    async def restart(self, service: str, instance: int) -> Worker:
        """Start a worker that exited (crashed, or was killed) again, in its place; returns the new worker
        once it is ready (what the `restart: on-failure` policy calls; also for whoever embeds the
        supervisor). Raises ValueError for an unknown or still-running worker, ClusterStartError if the new
        process does not come up."""
        index = next((i for i, w in enumerate(self.workers) if w.hosts(service, instance)), None)
        if index is None:
            raise ValueError(f"no worker {service}-{instance}")
        old = self.workers[index]
        if old.process.returncode is None:
            raise ValueError(f"{old.name} is still running (pid {old.process.pid})")
        if old.watcher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await old.watcher
        RunDirDiscovery(self.config.run_dir).sweep_stale()  # its endpoint files must not outlive it
        if old.group is not None:
            worker = await self._spawn_group(old.group, str(self.config.run_dir / CONFIG_FILE))
        else:
            worker = await self._spawn(service, instance, str(self.config.run_dir / CONFIG_FILE))
        try:
            await self._await_ready(worker)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            await worker.process.wait()
            raise
        worker.watcher = asyncio.create_task(self._watch(worker))
        self.workers[index] = worker
        pids = worker_pids(self.workers)
        update_cluster_state(self.config, state="running", workers=pids)
        self.console(f"{worker.name} restarted (pid {worker.process.pid})")
        return worker

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint reported by a worker (metrics included), in start order."""
        return [e for w in self.workers for e in w.endpoints]

    def request_stop(self) -> None:
        """Ask `run_until_stopped` to return (safe from a signal handler)."""
        self._stop.set()

    async def run_until_stopped(self) -> None:
        """Wait for SIGINT/SIGTERM (or `request_stop`), then stop every worker in reverse order."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            await self._stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            await self.stop()

    async def stop(self) -> None:
        """SIGTERM workers service by service (reverse start order); kill any outliving the grace period."""
        self._stopping = True
        for task in list(self._restarting):
            task.cancel()
        if self.workers:
            update_cluster_state(self.config, state="stopping")
        groups: dict[str, list[Worker]] = {}
        for worker in self.workers:  # a shard stops with its msg server, the last of its roles to start
            key = worker.group.name.split("-")[0] if worker.group is not None else worker.service
            groups.setdefault(key, []).append(worker)
        for service in reversed(list(groups)):
            await asyncio.gather(*(self._terminate(w) for w in groups[service]))
        for worker in self.workers:
            if worker.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.watcher
        self.workers.clear()
        RunDirDiscovery(self.config.run_dir).sweep_stale()
        (self.config.run_dir / CONFIG_FILE).unlink(missing_ok=True)
        release_data_dir(self.config)

    async def _terminate(self, worker: Worker) -> None:
        process = worker.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self.config.drain_timeout + KILL_GRACE)
            except TimeoutError:
                self.console(f"warning: {worker.name} did not stop in time; killing pid {process.pid}")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if process.returncode not in (0, None) and (worker.name, process.returncode) not in self.exited:
            self.console(f"warning: {worker.name} exited with code {process.returncode} while stopping")
