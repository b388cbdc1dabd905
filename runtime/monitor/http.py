"""Runtime monitor layer: a tiny asyncio HTTP server for `/metrics` (Prometheus text) and `/health` (JSON).

Each service instance serves one and publishes it as its `metrics` endpoint, so `ttgen status` (or Prometheus)
finds every process through discovery. Only GET, only small requests: anything else gets a 4xx and the
connection is closed; a slow or broken client never affects the service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 10.0
log = logging.getLogger("ttgen.monitor")

HealthFn = Callable[[], dict[str, Any]]
MetricsFn = Callable[[], str]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class MonitorServer:
    """Serves `/metrics` and `/health` for one service instance (or a whole process)."""

    def __init__(
        self, metrics: MetricsFn, health: HealthFn, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._metrics, self._health = metrics, health
        self.host, self._wanted_port = host, port
        self._server: asyncio.Server | None = None
        self.requests = 0

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("monitor server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind (port 0: any free port)."""
        self._server = await asyncio.start_server(self._handle, self.host, self._wanted_port)

    async def stop(self) -> None:
        """Stop accepting and close the listener."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await self._respond(reader)
        except Exception:  # a bug in a health/metrics callback must not kill the listener
            log.exception("monitor request failed")
            status, ctype, body = 500, "text/plain", b"internal error\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode("ascii") + body)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        except TimeoutError:
            return 408, "text/plain", b"request timeout\n"
        except asyncio.LimitOverrunError:
            return 431, "text/plain", b"request head too large\n"
        except (asyncio.IncompleteReadError, ConnectionError):
            return 400, "text/plain", b"incomplete request\n"
        if len(head) > MAX_REQUEST_HEAD:
            return 431, "text/plain", b"request head too large\n"
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return 400, "text/plain", b"malformed request line\n"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "text/plain", b"only GET\n"
        self.requests += 1
        if target == b"/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self._metrics().encode("utf-8")
        if target == b"/health":
            return 200, "application/json", json.dumps(self._health(), sort_keys=True).encode("utf-8")
        return 404, "text/plain", b"not found: try /metrics or /health\n"


async def http_get(host: str, port: int, path: str, *, timeout: float = 3.0) -> tuple[int, bytes]:
    """A minimal HTTP/1.1 GET (for `ttgen status` and tests): returns (status code, body)."""

    async def go() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii"))
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split(b" ")
        if len(status_line) < 2 or not status_line[1].isdigit():
            raise ValueError(f"not an HTTP response from {host}:{port}")
        return int(status_line[1]), body

    return await asyncio.wait_for(go(), timeout)


def parse_prometheus(text: str) -> dict[str, float]:
    """Sample name (with labels stripped) -> value, summing samples that differ only by labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out
