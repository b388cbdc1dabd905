"""Runtime monitor layer: the `/metrics` (Prometheus text) and `/health` (JSON) endpoint, on aiohttp.

Each service instance serves one and publishes it as its `metrics` endpoint, so `ttgen status` (or Prometheus)
finds every process through discovery. Only GET, only small requests, one request per connection: anything
else gets a 4xx and the connection is closed (a head line over 8 KiB: 400); a slow or broken client never
affects the service.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from runtime.httpkit import HttpServer, Request, Response, http_get, serve_simple

__all__ = ["MAX_REQUEST_HEAD", "READ_TIMEOUT", "MonitorServer", "http_get", "parse_prometheus"]

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 10.0
log = logging.getLogger("ttgen.monitor")

HealthFn = Callable[[], dict[str, Any]]
MetricsFn = Callable[[], str]


class MonitorServer(HttpServer):
    """Serves `/metrics` and `/health` for one service instance (or a whole process)."""

    def __init__(
        self, metrics: MetricsFn, health: HealthFn, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        app = web.Application()
        # GET only: a declared body is refused before a byte of it is read.
        app.router.add_route("*", "/{tail:.*}", serve_simple(self._answer, max_body=0, name="monitor"))
        super().__init__(
            app, host=host, port=port, max_line=MAX_REQUEST_HEAD, idle_timeout=READ_TIMEOUT, name="monitor"
        )
        self._metrics, self._health = metrics, health

    async def _answer(self, request: Request) -> Response:
        try:
            response = self._route(request)
        except Exception:  # a bug in a health/metrics callback must not kill the listener
            log.exception("monitor request failed")
            response = Response(500, b"internal error\n", "text/plain")
        response.close = True  # one request per connection
        return response

    def _route(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"only GET\n", "text/plain")
        if request.path == "/metrics":
            body = self._metrics().encode("utf-8")
            return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")
        if request.path == "/health":
            doc = json.dumps(self._health(), sort_keys=True).encode("utf-8")
            return Response(200, doc, "application/json")
        return Response(404, b"not found: try /metrics or /health\n", "text/plain")


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
