"""Runtime cluster layer: hosting one service instance (its context, monitor endpoint, log file, lifecycle).

Both supervisors use this: the one-process runner hosts every instance in one event loop, the worker process
hosts exactly one. Starting is: attach the log file, start the service, start its `/metrics` + `/health`
server, publish every endpoint. Stopping is the reverse, with the service draining first.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from runtime.auth.secret_files import cluster_secret
from runtime.cluster.config import ClusterConfig, ServiceConfig
from runtime.cluster.logs import attach_instance_log, detach
from runtime.inprocess import SHARD
from runtime.monitor.http import MonitorServer
from runtime.monitor.metrics import Metrics
from runtime.registry import Registry
from runtime.services.base import Discovery, Endpoint, Service, ServiceContext
from runtime.services.links import LinkAuth
from runtime.storage.errors import ClusterMismatch, KeyMismatch

# Start failures whose message says all an operator needs (a wrong or missing key, a database of another
# cluster): logged as one line, without a traceback.
OPERATOR_ERRORS = (KeyMismatch, ClusterMismatch)


def empty_registry() -> Registry:
    """The registry used when no generated stack is configured (`spec: ""`), e.g. for infrastructure tests."""
    return Registry("none", "0", [])


def instance_metrics(service: Service) -> Metrics:
    """The service's `metrics` attribute if it is a Metrics, else a new empty set (rendering nothing)."""
    metrics = getattr(service, "metrics", None)
    if isinstance(metrics, Metrics):
        return metrics
    return Metrics(labels={"service": service.ctx.name, "instance": str(service.ctx.instance)})


class HostedInstance:
    """One running service instance and its monitor server."""

    def __init__(self, service: Service, log_handler: logging.Handler, metrics_port: int = 0) -> None:
        self.service = service
        self.metrics = instance_metrics(service)
        self.monitor = MonitorServer(
            self.metrics.render, self.health, host=service.ctx.host, port=metrics_port
        )
        self.started = time.time()
        self._log_handler = log_handler
        self.published: list[Endpoint] = []

    @property
    def name(self) -> str:
        return f"{self.service.ctx.name}-{self.service.ctx.instance}"

    @property
    def metrics_endpoint(self) -> Endpoint:
        ctx = self.service.ctx
        return Endpoint(ctx.name, ctx.instance, "metrics", ctx.advertised(), self.monitor.port)

    def endpoints(self) -> list[Endpoint]:
        """The service's endpoints plus its metrics endpoint."""
        return [*self.service.endpoints(), self.metrics_endpoint]

    def health(self) -> dict[str, Any]:
        """The `/health` document: the service's own health plus identity, uptime, endpoints and counters."""
        ctx = self.service.ctx
        try:
            own = dict(self.service.health())
        except Exception as exc:  # health must answer even when the service is broken
            own = {"status": "degraded", "error": f"{type(exc).__name__}: {exc}"}
        own.setdefault("status", "ok")
        return {
            **own,
            "service": ctx.name,
            "instance": ctx.instance,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "endpoints": [{"kind": e.kind, "host": e.host, "port": e.port} for e in self.endpoints()],
            "metrics": self.metrics.snapshot(),
        }

    async def stop(self, drain_timeout: float) -> None:
        """Drain and stop the service, then its monitor; withdraw what was published."""
        ctx = self.service.ctx
        try:
            await self.service.stop(drain_timeout)
        except Exception:
            self.service.log.exception("stop failed")
        await self.monitor.stop()
        for endpoint in self.published:
            ctx.discovery.withdraw(endpoint)
        self.service.log.info("stopped")
        detach(self._log_handler, ctx.name, ctx.instance)


def make_context(
    config: ClusterConfig,
    svc: ServiceConfig,
    instance: int,
    *,
    registry: Registry,
    servers: Any,
    discovery: Discovery,
    local: dict[str, Any],
) -> ServiceContext:
    """The ServiceContext of one instance."""
    return ServiceContext(
        name=svc.name,
        instance=instance,
        registry=registry,
        config=svc.instance_options(instance),
        cluster_config=config.as_dict(),
        data_dir=config.data_dir,
        discovery=discovery,
        host=config.host,
        internal_host=config.internal_host,
        advertise_host=config.advertise_host,
        internal_advertise_host=config.internal_advertise_host,
        link_auth=LinkAuth(cluster_secret(config.secret_path), config.link_seal),
        servers=servers,
        local=local,
        log=logging.getLogger("ttgen"),
    )


async def start_instance(
    cls: type[Service], ctx: ServiceContext, log_dir: Path, metrics_port: int = 0, shard: str | None = None
) -> HostedInstance:
    """Create and start one instance; on failure what it started is closed again and the error raised.
    `shard` (runtime.cluster.layout): links it opens to roles of the same shard in this process are
    in-process (the tasks it starts inherit the shard)."""
    token = SHARD.set(shard)
    try:
        return await _start_instance(cls, ctx, log_dir, metrics_port)
    finally:
        SHARD.reset(token)


async def _start_instance(
    cls: type[Service], ctx: ServiceContext, log_dir: Path, metrics_port: int
) -> HostedInstance:
    handler = attach_instance_log(log_dir, ctx.name, ctx.instance)
    try:
        service = cls(ctx)
    except BaseException:  # a bad option refused by the constructor: nothing started, the log is let go
        detach(handler, ctx.name, ctx.instance)
        raise
    if ctx.link_auth is not None:
        refused = instance_metrics(service).counter(
            "link_auth_refused_total", "internal peers refused: no proof of the cluster secret"
        )
        ctx.link_auth.on_refused = refused.inc
    service.log.info("starting", extra={"class": f"{cls.__module__}:{cls.__qualname__}"})
    try:
        await service.start()
    except BaseException as exc:
        if isinstance(exc, OPERATOR_ERRORS):  # a one-line reason the operator acts on, not a bug
            service.log.error("start failed: %s: %s", type(exc).__name__, exc)
        else:
            service.log.exception("start failed")
        try:
            await service.stop(0.0)
        except Exception:
            service.log.debug("stop after failed start also failed", exc_info=True)
        detach(handler, ctx.name, ctx.instance)
        raise
    hosted = HostedInstance(service, handler, metrics_port)
    try:
        await hosted.monitor.start()
    except BaseException:
        await hosted.stop(0.0)
        raise
    for endpoint in hosted.endpoints():
        ctx.discovery.publish(endpoint)
        hosted.published.append(endpoint)
    service.log.info(
        "listening", extra={"endpoints": " ".join(f"{e.kind}={e.host}:{e.port}" for e in hosted.endpoints())}
    )
    return hosted
