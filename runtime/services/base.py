"""Runtime services layer: the contract every cluster service implements and the context it is started with.

A service is an asyncio object that binds its listeners in `start()`, reports where it listens through
`endpoints()`, exposes counters through `metrics`, and drains in `stop()`. The cluster supervisor
(`runtime.cluster`) creates services from the cluster config, in one process or one process per instance, with
the same code. Services find their peers through `ServiceContext.discovery`, never through hard-coded ports.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from runtime.registry import Registry

if TYPE_CHECKING:
    from runtime.services.links import LinkAuth


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
    host: str = "127.0.0.1"  # where client-facing listeners bind
    internal_host: str = "127.0.0.1"  # where internal listeners (links between services) bind
    advertise_host: str | None = None  # what client-facing endpoints publish (None: `host`)
    internal_advertise_host: str | None = None  # what internal endpoints publish (None: `internal_host`)
    link_auth: LinkAuth | None = None  # the cluster secret every internal link proves (None: no proof asked)
    servers: Any = None  # the generated `servers` module of the stack (server base classes by service)
    local: dict[str, Any] = field(default_factory=dict)  # in-process peers by service name (one-process mode)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ttgen"))

    def advertised(self, kind: str = "client") -> str:
        """The address peers and clients are told for an endpoint of this kind (bind and advertised
        addresses differ when a listener binds a wildcard or sits behind NAT)."""
        if kind == "internal":
            return self.internal_advertise_host or self.internal_host
        return self.advertise_host or self.host


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


# start-up helpers shared by the services ----------------------------------------------------------------
H = TypeVar("H")


def config_port(config: Mapping[str, Any], key: str) -> int:
    """A configured listening port; 0 (any free port) when absent, empty or an unresolved `preferred:N`."""
    value = config.get(key)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return 0


def listener_port(server: asyncio.Server) -> int:
    """The port an asyncio listener is bound to."""
    return int(server.sockets[0].getsockname()[1])


def publish_endpoints(ctx: ServiceContext, ports: Mapping[str, int]) -> list[Endpoint]:
    """Publish an endpoint per (kind -> bound port) of this instance; returned for `withdraw_endpoints`.
    `internal` endpoints advertise the internal address, the others the client-facing one."""
    endpoints = [
        Endpoint(ctx.name, ctx.instance, kind, ctx.advertised(kind), port)
        for kind, port in ports.items()
    ]
    for endpoint in endpoints:
        ctx.discovery.publish(endpoint)
    return endpoints


def withdraw_endpoints(ctx: ServiceContext, endpoints: Iterable[Endpoint]) -> None:
    """Withdraw published endpoints at stop; a discovery failure must not keep the rest from stopping."""
    for endpoint in endpoints:
        with contextlib.suppress(Exception):
            ctx.discovery.withdraw(endpoint)


async def cancel_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (a ticker) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def generated_handlers(
    ctx: ServiceContext, handlers: type[H], base_name: str, namespace: Mapping[str, Any] | None = None
) -> type[H]:
    """`handlers` bound to the generated server base `base_name` (the ABC then proves every hosted command
    has a handler), or `handlers` itself when the stack has no such base (the caller builds `__mapping__`).
    `namespace` adds methods to the bound class (e.g. for a plugin's commands the handlers leave to it)."""
    base = getattr(ctx.servers, base_name, None) if ctx.servers is not None else None
    if base is None:
        return handlers
    return type(base_name.removesuffix("Base") + "Handlers", (handlers, base), dict(namespace or {}))


_BOUND: dict[tuple[type, type], type] = {}


def bound_to_base(cls: type[H], ctx: ServiceContext, base_name: str) -> type[H]:
    """`cls` with the stack's generated server base `base_name` as a further base (made once per pair), so a
    service class can be its own handler object: the ABC then proves every hosted command has a method, and
    its `__mapping__` routes them. `cls` itself when the stack has no such base."""
    base = getattr(ctx.servers, base_name, None) if ctx.servers is not None else None
    if base is None or issubclass(cls, base):
        return cls
    bound = _BOUND.get((cls, base))
    if bound is None:
        bound = _BOUND[(cls, base)] = type(cls.__name__, (cls, base), {"__module__": cls.__module__})
    return bound


def hosted_mapping(handlers: object, ctx: ServiceContext, service: str) -> dict[int, str]:
    """The `__mapping__` of a handler object without a generated base: every command the registry says
    `service` hosts that the object has a method for (command id -> method name)."""
    mapping: dict[int, str] = getattr(handlers, "__mapping__", None) or {}
    if mapping:
        return mapping
    return {
        info.command_id: "on_" + info.name.lower()
        for info in ctx.registry.hosted_by(service)
        if hasattr(handlers, "on_" + info.name.lower())
    }
