"""Runtime services layer: the contract every cluster service implements and the context it is started with.

A service is an asyncio object that binds its listeners in `start()`, reports where it listens through
`endpoints()`, exposes counters through `metrics`, and drains in `stop()`. The cluster supervisor
(`runtime.cluster`) creates services from the cluster config, in one process or one process per instance, with
the same code. Services find their peers through `ServiceContext.discovery`, never through hard-coded ports.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runtime.registry import Registry


@dataclass(frozen=True)
class Endpoint:
    """Where a service instance listens: `kind` is e.g. "client", "internal", "http"."""

    service: str  # cluster service name, e.g. "msg"
    instance: int
    kind: str
    host: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


class Discovery(Protocol):
    """Finds the endpoints of other services (run-dir files on one host, static config across hosts)."""

    def endpoints(self, service: str, kind: str) -> list[Endpoint]:
        """Every known live endpoint of `service` of that kind, oldest registration first."""
        ...

    def publish(self, endpoint: Endpoint) -> None:
        """Announce an endpoint of this process after it is bound."""
        ...

    def withdraw(self, endpoint: Endpoint) -> None:
        """Remove an endpoint at shutdown."""
        ...


@dataclass
class ServiceContext:
    """What a service gets from the supervisor."""

    name: str  # cluster service name
    instance: int
    registry: Registry  # the protocol's commands (from the generated stack)
    config: Mapping[str, Any]  # this service's config section (ports, limits, ...)
    cluster_config: Mapping[str, Any]  # the whole cluster config (storage, data_dir, ...)
    data_dir: Path
    discovery: Discovery
    host: str = "127.0.0.1"
    servers: Any = None  # the generated `servers` module of the stack (server base classes by service)
    local: dict[str, Any] = field(default_factory=dict)  # in-process peers by service name (one-process mode)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ttgen"))


class Service(abc.ABC):
    """Base of every cluster service."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.log = ctx.log.getChild(f"{ctx.name}.{ctx.instance}")

    @property
    def name(self) -> str:
        return self.ctx.name

    @abc.abstractmethod
    async def start(self) -> None:
        """Bind listeners (port 0 allowed), connect to peers, publish endpoints."""

    @abc.abstractmethod
    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop accepting, drain in-flight work (bounded by drain_timeout), close, withdraw endpoints."""

    @abc.abstractmethod
    def endpoints(self) -> list[Endpoint]:
        """Where this instance listens (after start)."""

    def health(self) -> dict[str, Any]:
        """A small health document: {"status": "ok"|"degraded", ...}."""
        return {"status": "ok"}
