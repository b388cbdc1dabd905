"""Runtime cluster layer: the one-process supervisor, running every service instance in one event loop.

Services start in table order (all instances of a service together, then the next service), so a service's
peers are up before it; they stop in reverse order after draining. A service whose module does not exist yet
is skipped with a warning. The same `HostedInstance` code runs each instance in `--processes` mode.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from runtime.cluster.config import ClusterConfig, ServiceConfig
from runtime.cluster.discovery import (
    CLUSTER_FILE,
    RunDirDiscovery,
    pid_alive,
    write_json_atomic,
)
from runtime.cluster.instance import HostedInstance, make_context, start_instance
from runtime.cluster.layout import shard_of
from runtime.cluster.lease_discovery import (
    InstanceTaken,
    LeaseDiscovery,
    open_discovery,
    wait_instances_free,
)
from runtime.cluster.logs import attach_process_log
from runtime.registry import Registry
from runtime.services.base import Endpoint, Service
from runtime.services.registry_table import ServiceUnavailable, load_service_class

log = logging.getLogger("ttgen.cluster")
Console = Callable[[str], None]
PROCESS_LOG = "cluster.log"  # records of the supervisor and runtime libraries, outside any instance


class ClusterStartError(RuntimeError):
    """The cluster could not start (a service failed, or another cluster uses the data dir)."""


@dataclass(frozen=True)
class Planned:
    """A service to run and the class that implements it."""

    config: ServiceConfig
    cls: type[Service]


def plan_services(config: ClusterConfig, console: Console) -> list[Planned]:
    """Resolve the class of every enabled service, skipping (with a warning) those not written yet."""
    planned = []
    for svc in config.ordered_services():
        try:
            cls = load_service_class(svc.class_ref)
        except ServiceUnavailable as exc:
            console(f"warning: skipping service '{svc.name}': {exc}")
            continue
        planned.append(Planned(svc, cls))
    if not planned:
        raise ClusterStartError("no service to run: every configured service is missing or disabled")
    return planned


async def check_instances_free(config: ClusterConfig) -> None:
    """Refuse to run instance numbers another host of the cluster runs (database discovery only)."""
    try:
        await wait_instances_free(config)
    except InstanceTaken as exc:
        raise ClusterStartError(str(exc)) from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise ClusterStartError(
            f"cannot reach the cluster's database to check instance numbers: {type(exc).__name__}: {exc}"
        ) from None


def claim_data_dir(config: ClusterConfig, mode: str) -> RunDirDiscovery:
    """Refuse to start over a live cluster in the same data dir; sweep stale records; write our state file."""
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    config.log_dir.mkdir(parents=True, exist_ok=True)
    state = read_cluster_state(config.run_dir)
    if state is not None and state.get("pid") != os.getpid() and pid_alive(int(state.get("pid", 0))):
        raise ClusterStartError(
            f"a cluster (pid {state['pid']}) is already running in {config.data_dir}; "
            "stop it or use another --data-dir"
        )
    discovery = RunDirDiscovery(run_dir)
    discovery.sweep_stale()
    write_json_atomic(
        run_dir / CLUSTER_FILE,
        {
            "pid": os.getpid(),
            "mode": mode,
            "started": time.time(),
            "spec": config.spec,
            "data_dir": str(config.data_dir),
            "host": config.host,
            "state": "starting",
        },
    )
    return discovery


def read_cluster_state(run_dir: Path) -> dict[str, Any] | None:
    """The supervisor's state file in a run dir, if present and readable."""
    try:
        doc = json.loads((run_dir / CLUSTER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def update_cluster_state(config: ClusterConfig, **changes: Any) -> None:
    """Merge fields into the state file (e.g. `state="running"`)."""
    state = read_cluster_state(config.run_dir) or {}
    state.update(changes)
    write_json_atomic(config.run_dir / CLUSTER_FILE, state)


def release_data_dir(config: ClusterConfig) -> None:
    """Remove our state file at the end of a clean shutdown."""
    state = read_cluster_state(config.run_dir)
    if state is not None and state.get("pid") == os.getpid():
        (config.run_dir / CLUSTER_FILE).unlink(missing_ok=True)


class ClusterRunner:
    """Runs every instance of every service in this process."""

    def __init__(
        self, config: ClusterConfig, registry: Registry, servers: Any = None, *, console: Console = print
    ) -> None:
        self.config, self.registry, self.servers = config, registry, servers
        self.console = console
        self.instances: list[HostedInstance] = []
        self.local: dict[str, Any] = {}  # service name -> list of in-process instances (ServiceContext.local)
        self._stop = asyncio.Event()
        self._process_log: logging.Handler | None = None
        self._lease: LeaseDiscovery | None = None  # database discovery, closed at stop

    async def start(self) -> list[HostedInstance]:
        """Start everything; on any failure stop what started and raise ClusterStartError."""
        planned = plan_services(self.config, self.console)
        await check_instances_free(self.config)
        local = claim_data_dir(self.config, "one-process")
        self._process_log = attach_process_log(self.config.log_dir / PROCESS_LOG)
        try:
            discovery, self._lease = await open_discovery(self.config, local)
            for item in planned:
                ctxs = [
                    make_context(
                        self.config,
                        item.config,
                        i,
                        registry=self.registry,
                        servers=self.servers,
                        discovery=discovery,
                        local=self.local,
                    )
                    for i in item.config.numbers
                ]
                metrics_port = int(item.config.options.get("metrics_port", 0))
                results = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            start_instance(
                                item.cls,
                                ctx,
                                self.config.log_dir,
                                metrics_port + ctx.instance if metrics_port else 0,
                                shard_of(self.config, ctx.name, ctx.instance),
                            )
                            for ctx in ctxs
                        ),
                        return_exceptions=True,
                    ),
                    self.config.start_timeout,
                )
                started = [r for r in results if isinstance(r, HostedInstance)]
                self.instances.extend(started)
                self.local[item.config.name] = [h.service for h in started]
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    exc = failures[0]
                    raise ClusterStartError(
                        f"service '{item.config.name}' failed to start: {type(exc).__name__}: {exc}"
                    ) from exc
        except TimeoutError:
            await self.stop()
            raise ClusterStartError(f"services did not start within {self.config.start_timeout}s") from None
        except BaseException:
            await self.stop()
            raise
        update_cluster_state(self.config, state="running")
        return self.instances

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint of every running instance (metrics included), in start order."""
        return [e for h in self.instances for e in h.endpoints()]

    def request_stop(self) -> None:
        """Ask `run_until_stopped` to return (safe from a signal handler)."""
        self._stop.set()

    async def run_until_stopped(self, *, install_signals: bool = True) -> None:
        """Wait for SIGINT/SIGTERM (or `request_stop`), then drain and stop everything."""
        loop = asyncio.get_running_loop()
        installed = []
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            await self._stop.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.stop()

    async def stop(self) -> None:
        """Drain and stop every instance, in reverse start order (instances of one service together)."""
        if self.instances:
            update_cluster_state(self.config, state="stopping")
        by_service: dict[str, list[HostedInstance]] = {}
        for hosted in self.instances:
            by_service.setdefault(hosted.service.ctx.name, []).append(hosted)
        for name in reversed(list(by_service)):
            group = by_service[name]
            await asyncio.gather(*(h.stop(self.config.drain_timeout) for h in group))
        self.instances.clear()
        self.local.clear()
        if self._lease is not None:
            await self._lease.close()
            self._lease = None
        release_data_dir(self.config)
        if self._process_log is not None:
            logging.getLogger().removeHandler(self._process_log)
            self._process_log.close()
            self._process_log = None
