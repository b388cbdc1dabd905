"""Runtime cluster layer: `probe`, a tiny line-echo service for testing supervisors without the IM services.

Configure it with `services: {probe: {instances: 2, class: "runtime.cluster.probe:ProbeService"}}`. It
listens on one `client` TCP endpoint, echoes each line back, counts connections and lines in its metrics, and
drains open connections on stop. Option `fail_start: true` makes start raise (to test start-failure handling).
"""

from __future__ import annotations

import asyncio
import contextlib

from runtime.monitor.metrics import Metrics
from runtime.services.base import (
    Endpoint,
    Service,
    ServiceContext,
    config_port,
    listener_port,
    publish_endpoints,
    withdraw_endpoints,
)


class ProbeStartFailed(RuntimeError):
    """Raised by a probe configured with `fail_start: true`."""


class ProbeService(Service):
    """Echoes lines over TCP; the smallest real service a supervisor can run."""

    def __init__(self, ctx: ServiceContext) -> None:
        super().__init__(ctx)
        self.metrics = Metrics(labels={"service": ctx.name, "instance": str(ctx.instance)})
        self._connections = self.metrics.gauge("connections", "open client connections")
        self._lines = self.metrics.counter("msgs_in_total", "lines received")
        self._latency = self.metrics.histogram("echo_latency_seconds", "time to echo a line")
        self._server: asyncio.Server | None = None
        self._endpoints: list[Endpoint] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.ctx.config.get("fail_start"):
            raise ProbeStartFailed(f"{self.ctx.name}-{self.ctx.instance} configured to fail")
        self._server = await asyncio.start_server(
            self._serve, self.ctx.host, config_port(self.ctx.config, "client_port")
        )
        self._endpoints = publish_endpoints(self.ctx, {"client": listener_port(self._server)})

    async def stop(self, drain_timeout: float = 5.0) -> None:
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
        if self._server is not None:
            await self._server.wait_closed()
        withdraw_endpoints(self.ctx, self._endpoints)
        self._endpoints = []
        self._server = None

    def endpoints(self) -> list[Endpoint]:
        return list(self._endpoints)

    def health(self) -> dict[str, object]:
        return {"status": "ok", "connections": int(self._connections.value)}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections.inc()
        loop = asyncio.get_running_loop()
        try:
            while line := await reader.readline():
                began = loop.time()
                self._lines.inc()
                writer.write(line)
                await writer.drain()
                self._latency.observe(loop.time() - began)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.dec()
            self._tasks.discard(task)
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()
